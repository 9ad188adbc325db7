"""The evaluation's settings: `EvalSet` (one eval set to score), `EvalConfig` (how prompts
are built and models are run) and the names their fields take (`METHODS`, `SHARING`).

Plain data, so that the parse-time study layer can import it: this module imports no
torch, transformers, pandas or pyarrow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

METHODS = ("loglik", "tokenprob", "constrained", "free")
"""Prediction methods of classification sets (``EvalConfig.method``)."""


SHARING = ("auto", "cache", "sequence", "none")
"""How `logprobs.token_logprobs` shares the prompt's computation between candidates
(``EvalConfig.prefix_sharing``); all give the same log-probabilities up to float rounding.

- ``cache``: each prompt runs once (batched, longest first) and keeps its KV cache; the
  first token of every candidate is scored from the prompt's last position, and the rest
  of each multi-token candidate runs on top of the cached prompt (the cache rows expanded
  per candidate, batched). A batch whose candidates are all single tokens builds no cache.
- ``sequence``: one forward of prompt + candidate (minus its last token) per candidate;
  candidates whose sequences coincide share it, which is the single-token fast path (the
  prompt alone scores every one-token label). Multi-token candidates re-run the prompt.
- ``none``: one sequence per candidate, nothing shared (the direct computation; tests).
- ``auto`` (default): per prompt, ``cache`` where it pays (`logprobs.cache_pays`: the prompt
  tokens it saves are at least the candidate tokens it runs), else ``sequence``."""


@dataclass
class EvalSet:
    """One evaluation set: a canonical test file scored as one task type."""

    name: str
    """Eval-set id, unique across roles (e.g. ``nli_ood``, ``sciq_qg``, ``sciq_mc``)."""
    task: str
    """Task type name from ``tasks.TASK_TYPES`` (e.g. ``nli``, ``summarization``)."""
    test_path: str | Path
    """Canonical jsonl of the records to score."""
    pool_path: str | Path | None
    """Canonical jsonl of the same dataset's training split: the few-shot demonstration
    pool. Records whose id also occurs in ``test_path`` are never used. Needed only when
    some shot count is above zero."""
    formats: tuple[str, ...] = ("default",)
    """Prompt formats to score (names from ``tasks.FORMATS`` that the task type has)."""
    limit: int | None = None
    """Score only the first ``limit`` records of ``test_path`` (data preparation has
    already sub-sampled, so no shuffle here); None scores them all."""
    answer_words: dict[str, list[str]] | None = None
    """Classification by log-likelihood or token probability only: label -> the words it
    is scored as, their probabilities summed, for a model fine-tuned on another label set
    (an MNLI model on two-way RTE: not_entailment = neutral + contradiction). Predictions
    and ``label_logprobs`` stay in this set's labels. None: each label's own word."""


@dataclass
class EvalConfig:
    """How prompts are built and models are run; shared by every eval set of a job."""

    shots: tuple[int, ...] = (0,)
    """Shot counts to score, e.g. ``(0, 2)``; each is a separate block of rows."""
    seed: int = 1234
    """Seed of the per-example demonstration sampling (``prompts.sample_demos``)."""
    separator: str = "\n\n"
    """Text between demonstrations and before the scored prompt (the demo uses the EOS
    text). It is also a stop string for generation: what follows it is a new example."""
    max_new_tokens: int = 60
    """Greedy generation length limit."""
    batch_size: int | str = "auto"
    """Sequences per forward pass (generation: prompts per ``generate`` call), or ``auto``:
    as many as a token budget per forward that suits the device allows, measured on it
    (`batching`). Either way a batch that runs out of memory is split and retried. A speed
    switch only: not part of the prediction cache's key."""
    max_length: int | None = None
    """Context budget in tokens, prompt plus answer; None: the model's
    ``max_position_embeddings``."""
    stop: tuple[str, ...] = ("###",)
    """Extra stop strings for generation (besides EOS and the separator); the text is
    cut at the first one."""
    dtype: str = "float32"
    """``float32`` or ``bfloat16``: the model is cast to it before scoring."""
    device: str = "auto"
    """Torch device the model is moved to (``auto``: ``cuda`` if there is one, else
    ``cpu``; or ``cpu``, ``cuda``, ``cuda:1``...)."""
    method: str = "loglik"
    """Prediction method of classification sets, one of `METHODS` (`methods`' docstring)."""
    lenient_labels: bool = False
    """``tokenprob`` only: besides each label's first sub-tokens, accept every vocabulary
    token that spells the label or a prefix of it, up to case and surrounding whitespace
    and punctuation (``"Yes"``, ``" yes,"``, ``"ent"``: the paper's Appendix B.1); a token
    that fits two labels counts for neither."""
    label_max_new_tokens: int = 5
    """``free`` only: tokens generated for a label (the paper uses 5)."""
    space_variants: bool = True
    """Also score each label and choice without its leading space and combine the two
    spellings (logsumexp). Off, only ``prompts.target``'s spelling (the one fine-tuning
    trains) is scored, which halves the scoring work where the two tokenise differently."""
    cache_dir: str | None = None
    """Prediction cache folder (`cache.PredictionCache`); None: no cache."""
    compile: bool = False
    """``torch.compile`` the scoring forwards (classification, multiple choice). On a GPU it
    pays from a few thousand examples on (about a minute of compiling for a 1B model);
    batch shapes vary, so it compiles with dynamic shapes after the first one."""
    generation_cache: str | None = None
    """``generate``'s ``cache_implementation`` (None: its default dynamic cache; ``static``
    preallocates the KV cache and, on a GPU, compiles the decoding step)."""
    prefix_sharing: str = "auto"
    """How the scoring of classification labels and multiple-choice answers shares each
    prompt's computation between its candidates, one of `SHARING`: ``auto`` runs each
    prompt once and multi-token candidates on top of its KV cache. A speed switch only:
    every mode gives the same log-probabilities up to float rounding, so it is not part
    of the prediction cache's key (like ``batch_size``)."""


def _stops(cfg: EvalConfig) -> list[str]:
    """Generation's stop strings: ``cfg.stop``, then the separator, each once."""
    return list(dict.fromkeys([*cfg.stop, cfg.separator]))


@dataclass(frozen=True)
class ProxyConfig:
    """``advisor.proxy``: the proxy fine-tune, a cheap predictor of which checkpoint
    fine-tunes best (`ckptsweep.evaluate.proxy`). Each fine-tuning task's proxy is the
    task's own fine-tune (its first learning rate and seed) on a seeded fraction of its
    training split for a fraction of the full fine-tune's optimizer steps, scored on a
    small dev slice held out of that training split (never the test set, whose scores
    are the truth the proxy is judged against)."""

    data_fraction: float = 0.1
    """Fraction of the training split (less the dev slice) the proxy trains on."""
    steps_fraction: float = 0.1
    """The proxy's optimizer steps as a fraction of the full fine-tune's (at least one)."""
    dev_size: int = 50
    """Examples of the dev slice, held out of the training split (the same ones at every
    checkpoint); demonstrations for few-shot scoring come from the rest."""
    tasks: tuple[str, ...] | None = None
    """``finetune.tasks`` entries given a proxy (None: every classification and generation
    task a model is fine-tuned on)."""
    formats: tuple[str, ...] = ("default",)
    """Prompt formats the dev slice is scored in (at every ``evaluation.shots``)."""
    seed: int = 0
    """Seed of the dev slice and of the training fraction."""
