"""Evaluation: score one loaded model on eval sets x prompt formats x shot counts.

One call of `evaluate_model` covers everything a job evaluates with one model load and
returns one row per scored example (the per-example predictions of the DAG).

- Classification: ``EvalConfig.method`` picks how a label is predicted (the paper's
  Table 2 ablation, its Appendix B); the ``method`` column records it.

  - ``loglik`` (default): each label is scored by the log-likelihood of its whole
    continuation given the prompt; the prediction is the argmax.
  - ``tokenprob``: the paper's TokenProb: the log-probability of the label's first
    sub-token (the best one of its acceptable first tokens; ``lenient_labels`` widens
    them to Appendix B.1's set); the prediction is the argmax.
  - ``constrained``: greedy decoding restricted to the labels' token sequences, so the
    output is always a label. It is computed exactly from the labels' per-token
    log-probabilities: at each branch of the label trie the best next token is taken,
    and decoding ends as soon as a label is complete.
  - ``free``: free greedy decoding (``label_max_new_tokens`` tokens, stop strings as for
    generation), then the first label word found in the output (whole word, any case);
    an output without a label word is scored wrong with an empty prediction.

  Leading-space variants: a label can follow the prompt as ``" yes"`` (the convention of
  ``prompts.target``) or as ``"yes"``. Where the tokenizer gives the two different token
  ids, both continuations are scored and combined with logsumexp: the label's
  probability in either spelling (they are distinct token sequences, so the events are
  disjoint). Where they tokenise alike, the label is scored once. ``label_logprobs``
  keeps every label's final log-probability (``loglik`` and ``constrained``: this
  combined log-likelihood; ``tokenprob``: the first-token log-probability; ``free``:
  empty), so confidence and calibration can be computed downstream.
- Multiple choice: always ``loglik`` (with the same variants), plus
  lm-evaluation-harness's length-normalised ``score_norm``.

  Candidates share their prompt's computation (``EvalConfig.prefix_sharing``, `SHARING`):
  single-token candidates are all scored by one forward of the prompt, and multi-token
  ones by the rest of their tokens run on top of the prompt's KV cache, where that pays.
- Generation: greedy decoding with the KV cache, cut at EOS or the first stop string,
  scored with ROUGE-L F1 (``rouge-score``, imported only when a generation set is scored).

Few-shot demonstrations come from the training pool (``prompts.sample_demos``, seeded per
example), never from the scored file, and prompts that do not fit the context go through
``prompts.build_prompt`` (demonstrations dropped first, then the input cut).

No few-shot prefix is shared between examples, on purpose: each example draws its own
demonstrations, so the prompts of a block have in common only the template's opening
before the first demonstration's first field (``### Input_1:``, ``Consider the following
texts: Text 1:``; nothing for ``io`` and multiple choice), a few tokens of a few hundred,
less than the cost of expanding a cache to every row. One draw for the whole block would
share k demonstrations (about k/(k+1) of a k-shot prompt, so up to ~5x less prompt
compute at 4 shots) but would tie every score of the block to that single draw, whose
effect on few-shot accuracy is large (Zhao et al., 2021), and change the protocol; the
study keeps the per-example draw.

With ``EvalConfig.cache_dir`` set, predictions are cached (see `PredictionCache`): a
re-run computes nothing it has computed before, and any change that can change a
prediction misses the cache.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import GenerationConfig

from ckptsweep.data.prompts import Prompt, build_prompt, prompt_hash, sample_demos, target
from ckptsweep.data.tasks import TaskType, check_record, gold_text, task_type
from ckptsweep.device import resolve_device
from ckptsweep.files import read_jsonl

SCORING_VERSION = "3"
"""Part of every prediction-cache key: bump it with any change of this module that can
change a prediction or a score, so that no cache entry of the old code is served.
3: multi-token candidates scored on the prompt's KV cache (`SHARING`), equal to 2's
log-probabilities up to float rounding."""

METHODS = ("loglik", "tokenprob", "constrained", "free")
"""Prediction methods of classification sets (``EvalConfig.method``)."""

PREDICTION_SCHEMA = pa.schema([
    ("eval_set", pa.string()),
    ("task", pa.string()),
    ("format", pa.string()),
    ("shots", pa.int64()),
    ("id", pa.string()),
    ("prompt_hash", pa.string()),
    ("demo_ids", pa.list_(pa.string())),
    ("truncated", pa.bool_()),
    ("n_prompt_tokens", pa.int64()),
    ("gold", pa.string()),
    ("prediction", pa.string()),
    ("label_logprobs", pa.list_(pa.float64())),
    ("score", pa.float64()),
    ("score_norm", pa.float64()),
    ("metric", pa.string()),
    ("method", pa.string()),
])
"""Columns of `evaluate_model`'s output, typed explicitly so that a file holding only
generation rows (all ``label_logprobs`` empty) has the same schema as any other.
``method``: the classification method, ``loglik`` for multiple choice, ``greedy`` for
generation."""

COLUMNS = tuple(PREDICTION_SCHEMA.names)

ABLATION_SCHEMA = pa.schema([("model", pa.string()), ("step", pa.int64()),
                             ("variant", pa.string()), *PREDICTION_SCHEMA])
"""Predictions of the method ablation (``ckptsweep ablation``): which model family,
checkpoint and variant (``base`` or a fine-tune) made each row, then `COLUMNS`."""

RESULT_COLUMNS = ("prediction", "label_logprobs", "score", "score_norm", "metric", "method")
"""The columns a model call produces (the others describe the prompt)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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
    seed: int = 0
    """Seed of the per-example demonstration sampling (``prompts.sample_demos``)."""
    separator: str = "\n\n"
    """Text between demonstrations and before the scored prompt (the demo uses the EOS
    text). It is also a stop string for generation: what follows it is a new example."""
    max_new_tokens: int = 60
    """Greedy generation length limit."""
    batch_size: int = 8
    """Sequences per forward pass (generation: prompts per ``generate`` call)."""
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
    """Prediction method of classification sets, one of `METHODS` (module docstring)."""
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
    """Prediction cache folder (`PredictionCache`); None: no cache."""
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


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def rouge_l(gold: str, prediction: str, scorer=None) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``gold`` (rouge-score, Porter stemmer)."""
    scorer = scorer or _rouge_scorer()
    return scorer.score(gold, prediction)["rougeL"].fmeasure


def _rouge_scorer():
    # Imported here: scoring classification (and the GPU benchmark) needs no rouge-score.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


# --------------------------------------------------------------------------- model calls


SHARING = ("auto", "cache", "sequence", "none")
"""How `token_logprobs` shares the prompt's computation between candidates
(``EvalConfig.prefix_sharing``); all give the same log-probabilities up to float rounding.

