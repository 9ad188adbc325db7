"""Snakemake `script:` entry: the checkpoint advisor on the finished grid (advice, the
cheap predictors validated against it, figures), in the workflow's GPU-hour accounting."""

import json
import sys
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.advisor_report import compute_advice, write_advice
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.transfer_population import gold_indices

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
inp = snakemake.input  # noqa: F821
settings = AdvisorSettings.from_block(json.loads(snakemake.params.spec))  # noqa: F821
tables, notes = compute_advice(
    pd.read_parquet(inp.scores), settings, examples=pd.read_parquet(inp.examples),
    predictions_dir="results/predictions", benchmarks=snakemake.params.benchmarks,  # noqa: F821
    proxy=pd.read_parquet(inp.proxy[0]) if inp.proxy else None,
    bpb=pd.concat([pd.read_parquet(p) for p in inp.bpb], ignore_index=True) if inp.bpb
    else None,
    transfer_metrics=pd.read_csv(inp.transfer[0]) if inp.transfer else None,
    gold_indices=gold_indices(snakemake.params.gold) or None)  # noqa: F821
for note in notes:
    print(f"note: {note}")
paths = write_advice(tables, Path(snakemake.output.csv[0]).parent,  # noqa: F821
                     Path(snakemake.output.figures[0]).parent)  # noqa: F821
print(f"advice on {len(tables['advisor'])} groups -> {len(paths)} files")
