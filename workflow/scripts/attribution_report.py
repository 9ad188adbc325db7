"""Snakemake `script:` entry: the fact-tracing table and figure, from every attribute job."""

import sys
from pathlib import Path

from ckptsweep.attribution.report import figure, table, write_table

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
df = table([Path(d) for d in snakemake.input.runs], seed=snakemake.params.seed,  # noqa: F821
           n_boot=snakemake.params.n_boot)  # noqa: F821
write_table(df, Path(snakemake.output.csv), Path(snakemake.output.html))  # noqa: F821
figure(df, Path(snakemake.output.png), Path(snakemake.output.svg))  # noqa: F821
print(df.to_string())