- ``cache``: each prompt runs once (batched, longest first) and keeps its KV cache; the
  first token of every candidate is scored from the prompt's last position, and the rest
  of each multi-token candidate runs on top of the cached prompt (the cache rows expanded
  per candidate, batched). A batch whose candidates are all single tokens builds no cache.
- ``sequence``: one forward of prompt + candidate (minus its last token) per candidate;
  candidates whose sequences coincide share it, which is the single-token fast path (the
  prompt alone scores every one-token label). Multi-token candidates re-run the prompt.
- ``none``: one sequence per candidate, nothing shared (the direct computation; tests).
- ``auto`` (default): per prompt, ``cache`` where it pays (`cache_pays`: the prompt tokens
  it saves are at least the candidate tokens it runs), else ``sequence``."""


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: every sequence ends in the last column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def _right_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask: every sequence starts in the first column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def _last_log_softmax(model, seqs: Sequence[list[int]], keep: int, pad_id: int,
                      use_cache: bool = False) -> tuple[torch.Tensor, object, torch.Tensor]:
    """Log-softmax over the vocabulary at the last ``keep`` positions: [batch, keep, vocab];
    with ``use_cache`` also the KV cache of the batch (else None), and the attention mask.

    Left padding puts every sequence's end in the same columns, so ``logits_to_keep``
    skips the vocabulary projection (and the memory) of every other position; the
    position ids are counted from each sequence's first real token.
    """
    ids, mask = _left_pad(seqs, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = model.device
    mask = mask.to(device)
    out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions.to(device),
                logits_to_keep=keep, use_cache=use_cache)
    return out.logits.float().log_softmax(-1), out.cache if use_cache else None, mask


def _sequences(prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
               share_prefix: bool) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """The sequences to run (prompt + candidate minus its last token) and, per sequence,
    the (prompt, candidate) pairs it scores; equal sequences are run once if shared."""
    seqs: list[list[int]] = []
    users: list[list[tuple[int, int]]] = []
    index: dict[tuple, int] = {}
    for i, (prompt, conts) in enumerate(zip(prompts, continuations, strict=True)):
        for j, cont in enumerate(conts):
            seq = prompt + cont[:-1]
            key = tuple(seq) if share_prefix else (i, j)
            if key not in index:
                index[key] = len(seqs)
                seqs.append(seq)
                users.append([])
            users[index[key]].append((i, j))
    return seqs, users


def _check_inputs(prompts: Sequence[list[int]],
                  continuations: Sequence[Sequence[list[int]]]) -> None:
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} candidate lists")
    for i, (prompt, conts) in enumerate(zip(prompts, continuations, strict=True)):
        if not prompt:
            raise ValueError(f"prompt {i} has no tokens: nothing to condition on")
        for j, cont in enumerate(conts):
            if not cont:
                raise ValueError(f"candidate {j} of prompt {i} has no tokens")


def _gather(logp: torch.Tensor, picks: list[tuple[int, int, int]]) -> list[float]:
    """``logp[row, col, token]`` for every pick: one gather, one device-to-host copy."""
    if not picks:
        return []
    index = torch.tensor(picks, device=logp.device).T
    return logp[index[0], index[1], index[2]].tolist()


def _select_cache(cache, rows: torch.Tensor):
    """A copy of ``cache`` holding its batch rows ``rows`` (repeats allowed), in that order.
    The layers are copied shallowly and re-indexed, so ``cache`` itself is left as it is
    (a forward on the copy concatenates new tensors, never writes into the old ones)."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(rows)
    return selected


