"""What the full grid of an adaptive sweep's config would have cost (config ``advisor.mode:
adaptive``), for its recommendation's GPU-hours fraction (`ckptsweep.analysis.adaptive`):

- with ``advisor.adaptive.full_grid`` (a finished full study's working directory): what
  its ``benchmarks/`` measured for the same fine-tunes (model, step, fine-tune name); the
  evaluations from this run's own evaluation jobs (each checkpoint's job of this config
  scores the same variants on the same sets: their mean, times every checkpoint), which
  the full study's jobs may not match (they may score more sets and variants); where
  this run has none, the full study's, each shared out evenly over its variants;
- else the cost plan of this config's full grid (`plan.build`: every checkpoint's
  fine-tunes and evaluation), on the device this run used, rescaled by the jobs this run
  finished (``benchmarks/``), so the plan and the measured spending share one clock.
"""

from __future__ import annotations

from pathlib import Path

from ckptsweep.study import grid
from ckptsweep.study.config import Study


def _measured(study: Study, models: list[str], folder: Path, root: Path) -> dict:
    from ckptsweep.analysis.advisor import job_hours

    gpus = dict(study.advisor.gpus_per_job or study.analysis.gpus_per_job)
    ft, ev = job_hours(folder / "benchmarks", "finetune", gpus), job_hours(
        folder / "benchmarks", "evaluate", gpus)
    own = job_hours(root / "benchmarks", "evaluate", gpus)
    done_ft = {(r.model, r.step, r.name): r.gpu_hours for r in ft.itertuples()}
    done_ev = {(r.model, r.step): r.gpu_hours for r in ev.itertuples()}
    hours = {"finetune": 0.0, "evaluate": 0.0}
    missing = []
    for model in models:
        names = [f.name for f in grid.finetunes(study, model)]
        mine = own[own["model"] == model]["gpu_hours"]
        if len(mine):
            hours["evaluate"] += float(mine.mean()) * len(grid.steps(study, model))
        for step in (int(s) for s in grid.steps(study, model)):
            for name in names:
                if (model, step, name) in done_ft:
                    hours["finetune"] += done_ft[(model, step, name)]
                else:
                    missing.append(f"finetune {model}/{step}/{name}")
            if len(mine):
                continue
            there = len(list((folder / "results/predictions" / model / str(step))
                             .glob("*.parquet")))
            if (model, step) in done_ev and there:
                hours["evaluate"] += done_ev[(model, step)] * (len(names) + 1) / there
            else:
                missing.append(f"evaluate {model}/{step}")
    notes = [f"{len(missing)} jobs of the full grid have no benchmark in {folder}: "
             f"{', '.join(missing[:5])}"] if missing else []
    return {**hours, "basis": f"fine-tunes: benchmarks of the finished full grid in "
                              f"{folder}; evaluations: "
                              + ("this run's jobs" if len(own) else "the full grid's"),
            "notes": notes}


def full_grid_cost(study: Study, root: str | Path = ".", full_grid: str | None = None
                   ) -> dict:
    """{"finetune", "evaluate" (GPU hours of the advised models' full grid), "basis",
    "notes"}; see the module's doc."""
    from ckptsweep.operate.plan import build, run_device

    models = grid.analysis_models(study)
    root = Path(root)
    if full_grid:
        folder = Path(full_grid) if Path(full_grid).is_absolute() else root / full_grid
        if (folder / "benchmarks").is_dir():
            return _measured(study, models, folder, root)
        note = f"{folder}/benchmarks not found: the plan instead"
    else:
        note = None
    plan = build(study, root, None, run_device(root), benchmarks=True)
    hours = {"finetune": 0.0, "evaluate": 0.0}
    for job in plan.jobs:
        if job.rule in hours and job.model in models:
            hours[job.rule] += job.gpu_hours
    calibrated = ", ".join(f"{k}: {v}" for k, v in plan.calibrated.items())
    return {**hours, "basis": "ckptsweep plan of the full grid"
            + (f", calibrated on this run's benchmarks ({calibrated})" if calibrated else ""),
            "notes": [note] if note else []}
