#!/usr/bin/env bash
# Snakemake runs this once, in the new environment, from the workflow's working directory
# (the repository root): install ckptsweep itself without its dependencies, which the
# environment file pins. (A pip requirements list cannot say --no-deps.)
set -euo pipefail
if [ ! -f pyproject.toml ]; then
    echo "run snakemake from the ckptsweep repository root" >&2
    exit 1
fi
python -m pip install --no-deps -e .
