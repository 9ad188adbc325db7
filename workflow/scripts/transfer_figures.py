"""Snakemake `script:` entry: the transfer tables -> heatmap, rank scatter, reliability."""

import sys
from pathlib import Path

from ckptsweep.analysis.transfer_figures import write_figures

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
paths = write_figures(
    Path(snakemake.input.summary).parent,  # noqa: F821
    Path(snakemake.output.figures[0]).parent,  # noqa: F821
)
print("\n".join(map(str, paths)))
