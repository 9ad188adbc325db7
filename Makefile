# The README's two first commands: `make demo` and `make test`.
# Both create .venv and install what they need; everything runs offline.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
SMK := $(BIN)/snakemake --profile profiles/local --cores $(CORES)

.PHONY: setup demo test test-latest lock lint report clean slurm-profile

# The CPU environment is installed from requirements.lock, every package pinned (pip,
# setuptools and torch included), so a fresh machine gets the versions CI tested, not
# whatever is newest that day; pyproject.toml keeps ranges for library users. The stamp
# depends on the lock, so a changed lock reinstalls; `make lock` rewrites it.
LOCK := requirements.lock
PIP := $(BIN)/pip install -q -c $(LOCK)
$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PIP) pip setuptools
	# torch first and by itself: the lock's torch==2.13.0 is the CPU build on local disk.
	$(PIP) torch
	# slurm: the executor plugin, for profiles/slurm and its tests (pure Python, small).
	# No build isolation: the editable install is built with the lock's setuptools.
	$(PIP) --no-build-isolation -e ".[test,slurm]"
	$(BIN)/python tools/lock.py check-installed $(LOCK)
	touch $(STAMP)

setup: $(STAMP)

# The checkpoint advisor's adaptive sweep runs in its own folder (adaptive/), started
# from the full demo's world, data and pre-trained checkpoints (`ckptsweep share`: hard
# links with their Snakemake records); its proxies, fine-tunes and evaluations are its own.
SHARED := resources/world resources/tokenizers resources/data resources/pretrained/tiny \
	resources/checkpoints/tiny
# `ckptsweep warm --`: the jobs that import torch and transformers (4-6 s each on a CPU,
# some 40 % of the demo's job time) fork from one process that imported them once; same
# outputs byte for byte (tests/test_warm.py, tests/test_workflow.py).
WARM := $(BIN)/ckptsweep warm --
demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(WARM) $(SMK) --configfile config/demo.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(SMK) --configfile config/demo.yaml \
		--report results/report.html
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ckptsweep share --to adaptive $(SHARED)
	PATH=$(CURDIR)/$(BIN):$$PATH $(WARM) $(SMK) --directory adaptive \
		--configfile config/demo_adaptive.yaml
	@echo
	@echo "Scores:  results/scores.parquet"
	@echo "Tables:  results/tables/ (summary.json has the headline numbers)"
	@echo "Figures: results/figures/"
	@echo "Report:  results/report.html"
	@echo "Advisor: results/tables/advisor.csv, predictors.csv; adaptive sweep:"
	@echo "         adaptive/results/advisor/adaptive/recommendation.json"

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint --configfile config/demo.yaml

# The canary: the newest versions pyproject.toml allows, in a separate environment, but
# torch kept at the CPU build on local disk (an unpinned torch downloads gigabytes).
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST) && $(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q "torch==2.13.*"
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager \
		-c <($(LATEST)/bin/pip freeze | grep '^torch==') -e ".[test,slurm]"
	$(LATEST)/bin/pip freeze --all --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/python tools/lock.py diff $(LOCK) $(LATEST)/versions.txt
	PATH=$(CURDIR)/$(LATEST)/bin:$$PATH $(LATEST)/bin/pytest -q

# Rewrites requirements.lock from a fresh environment of the newest allowed versions
# (torch: the CPU build on local disk). Commit the result with the code it was tested on.
LOCKENV := .venv-lock
lock:
	rm -rf $(LOCKENV) && $(PY) -m venv $(LOCKENV)
	$(LOCKENV)/bin/pip install -q --upgrade pip setuptools
	$(LOCKENV)/bin/pip install -q "torch==2.13.*"
	$(LOCKENV)/bin/pip install -q -e ".[test,slurm]"
	$(LOCKENV)/bin/python tools/lock.py freeze $(LOCK)
	rm -rf $(LOCKENV)
	@echo "$(LOCK) rewritten; envs/*.yaml must pin the same versions (tests/test_lock.py)"

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
		results/predictions results/advisor logs benchmarks .snakemake adaptive
