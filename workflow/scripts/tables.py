"""Snakemake `script:` entry: every table of the analysis from the scores table, the
GPU hours from the benchmark files beside the plan made from the config, and the
prediction-method ablation if configured."""

import json
import sys
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.tables import write_tables

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
ablation = [pd.read_parquet(p) for p in snakemake.input.ablation]  # noqa: F821
try:  # the plan beside the measured GPU-hours (`ckptsweep plan`, from the config alone)
    from ckptsweep.operate.plan import planned_by_rule

    planned = planned_by_rule(snakemake.config)  # noqa: F821
except Exception as e:  # a plan that cannot be made leaves the measured table as it was
    print(f"warning: no planned GPU-hours ({type(e).__name__}: {e})")
    planned = None
paths = write_tables(
    pd.read_parquet(snakemake.input.scores),  # noqa: F821
    pd.read_parquet(snakemake.input.examples),  # noqa: F821
    json.loads(snakemake.params.analysis),  # noqa: F821
    Path(snakemake.output.summary).parent,  # noqa: F821
    benchmarks=snakemake.params.benchmarks,  # noqa: F821
    ablation=pd.concat(ablation, ignore_index=True) if ablation else None,
    planned=planned,
)
print("\n".join(map(str, paths)))
