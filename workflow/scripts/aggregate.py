"""Snakemake `script:` entry: every predictions file -> the tidy scores and examples tables."""

import json
import sys

from ckptsweep.analysis.scores import build_tables, write_outputs
from ckptsweep.checkpoints.manifest import tokens_by_step

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
spec = json.loads(snakemake.params.runs)  # noqa: F821
tokens = tokens_by_step(snakemake.input.manifests)  # noqa: F821
for run in spec["runs"]:
    run["tokens"] = tokens[(run["model"], run["step"])]
scores, examples = build_tables(spec["runs"], spec["eval_sets"], seed=snakemake.params.seed)  # noqa: F821
write_outputs(scores, examples, snakemake.output.scores, snakemake.output.examples)  # noqa: F821
print(f"{len(scores)} score rows, {len(examples)} example rows")
