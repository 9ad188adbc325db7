"""Snakemake `script:` entry: every table of the analysis from the scores table, the
GPU hours from the benchmark files, and the prediction-method ablation if configured."""

import json
import sys
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.tables import write_tables

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
ablation = [pd.read_parquet(p) for p in snakemake.input.ablation]  # noqa: F821
paths = write_tables(
    pd.read_parquet(snakemake.input.scores),  # noqa: F821
    pd.read_parquet(snakemake.input.examples),  # noqa: F821
    json.loads(snakemake.params.analysis),  # noqa: F821
    Path(snakemake.output.summary).parent,  # noqa: F821
    benchmarks=snakemake.params.benchmarks,  # noqa: F821
    ablation=pd.concat(ablation, ignore_index=True) if ablation else None,
)
print("\n".join(map(str, paths)))
