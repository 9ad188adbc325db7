"""Snakemake `script:` entry: the adaptive sweep's recommendation (the best fine-tuned
checkpoint among those it ran, with its interval, the last checkpoint's regret) and the
GPU-hours it spent against the full grid's (`ckptsweep.analysis.adaptive`)."""

import json
import sys
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.adaptive import recommend, spent_hours, summary
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.scores import build_tables
from ckptsweep.analysis.tables import write_table
from ckptsweep.checkpoints.manifest import tokens_by_step
from ckptsweep.files import atomic_write
from ckptsweep.operate.sweep import full_grid_cost
from ckptsweep.study.config import Study

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
smk = snakemake  # noqa: F821
selection = json.loads(Path(smk.input.selection).read_text())
adaptive = json.loads(smk.params.adaptive)
settings = AdvisorSettings.from_block(json.loads(smk.params.spec))
study = Study.from_config(smk.config, validated=True)

# The predictions of the checkpoints that ran, with their tokens.
spec = json.loads(smk.params.runs)
chosen = {(m, str(s)) for m, v in selection["models"].items() for s in v["steps"]}
tokens = tokens_by_step(smk.input.manifests)
runs = [{**r, "tokens": tokens[(r["model"], r["step"])]} for r in spec["runs"]
        if (r["model"], r["step"]) in chosen]
scores, examples = build_tables(runs, spec["eval_sets"], seed=smk.params.seed)

full_dir = adaptive["full_grid"]
full_scores = None
if full_dir:
    path = Path(full_dir) / "results" / "scores.parquet"
    full_scores = pd.read_parquet(path) if path.exists() else None
    print(f"full grid: {path} {'read' if full_scores is not None else 'not found'}")
table = recommend(scores, examples, selection, settings, smk.params.benchmarks, full_scores)
spent = spent_hours(smk.params.benchmarks, list(selection["models"]),
                    settings.gpus_per_job or study.analysis.gpus_per_job)
full = full_grid_cost(study, ".", full_dir)
result = summary(table, selection, spent, full)
out = Path(smk.output.json).parent
write_table(out, "recommendation", table)
text = json.dumps(result, indent=1, default=str)
atomic_write(smk.output.json, lambda p: p.write_text(text))
cost = result["cost"]
print(f"spent {cost['spent_total']:.4f} GPU-hours ({cost['spent_gpu_hours']}) against the "
      f"full grid's {cost['full_grid_total']:.4f} ({cost['full_grid_basis']}): "
      f"{cost['fraction_of_full_grid']:.3f}; notes: {cost['notes']}")
print(table.to_string())