def _sequence_logprobs(model, prompts, continuations, batch_size, pad_id,
                       share_prefix) -> list[list[list[float]]]:
    """``sequence`` and ``none`` sharing (`SHARING`)."""
    out: list[list[list[float]]] = [[[] for _ in conts] for conts in continuations]
    seqs, users = _sequences(prompts, continuations, share_prefix)
    order = sorted(range(len(seqs)), key=lambda s: -len(seqs[s]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        keep = max(len(continuations[i][j]) for s in batch for i, j in users[s])
        logp, _, _ = _last_log_softmax(model, [seqs[s] for s in batch], keep, pad_id)
        picks, where = [], []
        for row, s in enumerate(batch):
            for i, j in users[s]:
                cont = continuations[i][j]
                picks += [(row, keep - len(cont) + k, t) for k, t in enumerate(cont)]
                where.append((i, j, len(cont)))
        flat = _gather(logp, picks)
        at = 0
        for i, j, n in where:
            out[i][j] = flat[at:at + n]
            at += n
    return out


def _cached_logprobs(model, prompts, continuations, batch_size,
                     pad_id) -> list[list[list[float]]]:
    """``cache`` sharing (`SHARING`).

    Per batch of prompts (longest first): one forward of the prompts (left-padded, the
    logits of the last position only) gives every candidate's first token; where some
    candidate has more tokens, that forward keeps its KV cache, and the candidates' tokens
    but the last (each distinct one once per prompt) then run on top of it, right-padded
    after the prompt's last column, in chunks of ``batch_size`` rows, each row with its
    prompt's cache row, attention mask and position ids that continue the prompt's.
    """
    out: list[list[list[float]]] = [[[] for _ in conts] for conts in continuations]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        # Candidate rows: (row of the prompt in the batch, tokens to run after the prompt).
        tails: dict[tuple[int, tuple[int, ...]], int] = {}
        for row, i in enumerate(batch):
            for cont in continuations[i]:
                if len(cont) > 1:
                    tails.setdefault((row, tuple(cont[:-1])), len(tails))
        logp, cache, mask = _last_log_softmax(model, [prompts[i] for i in batch], 1, pad_id,
                                              use_cache=bool(tails))
        flat = _gather(logp, [(row, 0, cont[0]) for row, i in enumerate(batch)
                              for cont in continuations[i]])
        at = 0
        for i in batch:
            for j in range(len(continuations[i])):
                out[i][j] = [flat[at]]
                at += 1
        if not tails:
            continue
        lengths = mask.sum(-1)
        # A torch.compile'd model scores the prompts; the tails, a few tokens per row in
        # ever-changing shapes (rows and widths of 1 force recompiles), run eagerly.
        eager = getattr(model, "_orig_mod", model)
        keys = sorted(tails, key=lambda key: -len(key[1]))
        where = {key: (n // batch_size, n % batch_size) for n, key in enumerate(keys)}
        results: list[list[float]] = []
        for chunk_start in range(0, len(keys), batch_size):
            chunk = keys[chunk_start:chunk_start + batch_size]
            rows = torch.tensor([row for row, _ in chunk], device=mask.device)
            ids, tail_mask = _right_pad([list(tail) for _, tail in chunk], pad_id)
            tail_mask = tail_mask.to(mask.device)
            positions = lengths[rows, None] + torch.arange(ids.shape[1], device=mask.device)
            logits = eager(input_ids=ids.to(mask.device),
                           attention_mask=torch.cat([mask[rows], tail_mask], dim=1),
                           position_ids=positions, cache=_select_cache(cache, rows),
                           use_cache=True).logits
            results.append(logits.float().log_softmax(-1))
        picks: dict[int, list] = {}
        spans = []
        for row, i in enumerate(batch):
            for j, cont in enumerate(continuations[i]):
                if len(cont) > 1:
                    c, r = where[(row, tuple(cont[:-1]))]
                    chunk_picks = picks.setdefault(c, [])
                    spans.append((i, j, c, len(chunk_picks), len(cont) - 1))
                    chunk_picks += [(r, k, t) for k, t in enumerate(cont[1:])]
        gathered = {c: _gather(results[c], p) for c, p in picks.items()}
        for i, j, c, a, n in spans:
            out[i][j] += gathered[c][a:a + n]
    return out


def cache_pays(prompt: list[int], candidates: Sequence[list[int]]) -> bool:
    """Whether ``auto`` sharing scores this prompt's candidates on its KV cache: when the
    prompt tokens that ``sequence`` would re-run (once per distinct sequence but one) are
    at least the candidate tokens that run on top of the cache. Measured on a CPU (bench/
    eval_throughput.py): ``cache`` is 1.3-3x faster above that line and up to 1.4x slower
    well below it (prompts shorter than their answers), and even at it. Prompts whose
    candidates are all single tokens pass (``cache`` then is the single-token fast path)."""
    tails = {tuple(c[:-1]) for c in candidates}
    saved = (len(tails) - 1) * len(prompt)
    return saved >= sum(map(len, tails))


def token_logprobs(model, prompts: Sequence[list[int]],
                   continuations: Sequence[Sequence[list[int]]], batch_size: int,
                   pad_id: int, sharing: str = "auto") -> list[list[list[float]]]:
    """Log-probability of every token of each continuation (token ids) given its prompt.

    ``continuations[i]`` are the candidates of ``prompts[i]``. ``sharing`` (`SHARING`)
    picks how the prompt's computation is shared between its candidates; every mode gives
    the log-probabilities of the direct computation (one forward of prompt + candidate)
    up to float rounding. ``batch_size`` bounds the sequences per forward. Each forward
    makes one gather and one device-to-host copy.
    """
    if sharing not in SHARING:
        raise ValueError(f"prefix sharing {sharing!r} is not one of {list(SHARING)}")
    _check_inputs(prompts, continuations)
    if sharing == "auto":
        on_cache = [cache_pays(p, c) for p, c in zip(prompts, continuations, strict=True)]
    else:
        on_cache = [sharing == "cache"] * len(prompts)
    out: list[list[list[float]]] = [[] for _ in prompts]
    for cached in (True, False):
        subset = [i for i, flag in enumerate(on_cache) if flag == cached]
        if not subset:
            continue
        ps, cs = [prompts[i] for i in subset], [continuations[i] for i in subset]
        if cached:
            values = _cached_logprobs(model, ps, cs, batch_size, pad_id)
        else:
            values = _sequence_logprobs(model, ps, cs, batch_size, pad_id, sharing != "none")
        for i, v in zip(subset, values, strict=True):
            out[i] = v
    return out


def continuation_logprobs(model, prompts: Sequence[list[int]],
                          continuations: Sequence[Sequence[list[int]]], batch_size: int,
                          pad_id: int, sharing: str = "auto") -> list[list[float]]:
    """Summed log-likelihood of each continuation given its prompt (`token_logprobs`)."""
    per_token = token_logprobs(model, prompts, continuations, batch_size, pad_id, sharing)
    return [[math.fsum(c) for c in cands] for cands in per_token]


def generate_texts(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int,
                   stops: Sequence[str], batch_size: int, pad_id: int,
                   cache_implementation: str | None = None) -> list[str]:
    """Greedy continuations of prompts (token ids), batched longest first with left
    padding, stopped at EOS or at a stop string and cut there (whitespace stripped).
    ``cache_implementation`` is passed to ``generate`` (e.g. ``static``)."""
    eos_ids = _eos_ids(model, tokenizer)
    stops = [s for s in stops if s]  # an empty stop string would end generation at once
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_ids, pad_token_id=pad_id,
                              stop_strings=list(stops) or None,
                              cache_implementation=cache_implementation)
    texts = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in batch], pad_id)
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                             generation_config=config, tokenizer=tokenizer)
        for row, i in enumerate(batch):
            new = out[row, ids.shape[1]:].tolist()
            # Tokens after EOS are padding; text after a stop string belongs to the next turn.
            end = next((k for k, t in enumerate(new) if t in eos_ids), len(new))
            text = tokenizer.decode(new[:end], skip_special_tokens=True)
            texts[i] = cut_at_stop(text, stops).strip()
    return texts


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id, model.generation_config.eos_token_id]  # int, list or None
    flat = {i for x in ids for i in (x if isinstance(x, list) else [x]) if i is not None}
    if not flat:
        raise ValueError("neither the tokenizer nor the model defines an EOS token id")
    return sorted(flat)


