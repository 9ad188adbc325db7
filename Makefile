# The README's two first commands: `make demo` and `make test`.
# Both create .venv and install what they need; everything runs offline.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
SMK := $(BIN)/snakemake --profile profiles/local --cores $(CORES)

.PHONY: setup demo test lint report clean slurm-profile

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.*"
	# slurm: the executor plugin, for profiles/slurm and its tests (pure Python, small).
	$(BIN)/pip install -q -e ".[test,slurm]"
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

# `snakemake --profile slurm` (a bare name) looks in ~/.config/snakemake/, not in
# profiles/: link this checkout's Slurm profile there once (edit its partition and
# account first; see profiles/slurm/config.yaml).
SMK_PROFILES := $${XDG_CONFIG_HOME:-$$HOME/.config}/snakemake
slurm-profile:
	mkdir -p "$(SMK_PROFILES)"
	ln -sfn "$(CURDIR)/profiles/slurm" "$(SMK_PROFILES)/slurm"
	@echo "snakemake --profile slurm now uses $(CURDIR)/profiles/slurm"

clean:
	rm -rf resources results/*.parquet results/tables results/figures results/models \
		results/predictions logs benchmarks .snakemake
