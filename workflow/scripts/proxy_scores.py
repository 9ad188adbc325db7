"""Snakemake `script:` entry: the proxy fine-tunes' predictions -> a scores-schema table
(the checkpoint advisor's proxy predictor)."""

import json
import sys

from ckptsweep.analysis.scores import build_tables
from ckptsweep.checkpoints.manifest import tokens_by_step
from ckptsweep.files import atomic_write

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
spec = json.loads(snakemake.params.runs)  # noqa: F821
tokens = tokens_by_step(snakemake.input.manifests)  # noqa: F821
for run in spec["runs"]:
    run["tokens"] = tokens[(run["model"], run["step"])]
scores, _ = build_tables(spec["runs"], spec["eval_sets"], seed=snakemake.params.seed)  # noqa: F821
atomic_write(snakemake.output.scores, lambda p: scores.to_parquet(p, index=False))  # noqa: F821
print(f"{len(scores)} proxy score rows")