# --------------------------------------------------------------------------- labels


_NON_SEMANTIC = string.whitespace + string.punctuation


def lenient_label_tokens(tokenizer, labels: Sequence[str]) -> list[list[int]]:
    """Per label, the vocabulary tokens that spell it or a prefix of it up to case and
    surrounding whitespace and punctuation (paper, Appendix B.1): for ``yes``, ``"yes"``,
    ``" Yes"``, ``"YES:"``, ``" y"``... Tokens that fit two labels, and special tokens,
    are left out."""
    lowered = [label.lower() for label in labels]
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[t] for t in range(len(tokenizer))])
    found: list[list[int]] = [[] for _ in labels]
    for tid, text in enumerate(texts):
        norm = text.strip(_NON_SEMANTIC).lower()
        hits = [k for k, label in enumerate(lowered) if norm and label.startswith(norm)]
        if len(hits) == 1 and tid not in special:
            found[hits[0]].append(tid)
    return found


def trie_greedy(cands: Sequence[Sequence[list[int]]],
                logprobs: Sequence[Sequence[list[float]]]) -> int:
    """The label that greedy decoding restricted to the candidates' token sequences
    produces: ``cands[k]`` are label k's token-id variants, ``logprobs[k]`` their
    per-token log-probabilities (`token_logprobs`). At each depth the best next token
    among the candidates still alive is taken (candidates that share a prefix share the
    next-token distribution); decoding ends when a candidate is complete."""
    alive = [(k, ids, lps) for k, (variants, values) in enumerate(zip(cands, logprobs,
                                                                      strict=True))
             for ids, lps in zip(variants, values, strict=True)]
    depth = 0
    while True:
        done = [k for k, ids, _ in alive if len(ids) == depth]
        if done:
            return done[0]
        token = max(alive, key=lambda c: c[2][depth])[1][depth]
        alive = [c for c in alive if c[1][depth] == token]
        depth += 1


