# Two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: quickstart test lint bench venv venv-test clean

# A stamp per install flavour, refreshed whenever pyproject.toml changes.
$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[test]'
	touch $@ $(VENV)/.base

venv: $(VENV)/.base
venv-test: $(VENV)/.test

quickstart: venv
	rm -rf out/quickstart .fluxion/checkpoints/quickstart.*
	$(VENV)/bin/fluxion run deployments/manifests/quickstart.yaml --mode drain
	@echo "output: out/quickstart/paid-orders.jsonl ($$(wc -l < out/quickstart/paid-orders.jsonl) documents)"

# The 10-minute soak mostly waits, so it runs beside the suite in a second pytest session
# (own Prefect API, own PREFECT_HOME); both must pass, and the soak's report is printed last.
test: venv-test
	$(PY) -m pytest -m soak -q -rP -p no:cacheprovider > .soak.log 2>&1 & soak=$$!; \
	$(PY) -m pytest -m "not soak"; suite=$$?; \
	wait $$soak; soaked=$$?; cat .soak.log; rm -f .soak.log; \
	test $$suite -eq 0 && test $$soaked -eq 0

LINT_PATHS := $(wildcard fluxion_flows connectors tests bench examples)
TYPED_PATHS := fluxion_flows $(wildcard connectors/fluxion_connect_*)

lint: venv-test
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(TYPED_PATHS)

# Every bench/ script (each starts its own broker/servers) into bench/REPORT.md; exit 1 if one failed.
# Smoke run with reduced sizes: make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: venv-test
	$(PY) bench/report.py $(BENCH_ARGS)

clean:
	rm -rf out .fluxion
