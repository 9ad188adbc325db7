"""Snakemake `script:` entry: every figure, from the tables."""

import sys
from pathlib import Path

from ckptsweep.analysis.figures import write_figures

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
paths = write_figures(Path(snakemake.input.summary).parent, Path(snakemake.output.svg[0]).parent)  # noqa: F821
print("\n".join(map(str, paths)))
