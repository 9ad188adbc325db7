"""The ``analysis`` config block, typed, with its defaults (the only place they live), and
the statistical defaults every analysis shares.

Light on purpose (no numpy or pandas): the parse-time study layer builds the block from
here. `read_settings` gives the tables the block as a dict with the defaults filled in,
whether it came from the workflow's config or from ``ckptsweep tables --analysis``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ckptsweep.analysis.names import ABLATION_METHODS

N_BOOT = 1000
"""Bootstrap resamples, wherever a block does not say."""
ALPHA = 0.05
"""Intervals are 1 - ALPHA percentile intervals."""
GPUS_PER_JOB = {"pretrain": 1, "finetune": 1, "evaluate": 1, "ablation": 1}
"""GPUs per job of each rule for the GPU-hours table; a rule not listed counts 0."""


@dataclass(frozen=True)
class Ablation:
    """``analysis.ablation``: the prediction-method ablation (the paper's Table 2)."""

    methods: tuple[str, ...] = ABLATION_METHODS
    """Prediction methods compared."""
    eval_sets: tuple[str, ...] | None = None
    """Classification eval sets scored (None: every in-domain classification set)."""


@dataclass(frozen=True)
class AnalysisSettings:
    """``analysis``: the AMURO & CHAR tables and figures."""

    shots: int
    """Shot count at which base and fine-tuned are compared (paper 4)."""
    groups: Mapping[str, list]
    """The paper's Table 5 grouping by design, as (eval set, training dataset) pairs."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Eval set -> a caveat shown beside it in the OOD MRC table."""
    models: tuple[str, ...] | None = None
    """Models whose evaluations form the scores table (None: every model)."""
    format: str = "default"
    """Format of the headline tables."""
    seed: int = 0
    """Bootstrap seed."""
    n_boot: int = N_BOOT
    """Bootstrap resamples."""
    rise_threshold: float = 0.1
    """Base-score rise that puts an eval set in the data-decided pre-training group."""
    min_base: float = 0.01
    """Pairs whose base score is below this are skipped in ratios."""
    gpus_per_job: Mapping[str, float] = field(default_factory=lambda: dict(GPUS_PER_JOB))
    """GPUs per job of each rule, for the GPU-hours table."""
    ablation: Ablation | None = None
    """The prediction-method ablation; None: not run."""

    @classmethod
    def from_block(cls, block: Mapping) -> AnalysisSettings:
        names = {f.name for f in fields(cls)}
        plain = {k: tuple(v) if k == "models" and v is not None else v
                 for k, v in block.items() if k in names and k != "ablation"}
        ab = block.get("ablation")
        if ab is not None:
            plain["ablation"] = Ablation(**{k: tuple(v) for k, v in ab.items()
                                            if k in ("methods", "eval_sets")})
        return cls(**plain)


def read_settings(cfg: Mapping) -> dict:
    """The analysis_cfg keys the tables read, with the defaults filled in."""
    d = AnalysisSettings(shots=int(cfg["shots"]), groups={})
    return {"shots": int(cfg["shots"]), "format": cfg.get("format", d.format),
            "seed": int(cfg.get("seed", d.seed)), "n_boot": int(cfg.get("n_boot", d.n_boot)),
            "alpha": float(cfg.get("alpha", ALPHA)),
            "groups": dict(cfg.get("groups") or {}),
            "rise_threshold": float(cfg.get("rise_threshold", d.rise_threshold)),
            "min_base": float(cfg.get("min_base", d.min_base)),
            "cross_task": dict(cfg.get("cross_task") or {}),
            "gpus_per_job": dict(cfg.get("gpus_per_job") or d.gpus_per_job),
            # Filled by the workflow (study.finetune_gpus), not a config key: the GPUs of
            # each multi-GPU fine-tune, which the rule-wide gpus_per_job would undercount.
            "finetune_gpus": dict(cfg.get("finetune_gpus") or {}),
            "models": list(cfg.get("models") or []),
            "notes": dict(cfg.get("notes") or {})}


def boot_args(cfg: dict) -> dict:
    """The bootstrap keyword arguments (seed, n_boot, alpha) of the settings."""
    return {"seed": cfg["seed"], "n_boot": cfg["n_boot"], "alpha": cfg["alpha"]}
