"""The ``attribution`` config block, typed, with its defaults (the only place they live).

Light on purpose (no torch): the parse-time study layer builds it and writes each
traced model and slice's complete job spec from it (``ckptsweep.study.specs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ckptsweep.analysis.settings import N_BOOT
from ckptsweep.attribution.data import FactFinetuneConfig

METHODS = ("bm25", "tracin", "tracin_cos", "embed_dot", "embed_cos", "random")
"""Every attribution method, in the table's order, random (the floor) last."""


@dataclass(frozen=True)
class Candidates:
    """``attribution.candidates``: the parts of a query's candidate set besides its true
    proponents (the reference's re-ranking protocol)."""

    bm25: int = 100
    """BM25's top hits."""
    same_answer: int = 100
    """Training examples with the query's answer."""
    random: int = 100
    """Random training examples."""


@dataclass(frozen=True)
class Tracin:
    """``attribution.tracin``: TracIn settings."""

    projection_dim: int = 0
    """Seeded CountSketch projection of the gradients to this many dimensions; 0 keeps the
    exact gradients."""
    chunk: int = 16
    """Examples per torch.func vmap call."""


@dataclass(frozen=True)
class AttributionSettings:
    """``attribution``: fact tracing, BM25 vs TracIn vs embeddings (FTRACE)."""

    models: tuple[str, ...] | None = None
    """Models to trace (None: the first of ``models``)."""
    slices: tuple[str, ...] = ("finetune",)
    """``finetune`` and/or ``pretrain``: which facts are traced to which training data."""
    seed: int = 0
    """Seed of the query cap, the candidate sets, the random ranking, the projection and
    the bootstrap."""
    max_queries: int = 100
    """At most this many learned facts are traced (a seeded sample)."""
    n_boot: int = N_BOOT
    """Bootstrap resamples over queries."""
    device: str = "auto"
    """Torch device: auto (CUDA when available), cpu, cuda, cuda:1..."""
    methods: tuple[str, ...] = METHODS
    """Attribution methods compared."""
    candidates: Candidates = field(default_factory=Candidates)
    """Size of each part of a query's candidate set."""
    tracin: Tracin = field(default_factory=Tracin)
    """TracIn settings."""
    finetune: FactFinetuneConfig = field(default_factory=FactFinetuneConfig)
    """The closed-book fact fine-tune of the finetune slice."""

    @classmethod
    def from_block(cls, block: Mapping | None) -> AttributionSettings | None:
        """The typed block (None: no ``attribution`` block, nothing traced)."""
        if block is None:
            return None
        plain = {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()
                 if k in _names(cls)}
        plain.update(candidates=_build(Candidates, block.get("candidates")),
                     tracin=_build(Tracin, block.get("tracin")),
                     finetune=_build(FactFinetuneConfig, block.get("finetune")))
        return cls(**plain)


def _names(kind) -> set[str]:
    return {f.name for f in fields(kind)}


def _build(kind, data: Mapping | None):
    """``kind`` from a sub-block as written (its missing keys: their defaults)."""
    return kind(**{k: v for k, v in (data or {}).items() if k in _names(kind)})
