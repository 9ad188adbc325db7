# The README's two first commands: `make demo` and `make test`.
# Both create .venv and install what they need; everything runs offline.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
SMK := $(BIN)/snakemake --profile profiles/local --cores $(CORES)

.PHONY: setup demo test lint report clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.*"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(SMK) --configfile config/demo.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(SMK) --configfile config/demo.yaml \
		--report results/report.html
	@echo
	@echo "Scores:  results/scores.parquet"
	@echo "Tables:  results/tables/ (summary.json has the headline numbers)"
	@echo "Figures: results/figures/"
	@echo "Report:  results/report.html"

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint --configfile config/demo.yaml

clean:
	rm -rf resources results/*.parquet results/tables results/figures results/models \
		results/predictions logs benchmarks .snakemake