def first_label(text: str, labels: Sequence[str]) -> int | None:
    """Index of the label word that occurs first in ``text`` (whole word, any case; the
    longer label on a tie), or None."""
    found = []
    for k, label in enumerate(labels):
        match = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, re.IGNORECASE)
        if match:
            found.append((match.start(), -len(label), k))
    return min(found)[2] if found else None


# --------------------------------------------------------------------------- prompts


@dataclass
class _Lm:
    """The model, its tokenizer and the job's config, with the tokenisation convention:
    prompts are encoded as the tokenizer does by default (special tokens included), and
    continuations without special tokens, then concatenated, so the boundary is exact."""

    model: object
    tokenizer: object
    cfg: EvalConfig
    max_length: int
    pad_id: int
    model_key: str | None = None
    scoring_model: object = None
    """The model for scoring forwards: ``model`` or its ``torch.compile``."""
    _lenient: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.scoring_model is None:
            self.scoring_model = torch.compile(self.model) if self.cfg.compile else self.model

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def continuation_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.prompt_ids(text))

    def label_variants(self, spaced: str) -> list[list[int]]:
        """Token ids of an answer as ``prompts.target`` spells it (leading space) and
        without the leading space; once where both tokenise alike."""
        variants: list[list[int]] = []
        spellings = [spaced, spaced.removeprefix(" ")] if self.cfg.space_variants else [spaced]
        for text in dict.fromkeys(spellings):
            ids = self.continuation_ids(text)
            if ids and ids not in variants:
                variants.append(ids)
        return variants

    def lenient(self, labels: Sequence[str]) -> list[list[int]]:
        key = tuple(labels)
        if key not in self._lenient:
            self._lenient[key] = lenient_label_tokens(self.tokenizer, labels)
        return self._lenient[key]

    def build(self, task: TaskType, record: dict, fmt: str, demos: list[dict],
              budget: int) -> tuple[Prompt, list[int]]:
        """The prompt (within ``budget`` tokens) and its token ids."""
        prompt = build_prompt(task, record, fmt, demos, self.cfg.separator,
                              self.count_tokens, budget)
        ids = self.prompt_ids(prompt.text)
        if len(ids) > budget:
            # The template alone (or a field build_prompt does not cut) is over budget:
            # keep the prompt's end, where the answer cue is. Rare; flagged as truncated.
            ids = ids[len(ids) - budget:]
            prompt = Prompt(prompt.text, prompt.demo_ids, True)
        return prompt, ids


@dataclass
class _Item:
    """One example to score: its output row's prompt columns and what the model needs."""

    row: dict
    ids: list[int]
    """The prompt's token ids."""
    labels: list[str]
    """Label words or choices; empty for generation."""
    cands: list[list[list[int]]]
    """Per label, the token ids of its spelling variants (`_Lm.label_variants`)."""
    gold_index: int | None
    answer_hash: str
    """Hash of the gold answer and the labels: with ``prompt_hash``, a cache row's check."""


def _base_row(es: EvalSet, fmt: str, shots: int, record: dict, prompt: Prompt,
              ids: list[int], gold: str) -> dict:
    return {
        "eval_set": es.name, "task": es.task, "format": fmt, "shots": shots,
        "id": str(record["id"]), "prompt_hash": prompt_hash(prompt.text),
        "demo_ids": list(prompt.demo_ids), "truncated": prompt.truncated,
        "n_prompt_tokens": len(ids), "gold": gold,
    }


def _choice_texts(task: TaskType, record: dict) -> list[str]:
    return list(task.labels) if task.kind == "classification" else list(record["choices"])


def _method(task: TaskType, cfg: EvalConfig) -> str:
    if task.kind == "generation":
        return "greedy"
    return cfg.method if task.kind == "classification" else "loglik"


def _answer_room(cfg: EvalConfig, method: str, cands: list[list[list[int]]]) -> int:
    """Tokens kept free after the prompt for the answer."""
    if method == "greedy":
        return cfg.max_new_tokens
    if method == "free":
        return cfg.label_max_new_tokens
    return max(len(ids) for variants in cands for ids in variants)


def _build_items(lm: _Lm, es: EvalSet, task: TaskType, fmt: str, shots: int, method: str,
                 records: list[dict], demos: list[list[dict]]) -> list[_Item]:
    items = []
    for record, record_demos in zip(records, demos, strict=True):
        labels = [] if task.kind == "generation" else _choice_texts(task, record)
        if es.answer_words:
            # Each label scored as the sum over its answer words (and their spellings).
            cands = [[ids for word in es.answer_words[label] for ids in lm.label_variants(
                " " + word)] for label in labels]
        else:
            # prompts.target gives the answer's text convention (leading space) for a label.
            cands = [lm.label_variants(target(task, {**record, "label": k}))
                     for k in range(len(labels))]
        budget = lm.max_length - _answer_room(lm.cfg, method, cands)
        prompt, ids = lm.build(task, record, fmt, record_demos, budget)
        gold = gold_text(task, record)
        gold_index = None if task.kind == "generation" else int(record["label"])
        items.append(_Item(_base_row(es, fmt, shots, record, prompt, ids, gold), ids, labels,
                           cands, gold_index, _hash([gold, labels])))
    return items


