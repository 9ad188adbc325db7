"""Snakemake `script:` entry: every predictions file -> the tidy scores and examples tables."""

import json
import sys
from pathlib import Path

from ckptsweep.analysis.scores import build_tables, write_outputs
from ckptsweep.checkpoints.manifest import read_manifest

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
spec = json.loads(snakemake.params.runs)  # noqa: F821
tokens = {}
for path in snakemake.input.manifests:  # noqa: F821
    model = Path(path).parent.name  # resources/checkpoints/{model}/{step}.tsv
    tokens.update({(model, c.step): c.tokens for c in read_manifest(path).values()})
for run in spec["runs"]:
    run["tokens"] = tokens[(run["model"], run["step"])]
scores, examples = build_tables(spec["runs"], spec["eval_sets"], seed=snakemake.params.seed)  # noqa: F821
write_outputs(scores, examples, snakemake.output.scores, snakemake.output.examples)  # noqa: F821
print(f"{len(scores)} score rows, {len(examples)} example rows")
