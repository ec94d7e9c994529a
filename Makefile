# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo_out
DEMO_ROWS ?= 200000

# Tests run in two processes (pytest-xdist), a whole file per worker at a time so module
# fixtures are built once, files with slow tests first (tests/conftest.py); measured in
# docs/RESULTS.md. `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: demo test test-fast venv clean bench

venv: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tfddn.demo --out_dir $(DEMO) --rows $(DEMO_ROWS)

test: $(STAMP)
	$(PYTEST)

# Skips the end-to-end runs marked `slow` (demo, simulate, tune, long trainings).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/beam_vs_pandas.py
	$(PY) benchmarks/simulate_day.py --days 3

clean:
	rm -rf $(DEMO) .pytest_cache