# --------------------------------------------------------------------------- predictions


def _regroup(flat: Sequence, groups: Sequence[Sequence]) -> list[list]:
    """``flat`` split into consecutive pieces as long as each of ``groups``."""
    out, at = [], 0
    for group in groups:
        out.append(list(flat[at:at + len(group)]))
        at += len(group)
    return out


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _label_token_logprobs(lm: _Lm, items: list[_Item]) -> list[list[list[list[float]]]]:
    """Per item, label and spelling variant: the per-token log-probabilities."""
    conts = [[ids for variants in it.cands for ids in variants] for it in items]
    per_token = token_logprobs(lm.scoring_model, [it.ids for it in items], conts,
                               lm.cfg.batch_size, lm.pad_id, lm.cfg.prefix_sharing)
    return [_regroup(values, it.cands) for values, it in zip(per_token, items, strict=True)]


def _tokenprob_logprobs(lm: _Lm, items: list[_Item]) -> list[list[float]]:
    """Per item and label, the best log-probability of the label's acceptable first
    tokens: its variants' first sub-tokens (plus Appendix B.1's set if lenient)."""
    tokens = []
    for it in items:
        sets = [{ids[0] for ids in variants} for variants in it.cands]
        if lm.cfg.lenient_labels:
            sets = [s | set(extra) for s, extra in zip(sets, lm.lenient(it.labels), strict=True)]
        tokens.append([sorted(s) for s in sets])
    conts = [[[t] for toks in per_label for t in toks] for per_label in tokens]
    values = continuation_logprobs(lm.scoring_model, [it.ids for it in items], conts,
                                   lm.cfg.batch_size, lm.pad_id, lm.cfg.prefix_sharing)
    return [[max(v) for v in _regroup(vals, per_label)]
            for vals, per_label in zip(values, tokens, strict=True)]


def _choice_result(task: TaskType, item: _Item, lps: list[float], best: int,
                   method: str) -> dict:
    norm = math.nan
    if task.kind == "multiple_choice":
        # lm-evaluation-harness's acc_norm: log-likelihood per character of the choice.
        best_norm = max(range(len(lps)), key=lambda k: lps[k] / max(len(item.labels[k]), 1))
        norm = float(best_norm == item.gold_index)
    return {"prediction": item.labels[best], "label_logprobs": lps,
            "score": float(best == item.gold_index), "score_norm": norm,
            "metric": "accuracy", "method": method}


def _choice_results(lm: _Lm, task: TaskType, method: str, items: list[_Item]) -> list[dict]:
    """Classification and multiple choice by ``loglik``, ``constrained`` or ``tokenprob``."""
    if method == "tokenprob":
        lps = _tokenprob_logprobs(lm, items)
        best = [_argmax(values) for values in lps]
    else:
        per_token = _label_token_logprobs(lm, items)
        lps = [[logsumexp([math.fsum(t) for t in variants]) for variants in labels]
               for labels in per_token]
        if method == "constrained":
            best = [trie_greedy(it.cands, values)
                    for it, values in zip(items, per_token, strict=True)]
        else:
            best = [_argmax(values) for values in lps]
    return [_choice_result(task, it, values, k, method)
            for it, values, k in zip(items, lps, best, strict=True)]


def _stops(cfg: EvalConfig) -> list[str]:
    return list(dict.fromkeys([*cfg.stop, cfg.separator]))


def _generate(lm: _Lm, items: list[_Item], max_new_tokens: int) -> list[str]:
    return generate_texts(lm.model, lm.tokenizer, [it.ids for it in items], max_new_tokens,
                          _stops(lm.cfg), lm.cfg.batch_size, lm.pad_id,
                          cache_implementation=lm.cfg.generation_cache)


def _free_results(lm: _Lm, items: list[_Item]) -> list[dict]:
    """Free generation: the first label word in the output, else wrong."""
    results = []
    for it, text in zip(items, _generate(lm, items, lm.cfg.label_max_new_tokens), strict=True):
        k = first_label(text, it.labels)
        results.append({"prediction": "" if k is None else it.labels[k], "label_logprobs": [],
                        "score": float(k == it.gold_index), "score_norm": math.nan,
                        "metric": "accuracy", "method": "free"})
    return results


def _generation_results(lm: _Lm, items: list[_Item]) -> list[dict]:
    """Generation: greedy continuation, ROUGE-L F1 against the gold text."""
    scorer = _rouge_scorer()
    return [{"prediction": text, "label_logprobs": [],
             "score": rouge_l(it.row["gold"], text, scorer), "score_norm": math.nan,
             "metric": "rouge_l", "method": "greedy"}
            for it, text in zip(items, _generate(lm, items, lm.cfg.max_new_tokens), strict=True)]


def _predict(lm: _Lm, task: TaskType, method: str, items: list[_Item]) -> list[dict]:
    """The result columns (`RESULT_COLUMNS`) of every item: the model calls."""
    if not items:
        return []
    if method == "greedy":
        return _generation_results(lm, items)
    if method == "free":
        return _free_results(lm, items)
    return _choice_results(lm, task, method, items)


# --------------------------------------------------------------------------- cache


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


