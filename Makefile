# speech-dissect: the two commands a user needs are `make reproduce` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed
CORES ?= 2
CONFIG ?= config.yaml
PYTEST_ARGS ?=

.PHONY: install system reproduce test test-fast bench report clean-results lint

install: system $(STAMP)

system:
	@bash scripts/install_system.sh

# Reinstalls only when pyproject.toml changes: a second `make` costs seconds.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

reproduce: install
	@start=$$(date +%s.%N); \
	$(SNAKEMAKE) --profile profiles/default --configfile $(CONFIG) --cores $(CORES) && \
	$(SNAKEMAKE) --profile profiles/default --configfile $(CONFIG) --report results/report.html && \
	end=$$(date +%s.%N) && \
	$(PY) scripts/collect_benchmarks.py results/benchmarks results/bench/reproduce.json --wall $$(python3 -c "print($$end - $$start)")

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not workflow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

lint: install
	$(SNAKEMAKE) --lint --configfile $(CONFIG)

clean-results:
	rm -rf results .snakemake
