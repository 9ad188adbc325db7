"""The analysis settings every AMURO & CHAR table reads: ``analysis_cfg`` (the config's
``analysis`` block, or ``ckptsweep tables --analysis``) with the defaults of the paper's
protocol filled in."""

from __future__ import annotations

from collections.abc import Mapping

from ckptsweep.analysis import stats
from ckptsweep.analysis.cost import GPUS_PER_JOB


def read_settings(cfg: Mapping) -> dict:
    """The analysis_cfg keys the tables read, with the defaults of the paper's protocol."""
    return {"shots": int(cfg["shots"]), "format": cfg.get("format", "default"),
            "seed": int(cfg.get("seed", 0)), "n_boot": int(cfg.get("n_boot", stats.N_BOOT)),
            "alpha": float(cfg.get("alpha", stats.ALPHA)),
            "groups": dict(cfg.get("groups") or {}),
            "rise_threshold": float(cfg.get("rise_threshold", 0.0)),
            "min_base": float(cfg.get("min_base", 0.01)),
            "cross_task": dict(cfg.get("cross_task") or {}),
            "gpus_per_job": dict(cfg.get("gpus_per_job") or GPUS_PER_JOB),
            # Filled by the workflow (study.finetune_gpus), not a config key: the GPUs of
            # each multi-GPU fine-tune, which the rule-wide gpus_per_job would undercount.
            "finetune_gpus": dict(cfg.get("finetune_gpus") or {}),
            "models": list(cfg.get("models") or []),
            "notes": dict(cfg.get("notes") or {})}


def boot_args(cfg: dict) -> dict:
    """The bootstrap keyword arguments (seed, n_boot, alpha) of the settings."""
    return {"seed": cfg["seed"], "n_boot": cfg["n_boot"], "alpha": cfg["alpha"]}