_CHECKPOINT_FILES = ("*.safetensors", "pytorch_model*.bin", "config.json",
                     "generation_config.json", "tokenizer*", "special_tokens_map.json",
                     "vocab.json", "merges.txt")


def model_fingerprint(source: str | Path, revision: str | None = None) -> str | None:
    """The prediction cache's name of a checkpoint: ``hub:repo@sha`` for a hub revision
    pinned to a commit; for a local directory a content hash of its weights, config and
    tokenizer files; None otherwise (`evaluate_model` then hashes the loaded weights)."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return f"hub:{source}@{revision}"
    path = Path(source)
    files = sorted({f for p in _CHECKPOINT_FILES for f in path.glob(p) if f.is_file()}
                   if path.is_dir() else ())
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return f"files:{digest.hexdigest()}"


def weights_fingerprint(model, tokenizer) -> str:
    """Content hash of a loaded model (config, every tensor) and its tokenizer."""
    digest = hashlib.sha256(model.config.to_json_string().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend else json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(f"{vocab}{tokenizer('a b')['input_ids']}".encode())
    return f"weights:{digest.hexdigest()}"


CACHE_SCHEMA = PREDICTION_SCHEMA.append(pa.field("answer_hash", pa.string()))


class PredictionCache:
    """Predictions as parquet shards under ``root``, one per block: (model, eval set,
    format, shots, method, decoding parameters, dtype, context length,
    `SCORING_VERSION`), named by the hash of that key (kept in the file's metadata).

    A cached row is served only if its ``prompt_hash`` and ``answer_hash`` (gold answer
    and labels) equal the new ones, so an edited test file, pool, seed or template is
    recomputed row by row. Writes are atomic and keep the union of old and new rows.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.parquet"

    def read(self, key: str) -> dict[str, dict]:
        path = self.path(key)
        return {r["id"]: r for r in pq.read_table(path).to_pylist()} if path.exists() else {}

    def write(self, key: str, fields: dict, rows: list[dict]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=CACHE_SCHEMA)
        table = table.replace_schema_metadata({"key": json.dumps(fields, sort_keys=True)})
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)


def _decoding(cfg: EvalConfig, method: str) -> dict:
    if method == "greedy":
        return {"max_new_tokens": cfg.max_new_tokens, "stop": _stops(cfg),
                "cache": cfg.generation_cache}
    if method == "free":
        return {"max_new_tokens": cfg.label_max_new_tokens, "stop": _stops(cfg),
                "cache": cfg.generation_cache}
    if method == "tokenprob":
        return {"lenient_labels": cfg.lenient_labels, "space_variants": cfg.space_variants}
    return {"space_variants": cfg.space_variants}


def _block_key(lm: _Lm, es: EvalSet, fmt: str, shots: int, method: str) -> dict:
    return {"version": SCORING_VERSION, "model": lm.model_key, "eval_set": es.name,
            "task": es.task, "format": fmt, "shots": shots, "method": method,
            # Only when set, so that the keys (and caches) of every other set stay as they were.
            **({"answer_words": es.answer_words} if es.answer_words else {}),
            "decoding": _decoding(lm.cfg, method), "dtype": lm.cfg.dtype,
            "max_length": lm.max_length}


def _block_rows(lm: _Lm, cache: PredictionCache | None, es: EvalSet, task: TaskType,
                fmt: str, shots: int, records: list[dict],
                demos: list[list[dict]]) -> tuple[list[dict], int]:
    """The rows of one (eval set, format, shots) block and how many came from the cache."""
    method = _method(task, lm.cfg)
    items = _build_items(lm, es, task, fmt, shots, method, records, demos)
    fields = _block_key(lm, es, fmt, shots, method)
    key = _hash(fields)
    cached = cache.read(key) if cache else {}

    def hit(it: _Item) -> bool:
        row = cached.get(it.row["id"])
        return (row is not None and row["prompt_hash"] == it.row["prompt_hash"]
                and row["answer_hash"] == it.answer_hash)

    todo = [n for n, it in enumerate(items) if not hit(it)]
    fresh = dict(zip(todo, _predict(lm, task, method, [items[n] for n in todo]), strict=True))
    rows = [{**it.row, **(fresh[n] if n in fresh else
                          {c: cached[it.row["id"]][c] for c in RESULT_COLUMNS})}
            for n, it in enumerate(items)]
    if cache is not None and todo:
        new = {r["id"]: {**r, "answer_hash": it.answer_hash}
               for r, it in zip(rows, items, strict=True)}
        cache.write(key, fields, list({**cached, **new}.values()))
    return rows, len(items) - len(todo)


# --------------------------------------------------------------------------- the job


def _load_set(es: EvalSet, task: TaskType, need_pool: bool) -> tuple[list[dict], list[dict]]:
    """The records to score and the demonstration pool, checked against the task type.

    The pool loses every record whose id occurs anywhere in the test file (not only in
    the scored ``limit``), so a demonstration is never a scored example and the prompts do
    not depend on ``limit``.
    """
    test = read_jsonl(es.test_path)
    for n, record in enumerate(test, 1):
        check_record(task, record, f"{es.name}: {es.test_path}, record {n}")
    scored = test if es.limit is None else test[:es.limit]
    if not need_pool:
        return scored, []
    if es.pool_path is None:
        raise ValueError(f"eval set {es.name!r}: few-shot prompts need a pool_path")
    test_ids = {str(r["id"]) for r in test}
    pool = []
    for n, record in enumerate(read_jsonl(es.pool_path), 1):
        check_record(task, record, f"{es.name}: {es.pool_path}, record {n}")
        if str(record["id"]) not in test_ids:
            pool.append(record)
    return scored, pool


