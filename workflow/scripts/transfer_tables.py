"""Snakemake `script:` entry: the transfer population's predictions -> the transfer tables."""

import json
import sys
from pathlib import Path

from ckptsweep.analysis import transfer_population, transfer_tables

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
spec = json.loads(snakemake.params.spec)  # noqa: F821
settings = spec["settings"]
examples = transfer_population.load_examples(
    spec["runs"],
    spec["categories"],
    transfer_population.gold_indices(snakemake.params.gold),  # noqa: F821
    shots=settings["shots"],
    fmt=settings["format"],
)
tables = transfer_tables.analyse(examples, settings)
paths = transfer_tables.write_tables(tables, settings, Path(snakemake.output.summary).parent)  # noqa: F821
print("\n".join(map(str, paths)))
