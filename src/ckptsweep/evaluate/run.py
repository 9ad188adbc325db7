"""Evaluation: score one loaded model on eval sets x prompt formats x shot counts.

One call of `evaluate_model` covers everything a job evaluates with one model load and
returns one row per scored example (the per-example predictions of the DAG): per (eval
set, format, shots) block, the examples' items (`items`), the predictions of the set's
method (`methods`), served from the prediction cache where they are in it (`cache`).

No few-shot prefix is shared between examples, on purpose: each example draws its own
demonstrations, so the prompts of a block have in common only the template's opening
before the first demonstration's first field (``### Input_1:``, ``Consider the following
texts: Text 1:``; nothing for ``io`` and multiple choice), a few tokens of a few hundred,
less than the cost of expanding a cache to every row. One draw for the whole block would
share k demonstrations (about k/(k+1) of a k-shot prompt, so up to ~5x less prompt
compute at 4 shots) but would tie every score of the block to that single draw, whose
effect on few-shot accuracy is large (Zhao et al., 2021), and change the protocol; the
study keeps the per-example draw.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch

from ckptsweep.data.prompts import sample_demos
from ckptsweep.data.tasks import TaskType, check_record, task_type
from ckptsweep.device import resolve_device
from ckptsweep.errors import ConfigError
from ckptsweep.evaluate.cache import PredictionCache, _block_key, _hash, weights_fingerprint
from ckptsweep.evaluate.config import METHODS, SHARING, EvalConfig, EvalSet
from ckptsweep.evaluate.items import _build_items, _Item, _Lm, _method
from ckptsweep.evaluate.logprobs import _eos_ids
from ckptsweep.evaluate.methods import _predict
from ckptsweep.evaluate.schema import COLUMNS, RESULT_COLUMNS
from ckptsweep.files import read_jsonl

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""``EvalConfig.dtype`` -> the torch dtype the model is cast to before scoring."""


def _block_rows(lm: _Lm, cache: PredictionCache | None, es: EvalSet, task: TaskType,
                fmt: str, shots: int, records: list[dict],
                demos: list[list[dict]]) -> tuple[list[dict], int]:
    """The rows of one (eval set, format, shots) block and how many came from the cache."""
    method = _method(task, lm.cfg)
    items = _build_items(lm, es, task, fmt, shots, method, records, demos)
    fields = _block_key(lm.model_key, lm.cfg, lm.max_length, es, fmt, shots, method)
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


def _load_set(es: EvalSet, task: TaskType, need_pool: bool) -> tuple[list[dict], list[dict]]:
    """The records to score and the demonstration pool, checked against the task type.

    The pool loses every record whose id occurs anywhere in the test file (not only in
    the scored ``limit``), so a demonstration is never a scored example and the prompts do
    not depend on ``limit``.
    """
    test = read_jsonl(es.test_path)
    if not test:
        # An empty file is a broken input, never an eval set that silently vanishes.
        raise ValueError(f"eval set {es.name!r}: {es.test_path} has no records "
                         "(re-run its prepare_data job)")
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
    if not pool:
        raise ValueError(f"eval set {es.name!r}: {es.pool_path} holds no demonstration "
                         f"outside {es.test_path} (few-shot prompts need its train split)")
    return scored, pool


def _sample(pool: list[dict], shots: int, seed: int, es: EvalSet, record: dict) -> list[dict]:
    try:
        return sample_demos(pool, shots, seed, str(record["id"]))
    except ValueError as e:
        raise ValueError(f"eval set {es.name!r} ({es.pool_path}, ids of {es.test_path} "
                         f"excluded): {e}") from None


