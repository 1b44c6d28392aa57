# The two set-up commands: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo up test test-slow lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pricing demo

# Optional: Airflow (UI, scheduler, ...) and the MLflow UI on localhost over the demo's data.
up: $(STAMP)
	$(VENV)/bin/pricing up

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -m "not slow" -n auto --maxprocesses 4 --dist loadfile

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow

bench: $(STAMP)
	$(PY) bench/sim_throughput.py
	$(PY) bench/policy_quality.py
	$(PY) bench/dag_parse.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
