"""Compute cost: wall-clock, CPU and GPU hours per rule (stage) from the Snakemake
``benchmark:`` files of a finished run, like the paper's Table 3."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ckptsweep.analysis.settings import GPUS_PER_JOB

"""Default GPUs per job of a rule for ``gpu_hours`` (any other rule: 0)."""
PER_MODEL_RULES = ("pretrain", "checkpoints", "prefetch_model", "finetune", "evaluate",
                   "ablation")
"""Rules whose benchmark files are ``{rule}/{model}...``: filtered by ``analysis.models``."""
PLANNED = ["planned_jobs", "planned_hours", "planned_gpu_hours"]
"""The plan's columns (beside the measured ``jobs``, ``hours`` and ``gpu_hours``)."""


def _read_benchmark(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t")
    if "s" not in df.columns:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column); "
                         f"columns {list(df.columns)}")
    for col in ("s", "max_rss", "cpu_time"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def gpu_hours(benchmark_dir: str | os.PathLike,
              gpus_per_job: Mapping[str, float] | None = None,
              models: Sequence[str] | None = None,
              finetune_gpus: Mapping[str, float] | None = None,
              planned: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Wall-clock and GPU hours per rule (stage) from Snakemake ``benchmark:`` files, like
    the paper's Table 3.

    Files are ``{benchmark_dir}/{rule}/.../*.tsv`` (a file directly in ``benchmark_dir``
    counts under its own stem). Every row counts: a ``repeat()``-ed benchmark ran its job
    that many times. hours = sum of ``s`` / 3600; gpu_hours = hours x the rule's GPUs per
    job (``gpus_per_job``, default ``GPUS_PER_JOB``: 1 for pretrain, finetune, evaluate
    and ablation, 0 for any other rule), except that a fine-tune named in ``finetune_gpus``
    (``{model}/{fine-tune}``: its ``gpus`` setting, `study.finetune_gpus`) counts that many;
    a rule's ``gpus_per_job`` column is then its time-weighted mean. cpu_hours from
    ``cpu_time`` (NaN where absent). A last row ``rule = "total"`` sums the others. With
    ``models`` (``analysis.models``), the per-model rules' files of other models and the
    transfer rules' files are left out, so the table covers the analysed models only,
    whatever else ran beside them. With ``planned`` (rule -> {jobs, hours, gpu_hours}:
    `ckptsweep.operate.plan.planned_by_rule`, the plan made from the study before any job
    ran) the columns ``planned_jobs``, ``planned_hours`` and ``planned_gpu_hours`` stand
    beside the measured ones; a planned rule with no finished job gets a row of zeros."""
    gpus = dict(GPUS_PER_JOB if gpus_per_job is None else gpus_per_job)
    finetune_gpus = dict(finetune_gpus or {})
    root = Path(benchmark_dir)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        if models and (rule.startswith("transfer_") or (
                rule in PER_MODEL_RULES and Path(rel.parts[1]).stem not in models)):
            continue
        df = _read_benchmark(path)
        job_gpus = float(gpus.get(rule, 0))
        if rule == "finetune" and len(rel.parts) > 2:  # finetune/{model}/{step}/{ft}.tsv
            job_gpus = float(finetune_gpus.get(f"{rel.parts[1]}/{path.stem}", job_gpus))
        rows.append({"rule": rule, "jobs": 1, "runs": len(df), "seconds": df["s"].sum(),
                     "gpu_seconds": df["s"].sum() * job_gpus,
                     "cpu_seconds": df["cpu_time"].sum(min_count=1) if "cpu_time" in df
                     else np.nan,
                     "max_rss_mb": df["max_rss"].max() if "max_rss" in df else np.nan})
    cols = ["rule", "jobs", "runs", "hours", "cpu_hours", "max_rss_mb", "gpus_per_job",
            "gpu_hours"]
    if planned is not None:
        cols += PLANNED
        rows += [{"rule": rule, "jobs": 0, "runs": 0, "seconds": 0.0, "gpu_seconds": 0.0,
                  "cpu_seconds": np.nan, "max_rss_mb": np.nan}
                 for rule, p in planned.items()
                 if rule not in {r["rule"] for r in rows} and p.get("gpu_hours", 0) > 0]
    if not rows:
        return pd.DataFrame(columns=cols)
    per = pd.DataFrame(rows).groupby("rule", sort=True).agg(
        jobs=("jobs", "sum"), runs=("runs", "sum"), seconds=("seconds", "sum"),
        gpu_seconds=("gpu_seconds", "sum"),
        cpu_seconds=("cpu_seconds", lambda s: s.sum(min_count=1)),
        max_rss_mb=("max_rss_mb", "max")).reset_index()
    per["hours"] = per["seconds"] / 3600
    per["cpu_hours"] = per["cpu_seconds"] / 3600
    per["gpu_hours"] = per["gpu_seconds"] / 3600
    # Time-weighted mean over the rule's jobs; the rule's own setting where it took no time.
    per["gpus_per_job"] = (per["gpu_seconds"] / per["seconds"]).where(
        per["seconds"] > 0, per["rule"].map(lambda r: float(gpus.get(r, 0))))
    total = {"rule": "total", "jobs": per["jobs"].sum(), "runs": per["runs"].sum(),
             "hours": per["hours"].sum(), "cpu_hours": per["cpu_hours"].sum(min_count=1),
             "max_rss_mb": per["max_rss_mb"].max(), "gpus_per_job": np.nan,
             "gpu_hours": per["gpu_hours"].sum()}
    if planned is not None:
        for col in PLANNED:
            key = col.removeprefix("planned_")
            per[col] = per["rule"].map(lambda r, k=key: (planned.get(r) or {}).get(k, np.nan))
            total[col] = per[col].sum(min_count=1)
    return pd.concat([per[cols], pd.DataFrame([total], columns=cols)], ignore_index=True)