def _sample(pool: list[dict], shots: int, seed: int, es: EvalSet, record: dict) -> list[dict]:
    try:
        return sample_demos(pool, shots, seed, str(record["id"]))
    except ValueError as e:
        raise ValueError(f"eval set {es.name!r} ({es.pool_path}, ids of {es.test_path} "
                         f"excluded): {e}") from None


def _check(sets: list[EvalSet], cfg: EvalConfig) -> None:
    """Fail before any model call on a config that would fail half-way through."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype {cfg.dtype!r} is not one of {sorted(DTYPES)}")
    if cfg.method not in METHODS:
        raise ValueError(f"method {cfg.method!r} is not one of {list(METHODS)}")
    if cfg.prefix_sharing not in SHARING:
        raise ValueError(f"prefix_sharing {cfg.prefix_sharing!r} is not one of {list(SHARING)}")
    if any(k < 0 for k in cfg.shots):
        raise ValueError(f"shot counts must be >= 0, got {cfg.shots}")
    names = [es.name for es in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"eval-set names are not unique: {names}")
    for es in sets:
        task = task_type(es.task)
        if task.kind not in ("classification", "multiple_choice", "generation"):
            raise ValueError(f"eval set {es.name!r}: task type {task.name!r} "
                             f"({task.kind}) cannot be evaluated")
        for fmt in es.formats:
            task.template(fmt)  # raises a KeyError naming the formats the task has
        if es.answer_words:
            if task.kind != "classification" or cfg.method not in ("loglik", "tokenprob"):
                raise ValueError(f"eval set {es.name!r}: answer_words need a classification "
                                 f"task scored by loglik or tokenprob, not {task.name!r} by "
                                 f"{cfg.method!r}")
            if sorted(es.answer_words) != sorted(task.labels):
                raise ValueError(f"eval set {es.name!r}: answer_words needs exactly the "
                                 f"labels {list(task.labels)}, got {sorted(es.answer_words)}")


def evaluate_model(model, tokenizer, sets: list[EvalSet], cfg: EvalConfig,
                   progress: Callable[[str], None] | None = None,
                   model_key: str | None = None) -> pd.DataFrame:
    """Score ``model`` on every eval set x format x shot count: one row per example.

    The model is cast to ``cfg.dtype``, moved to ``cfg.device`` and put in eval mode (in
    place). ``progress`` receives one line per (eval set, format, shots) block. Rows come
    in eval-set, format, shots, then file order; columns are ``COLUMNS``. ``model_key``
    names the checkpoint in the prediction cache (`model_fingerprint`); without it, and
    with a cache, the loaded weights are hashed (`weights_fingerprint`).
    """
    _check(sets, cfg)
    cache = PredictionCache(cfg.cache_dir) if cfg.cache_dir else None
    if cache is not None and model_key is None:
        model_key = weights_fingerprint(model, tokenizer)
    model = model.to(device=torch.device(resolve_device(cfg.device)),
                     dtype=DTYPES[cfg.dtype]).eval()
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = _eos_ids(model, tokenizer)[0]
    max_length = cfg.max_length or model.config.max_position_embeddings
    lm = _Lm(model, tokenizer, cfg, max_length, pad_id, model_key)

    rows: list[dict] = []
    n_blocks, done = sum(len(es.formats) for es in sets) * len(cfg.shots), 0
    with torch.inference_mode():
        for es in sets:
            task = task_type(es.task)
            records, pool = _load_set(es, task, need_pool=max(cfg.shots, default=0) > 0)
            for fmt in es.formats:
                for shots in cfg.shots:
                    started = time.perf_counter()
                    demos = [_sample(pool, shots, cfg.seed, es, r) for r in records]
                    block, n_cached = _block_rows(lm, cache, es, task, fmt, shots, records,
                                                  demos)
                    rows.extend(block)
                    done += 1
                    if progress:
                        seconds = time.perf_counter() - started
                        progress(f"[{done}/{n_blocks}] {es.name} {fmt} {shots}-shot: "
                                 f"{len(block)} examples ({n_cached} from the cache), "
                                 f"{sum(r['truncated'] for r in block)} truncated, "
                                 f"{seconds:.1f} s ({len(block) / max(seconds, 1e-9):.1f}/s)")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_predictions(frame: pd.DataFrame, path: str | Path,
                      schema: pa.Schema = PREDICTION_SCHEMA) -> None:
    """Write rows of `evaluate_model` to parquet with a fixed schema (default
    ``PREDICTION_SCHEMA``; the ablation's ``ABLATION_SCHEMA``)."""
    table = pa.Table.from_pandas(frame[list(schema.names)], schema=schema,
                                 preserve_index=False)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a killed job never leaves a file that looks finished
