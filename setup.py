"""Shim so Beam's `--setup_file ./setup.py` can ship tfddn to remote workers.

All metadata lives in setup.cfg.
"""
from setuptools import setup

setup()