def _check(sets: list[EvalSet], cfg: EvalConfig) -> None:
    """Fail before any model call on a config that would fail half-way through. Each is a
    `ConfigError` naming the config key; ``ckptsweep.study.checks`` refuses the same
    configs at parse time, before any job runs."""
    if cfg.dtype not in DTYPES:
        raise ConfigError("evaluation.dtype", f"{cfg.dtype!r} is not one of {sorted(DTYPES)}")
    if cfg.method not in METHODS:
        raise ConfigError("evaluation.method", f"{cfg.method!r} is not one of {list(METHODS)}")
    if cfg.prefix_sharing not in SHARING:
        raise ConfigError("evaluation.prefix_sharing",
                          f"{cfg.prefix_sharing!r} is not one of {list(SHARING)}")
    if any(k < 0 for k in cfg.shots):
        raise ConfigError("evaluation.shots", f"shot counts must be >= 0, got {cfg.shots}")
    names = [es.name for es in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"eval-set names are not unique: {names}")
    for es in sets:
        task = task_type(es.task)
        if task.kind not in ("classification", "multiple_choice", "generation"):
            raise ConfigError(f"datasets.{es.name}.eval", f"task type {task.name!r} "
                              f"({task.kind}) cannot be evaluated")
        for fmt in es.formats:
            if fmt not in task.formats:
                raise ConfigError(f"datasets.{es.name}.eval.formats", f"task type "
                                  f"{task.name!r} has no format {fmt!r}; it has "
                                  f"{list(task.formats)}")
        if es.answer_words:
            if task.kind != "classification" or cfg.method not in ("loglik", "tokenprob"):
                raise ConfigError(f"datasets.{es.name}.eval.answer_words", "needs a "
                                  f"classification task scored by loglik or tokenprob, not "
                                  f"{task.name!r} by {cfg.method!r}")
            if sorted(es.answer_words) != sorted(task.labels):
                raise ConfigError(f"datasets.{es.name}.eval.answer_words",
                                  f"needs exactly the labels {list(task.labels)}, got "
                                  f"{sorted(es.answer_words)}")


def evaluate_model(model, tokenizer, sets: list[EvalSet], cfg: EvalConfig,
                   progress: Callable[[str], None] | None = None,
                   model_key: str | None = None) -> pd.DataFrame:
    """Score ``model`` on every eval set x format x shot count: one row per example.

    The model is cast to ``cfg.dtype``, moved to ``cfg.device`` and put in eval mode (in
    place). ``progress`` receives one line per (eval set, format, shots) block. Rows come
    in eval-set, format, shots, then file order; columns are ``COLUMNS``. ``model_key``
    names the checkpoint in the prediction cache (`cache.model_fingerprint`); without it,
    and with a cache, the loaded weights are hashed (`cache.weights_fingerprint`).
    """
    _check(sets, cfg)
    cache = PredictionCache(cfg.cache_dir) if cfg.cache_dir else None
    if cache is not None and model_key is None:
        model_key = weights_fingerprint(model, tokenizer)
    lm = scoring_lm(model, tokenizer, cfg, model_key)

    rows: list[dict] = []
    n_blocks, done = sum(len(es.formats) for es in sets) * len(cfg.shots), 0
    with torch.inference_mode():
        for es, task, fmt, shots, records, demos, started in blocks(sets, cfg):
            block, n_cached = _block_rows(lm, cache, es, task, fmt, shots, records, demos)
            rows.extend(block)
            done += 1
            note = lm.batching.note()  # read per block, so each change shows once
            if progress:
                seconds = time.perf_counter() - started
                progress(f"[{done}/{n_blocks}] {es.name} {fmt} {shots}-shot: "
                         f"{len(block)} examples ({n_cached} from the cache), "
                         f"{sum(r['truncated'] for r in block)} truncated, "
                         f"{seconds:.1f} s ({len(block) / max(seconds, 1e-9):.1f}/s)"
                         + (f"; {note}" if note else ""))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def scoring_lm(model, tokenizer, cfg: EvalConfig, model_key: str | None = None) -> _Lm:
    """``model`` cast to ``cfg.dtype`` on ``cfg.device`` in eval mode (in place), with its
    tokenizer, the config, the length limit and the pad id (EOS where it has none)."""
    model = model.to(device=torch.device(resolve_device(cfg.device)),
                     dtype=DTYPES[cfg.dtype]).eval()
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = _eos_ids(model, tokenizer)[0]
    max_length = cfg.max_length or model.config.max_position_embeddings
    return _Lm(model, tokenizer, cfg, max_length, pad_id, model_key)


def blocks(sets: list[EvalSet], cfg: EvalConfig):
    """The (eval set, format, shots) blocks an evaluation scores, in that order: yields
    (set, task type, format, shots, records, each record's demonstrations, the block's
    start time for the progress line)."""
    for es in sets:
        task = task_type(es.task)
        records, pool = _load_set(es, task, need_pool=max(cfg.shots, default=0) > 0)
        for fmt in es.formats:
            for shots in cfg.shots:
                started = time.perf_counter()
                demos = [_sample(pool, shots, cfg.seed, es, r) for r in records]
                yield es, task, fmt, shots, records, demos, started
