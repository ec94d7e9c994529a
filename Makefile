# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo_out
DEMO_ROWS ?= 200000

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tfddn.demo --out_dir $(DEMO) --rows $(DEMO_ROWS)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/beam_vs_pandas.py
	$(PY) benchmarks/simulate_day.py --days 3

clean:
	rm -rf $(DEMO) .pytest_cache
