"""Shared fixtures: a small generated marketplace, preprocessed once per session.

Under pytest-xdist (`make test` runs two workers) each worker gets its share of the cores
for TensorFlow's and BLAS's thread pools, so two workers do not run four busy threads on
two cores. The small feature specs the tests share are in specs.py.
"""

import os

import pytest

_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "MKL_NUM_THREADS")


def pytest_configure(config):
    """Before any test module imports TensorFlow or numpy (their pools read these once)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for name in _THREAD_VARIABLES:
            os.environ.setdefault(name, threads)


def pytest_collection_modifyitems(config, items):
    """Files with `slow` tests first (longest first scheduling): with `make test`'s two
    workers (and --no-loadscope-reorder, which keeps this order) the long end-to-end runs
    start early and short files fill in at the end, instead of one worker idling while
    the other finishes the demo."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept


@pytest.fixture(scope="session")
def tiny_marketplace(tmp_path_factory):
    """{"logs": GenerateResult, "data_dir": preprocessed dir} for ~3k aggregated rows."""
    from beam import preprocess
    from tfddn.generate import GenerateConfig, generate

    root = tmp_path_factory.mktemp("tiny_marketplace")
    logs = generate(GenerateConfig(out_dir=str(root / "logs"), rows=3000, targets=300,
                                   advertisers=40, publishers=20, seed=11), progress=False)
    data_dir = str(root / "data")
    preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path, "--out_dir", data_dir])
    return {"logs": logs, "data_dir": data_dir}
