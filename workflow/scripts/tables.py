"""Snakemake `script:` entry: every table of the analysis from the scores table."""

import json
import sys
from pathlib import Path

import pandas as pd

from ckptsweep.tables import write_tables

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
paths = write_tables(
    pd.read_parquet(snakemake.input.scores),  # noqa: F821
    pd.read_parquet(snakemake.input.examples),  # noqa: F821
    json.loads(snakemake.params.analysis),  # noqa: F821
    Path(snakemake.output.summary).parent,  # noqa: F821
)
print("\n".join(map(str, paths)))
