"""Snakemake `script:` entry: the proxy fine-tunes' predictions -> a scores-schema table
(the checkpoint advisor's proxy predictor)."""

import json
import sys
from pathlib import Path

from ckptsweep.analysis.scores import build_tables
from ckptsweep.checkpoints.manifest import read_manifest
from ckptsweep.files import atomic_write

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
spec = json.loads(snakemake.params.runs)  # noqa: F821
tokens = {}
for path in snakemake.input.manifests:  # noqa: F821
    model = Path(path).parent.name  # resources/checkpoints/{model}/{step}.tsv
    tokens.update({(model, c.step): c.tokens for c in read_manifest(path).values()})
for run in spec["runs"]:
    run["tokens"] = tokens[(run["model"], run["step"])]
scores, _ = build_tables(spec["runs"], spec["eval_sets"], seed=snakemake.params.seed)  # noqa: F821
atomic_write(snakemake.output.scores, lambda p: scores.to_parquet(p, index=False))  # noqa: F821
print(f"{len(scores)} proxy score rows")
