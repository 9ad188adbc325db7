"""Evaluation: score one loaded model on eval sets x prompt formats x shot counts.

One call of `evaluate_model` covers everything a job evaluates with one model load and
returns one row per scored example (the per-example predictions of the DAG).

- Classification and multiple choice: every label word (choice) is scored by the summed
  log-likelihood of its continuation (``prompts.target``'s space convention) given the
  prompt; the prediction is the argmax and every label's log-likelihood is kept, so
  confidence and calibration can be computed downstream.
- Generation: greedy decoding with the KV cache, cut at EOS or the first stop string,
  scored with ROUGE-L F1 (``rouge-score``).

Few-shot demonstrations come from the training pool (``prompts.sample_demos``, seeded per
example), never from the scored file, and prompts that do not fit the context go through
``prompts.build_prompt`` (demonstrations dropped first, then the input cut).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rouge_score import rouge_scorer
from transformers import GenerationConfig

from .prompts import Prompt, build_prompt, prompt_hash, sample_demos, target
from .tasks import TaskType, check_record, gold_text, load_records, task_type

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
])
"""Columns of `evaluate_model`'s output, typed explicitly so that a file holding only
generation rows (all ``label_logprobs`` empty) has the same schema as any other."""

COLUMNS = tuple(PREDICTION_SCHEMA.names)

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
    device: str = "cpu"
    """Torch device the model is moved to (``cpu``, ``cuda``, ``cuda:1``...)."""


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def rouge_l(gold: str, prediction: str, scorer: rouge_scorer.RougeScorer | None = None) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``gold`` (rouge-score, Porter stemmer)."""
    scorer = scorer or rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return scorer.score(gold, prediction)["rougeL"].fmeasure


# --------------------------------------------------------------------------- model calls


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: every sequence ends in the last column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def _last_log_softmax(model, seqs: Sequence[list[int]], keep: int, pad_id: int) -> torch.Tensor:
    """Log-softmax over the vocabulary at the last ``keep`` positions: [batch, keep, vocab].

    Left padding puts every sequence's end in the same columns, so ``logits_to_keep``
    skips the vocabulary projection (and the memory) of every other position; the
    position ids are counted from each sequence's first real token.
    """
    ids, mask = _left_pad(seqs, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = model.device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                   position_ids=positions.to(device), logits_to_keep=keep,
                   use_cache=False).logits
    return logits.float().log_softmax(-1)


def continuation_logprobs(model, prompts: Sequence[list[int]],
                          continuations: Sequence[Sequence[list[int]]], batch_size: int,
                          pad_id: int, share_prefix: bool = True) -> list[list[float]]:
    """Summed log-likelihood of each continuation (token ids) given its prompt (token ids).

    ``continuations[i]`` are the candidates of ``prompts[i]``. Each candidate is scored on
    the sequence prompt + continuation minus its last token (whose logits are never
    needed). With ``share_prefix``, candidates whose sequences coincide share one forward:
    that is the fast path of single-token labels, where the prompt alone gives every
    label's log-probability. Sequences are batched longest first.
    """
    seqs: list[list[int]] = []
    users: list[list[tuple[int, int]]] = []  # per sequence: (prompt, candidate) it scores
    index: dict[tuple, int] = {}
    for i, (prompt, conts) in enumerate(zip(prompts, continuations, strict=True)):
        if not prompt:
            raise ValueError(f"prompt {i} has no tokens: nothing to condition on")
        for j, cont in enumerate(conts):
            if not cont:
                raise ValueError(f"candidate {j} of prompt {i} has no tokens")
            seq = prompt + cont[:-1]
            key = tuple(seq) if share_prefix else (i, j)
            if key not in index:
                index[key] = len(seqs)
                seqs.append(seq)
                users.append([])
            users[index[key]].append((i, j))

    out = [[math.nan] * len(conts) for conts in continuations]
    order = sorted(range(len(seqs)), key=lambda s: -len(seqs[s]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        keep = max(len(continuations[i][j]) for s in batch for i, j in users[s])
        logp = _last_log_softmax(model, [seqs[s] for s in batch], keep, pad_id)
        where, sums = [], []
        for row, s in enumerate(batch):
            for i, j in users[s]:
                cont = continuations[i][j]
                ids = torch.tensor(cont, device=logp.device)[:, None]
                where.append((i, j))
                sums.append(logp[row, keep - len(cont):].gather(-1, ids).sum())
        # One device-to-host copy per batch, not one per candidate.
        for (i, j), value in zip(where, torch.stack(sums).tolist(), strict=True):
            out[i][j] = value
    return out


def generate_texts(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int,
                   stops: Sequence[str], batch_size: int, pad_id: int) -> list[str]:
    """Greedy continuations of prompts (token ids), batched longest first with left
    padding, stopped at EOS or at a stop string and cut there (whitespace stripped)."""
    eos_ids = _eos_ids(model, tokenizer)
    stops = [s for s in stops if s]  # an empty stop string would end generation at once
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_ids, pad_token_id=pad_id,
                              stop_strings=list(stops) or None)
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

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def continuation_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.prompt_ids(text))

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


