"""The ``advisor`` block, typed, with its defaults (the only place they live), and the names
of the checkpoint advisor's outputs.

Light on purpose (no numpy or pandas), like ``settings``: the parse-time study layer and
the workflow's rules can read the defaults and the output names without the analysis
stack. `AdvisorSettings.from_block` takes the block as the config (or a rule's ``--spec``)
holds it; unknown keys are refused with a `ConfigError` naming the key (``advisor.<key>``),
so a typo never passes silently; the config's schema and ``ckptsweep.study`` refuse the
same values at parse time.

Every assumption of the compute accounting is a field here (tokens per step, parameters,
MFU, peak FLOP/s), so a report states what it assumed and a reader can change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from ckptsweep.analysis.settings import ALPHA, N_BOOT
from ckptsweep.errors import ConfigError

ADVISOR_TABLES = ("advisor", "advisor_steps", "predictors", "predictors_groups")
"""Each written as ``{name}.csv`` and ``{name}.html``."""
ADVISOR_FIGURES = ("advisor", "advisor_frontier")
"""Each written as ``{name}.png`` and ``{name}.svg``."""
ROLES = ("id", "ood", "cross-task", "benchmark")
"""Eval roles the advice covers (the scores table's roles, base excluded)."""


@dataclass(frozen=True)
class AdvisorSettings:
    """``advisor``: which checkpoint to fine-tune, and how well cheap signals predict it."""

    epsilon: float = 0.01
    """Non-inferiority margin, in the metric's units (0.01 = one point of accuracy)."""
    alpha: float = ALPHA
    """Level of the one-sided non-inferiority test; intervals are two-sided 1 - alpha."""
    seed: int = 0
    """Seed of every bootstrap and parametric draw."""
    n_boot: int = N_BOOT
    """Resamples (bootstrap over examples and seeds) or parametric draws (normal path)."""
    ci_level: float = 1 - ALPHA
    """Level of the scores table's ci_low/ci_high, to turn them into standard errors on
    the normal path (the released AMURO & CHAR intervals are 95 %)."""
    roles: tuple[str, ...] = ROLES
    """Eval roles advised on."""
    formats: tuple[str, ...] | None = None
    """Prompt formats advised on (None: every format in the scores)."""
    shots: tuple[int, ...] | None = None
    """Shot counts of the fine-tuned evaluations advised on (None: all)."""
    by_eval_set: bool = False
    """One group per eval set instead of per role (the role's sets averaged)."""
    base_shots: int | None = None
    """Shots of the base model's few-shot predictor (None: the group's own shots)."""
    top_k: int = 2
    """k of the top-k hit rate (is the truly best checkpoint among the predictor's k?)."""
    truth_tol: float = 0.0
    """Two fine-tuned scores closer than this are a tie in the truth (the pair is not
    counted in the decision accuracy)."""
    tokens_per_step: float | None = None
    """Pre-training tokens per optimizer step (None: the scores' ``tokens / step``)."""
    n_params: float | None = None
    """Parameters N of the model for 6N FLOPs per token (None: no pre-training hours)."""
    mfu: float = 0.4
    """Model FLOPs utilisation assumed for pre-training."""
    peak_tflops: float = 312.0
    """Peak dense TFLOP/s of one GPU (312: an A100's bf16)."""
    gpu: str = "A100 bf16"
    """The GPU the peak describes (a label in the table)."""
    finetune_hours: float | None = None
    """GPU hours of one fine-tune, assumed where ``benchmarks/`` has none."""
    eval_hours: float | None = None
    """GPU hours of one variant's evaluation, assumed where ``benchmarks/`` has none."""
    gpus_per_job: Mapping[str, float] | None = None
    """GPUs per job of the finetune and evaluate rules (None: ``settings.GPUS_PER_JOB``)."""
    proxy_cost: float = 0.1
    """Cost of the proxy fine-tunes (and their dev-slice scoring) as a fraction of the full
    grid's (data fraction x steps): an assumption until the proxy's jobs have benchmark
    files of their own."""

    @classmethod
    def from_block(cls, block: Mapping | None, **overrides) -> AdvisorSettings:
        """The settings from a config block (None or {} -> the defaults); ``overrides``
        (None values ignored) win over the block, as command-line flags do."""
        names = {f.name for f in fields(cls)}
        block = dict(block or {})
        unknown = sorted(set(block) - names)
        if unknown:
            raise ConfigError(f"advisor.{unknown[0]}", f"unknown advisor setting(s) "
                                                       f"{unknown}; known: {sorted(names)}")
        block.update({k: v for k, v in overrides.items() if v is not None})
        plain = {k: tuple(v) if k in ("roles", "formats", "shots") and v is not None else v
                 for k, v in block.items()}
        out = replace(cls(), **plain)
        if out.epsilon < 0:
            raise ConfigError("advisor.epsilon", f"must be >= 0, got {out.epsilon}")
        if not 0 < out.alpha < 0.5:
            raise ConfigError("advisor.alpha", f"must lie in (0, 0.5), got {out.alpha}")
        return out