def _choice_rows(lm: _Lm, es: EvalSet, task: TaskType, fmt: str, shots: int,
                 records: list[dict], demos: list[list[dict]]) -> list[dict]:
    """Classification and multiple choice: argmax of the candidates' log-likelihoods."""
    conts, prompts, ids = [], [], []
    for record, record_demos in zip(records, demos, strict=True):
        n = len(_choice_texts(task, record))
        # prompts.target gives the answer's text convention (leading space) for any label.
        cands = [lm.continuation_ids(target(task, {**record, "label": k})) for k in range(n)]
        budget = lm.max_length - max(map(len, cands))
        prompt, prompt_ids = lm.build(task, record, fmt, record_demos, budget)
        conts.append(cands)
        prompts.append(prompt)
        ids.append(prompt_ids)
    logprobs = continuation_logprobs(lm.model, ids, conts, lm.cfg.batch_size, lm.pad_id)

    rows = []
    for record, prompt, prompt_ids, lps in zip(records, prompts, ids, logprobs, strict=True):
        texts = _choice_texts(task, record)
        best = max(range(len(lps)), key=lps.__getitem__)
        row = _base_row(es, fmt, shots, record, prompt, prompt_ids, gold_text(task, record))
        norm = math.nan
        if task.kind == "multiple_choice":
            # lm-evaluation-harness's acc_norm: log-likelihood per character of the choice.
            best_norm = max(range(len(lps)), key=lambda k: lps[k] / max(len(texts[k]), 1))
            norm = float(best_norm == int(record["label"]))
        row.update(prediction=texts[best], label_logprobs=lps,
                   score=float(best == int(record["label"])), score_norm=norm,
                   metric="accuracy")
        rows.append(row)
    return rows


def _generation_rows(lm: _Lm, es: EvalSet, task: TaskType, fmt: str, shots: int,
                     records: list[dict], demos: list[list[dict]],
                     scorer: rouge_scorer.RougeScorer) -> list[dict]:
    """Generation: greedy continuation, ROUGE-L F1 against the gold text."""
    budget = lm.max_length - lm.cfg.max_new_tokens
    built = [lm.build(task, r, fmt, d, budget) for r, d in zip(records, demos, strict=True)]
    stops = list(dict.fromkeys([*lm.cfg.stop, lm.cfg.separator]))
    texts = generate_texts(lm.model, lm.tokenizer, [ids for _, ids in built],
                           lm.cfg.max_new_tokens, stops, lm.cfg.batch_size, lm.pad_id)
    rows = []
    for record, (prompt, ids), text in zip(records, built, texts, strict=True):
        gold = gold_text(task, record)
        row = _base_row(es, fmt, shots, record, prompt, ids, gold)
        row.update(prediction=text, label_logprobs=[], score=rouge_l(gold, text, scorer),
                   score_norm=math.nan, metric="rouge_l")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the job


def _load_set(es: EvalSet, task: TaskType, need_pool: bool) -> tuple[list[dict], list[dict]]:
    """The records to score and the demonstration pool, checked against the task type.

    The pool loses every record whose id occurs anywhere in the test file (not only in
    the scored ``limit``), so a demonstration is never a scored example and the prompts do
    not depend on ``limit``.
    """
    test = load_records(es.test_path)
    for n, record in enumerate(test, 1):
        check_record(task, record, f"{es.name}: {es.test_path}, record {n}")
    scored = test if es.limit is None else test[:es.limit]
    if not need_pool:
        return scored, []
    if es.pool_path is None:
        raise ValueError(f"eval set {es.name!r}: few-shot prompts need a pool_path")
    test_ids = {str(r["id"]) for r in test}
    pool = []
    for n, record in enumerate(load_records(es.pool_path), 1):
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


def evaluate_model(model, tokenizer, sets: list[EvalSet], cfg: EvalConfig,
                   progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Score ``model`` on every eval set x format x shot count: one row per example.

    The model is cast to ``cfg.dtype``, moved to ``cfg.device`` and put in eval mode (in
    place). ``progress`` receives one line per (eval set, format, shots) block. Rows come
    in eval-set, format, shots, then file order; columns are ``COLUMNS``.
    """
    _check(sets, cfg)
    model = model.to(device=torch.device(cfg.device), dtype=DTYPES[cfg.dtype]).eval()
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = _eos_ids(model, tokenizer)[0]
    max_length = cfg.max_length or model.config.max_position_embeddings
    lm = _Lm(model, tokenizer, cfg, max_length, pad_id)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    rows: list[dict] = []
    with torch.inference_mode():
        for es in sets:
            task = task_type(es.task)
            records, pool = _load_set(es, task, need_pool=max(cfg.shots, default=0) > 0)
            for fmt in es.formats:
                for shots in cfg.shots:
                    started = time.perf_counter()
                    demos = [_sample(pool, shots, cfg.seed, es, r) for r in records]
                    if task.kind == "generation":
                        block = _generation_rows(lm, es, task, fmt, shots, records, demos, scorer)
                    else:
                        block = _choice_rows(lm, es, task, fmt, shots, records, demos)
                    rows.extend(block)
                    if progress:
                        progress(f"{es.name} {fmt} {shots}-shot: {len(block)} examples, "
                                 f"{sum(r['truncated'] for r in block)} truncated, "
                                 f"{time.perf_counter() - started:.1f} s")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_predictions(frame: pd.DataFrame, path: str | Path) -> None:
    """Write rows of `evaluate_model` to parquet with the fixed ``PREDICTION_SCHEMA``."""
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=PREDICTION_SCHEMA,
                                 preserve_index=False)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a killed job never leaves a file that looks finished
