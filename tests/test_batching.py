"""Batch sizing (`ckptsweep.evaluate.batching`): the token budget of ``batch_size: auto``,
batch planning, and the out-of-memory split-and-retry; no policy changes a prediction."""

# ruff: noqa: F811  (the imported fixtures are parameter names)
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ckptsweep.errors import ConfigError
from ckptsweep.evaluate import batching as batching_module
from ckptsweep.evaluate.batching import (
    AUTO,
    GENERATE,
    SCORE,
    Batching,
    cpu_budget,
    is_out_of_memory,
    logit_tokens,
    scale_budget,
)
from ckptsweep.evaluate.cache import _block_key
from ckptsweep.evaluate.config import EvalConfig, EvalSet
from ckptsweep.evaluate.logprobs import generate_texts, token_logprobs
from ckptsweep.evaluate.run import evaluate_model
from tests.test_evaluate import CFG, frame, model, sets, tokenizer  # noqa: F401  (fixtures)
from tests.test_prefix_sharing import PAD, cases  # noqa: F401  (fixtures)

CPU_OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes."


def _fake(vocab=1000, hidden=100, device="cuda"):
    """What `Batching` reads of a model: its config and device (a logit position on a GPU
    counts vocab / hidden tokens: 10 here; on a CPU one). Nothing here runs on it."""
    return SimpleNamespace(config=SimpleNamespace(vocab_size=vocab, hidden_size=hidden),
                           device=torch.device(device))


def _batches(batching, model, kind, shapes, fail=None) -> list[list[int]]:
    """The batches ``each`` runs to completion (``fail(rows)`` may raise first)."""
    done = []

    def run(rows):
        if fail:
            fail(rows)
        done.append(rows)

    batching.each(model, kind, shapes, run)
    return done


@pytest.mark.parametrize("size", [0, -3, "big", True, 2.5, None])
def test_a_bad_batch_size_names_its_key(size):
    with pytest.raises(ConfigError, match="evaluation.batch_size"):
        Batching(size)


def test_a_bad_batch_size_fails_before_any_work(model, tokenizer, sets):
    with pytest.raises(ConfigError, match="evaluation.batch_size: 'many'"):
        evaluate_model(model, tokenizer, sets, replace(CFG, batch_size="many"))


def test_fixed_rows_are_chunks_of_that_many():
    shapes = [(50 - k, 1) for k in range(10)]
    assert _batches(Batching(4), _fake(), SCORE, shapes) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_auto_fills_the_token_budget_from_the_widest_row():
    # Each row costs its batch's widest row plus 10 tokens per kept logit position.
    shapes = [(90, 1), (80, 1), (70, 2), (60, 1), (50, 1), (20, 1), (20, 1), (10, 1)]
    done = _batches(Batching(AUTO, budget=300), _fake(), SCORE, shapes)
    # Row 2 keeps two positions: 3 x (90 + 20) > 300, so the first batch is 2 x 100; then
    # 3 x (70 + 20) = 270 (a fourth row: 360); then 3 x 30 and the last row too: 4 x 30.
    assert done == [[0, 1], [2, 3, 4], [5, 6, 7]]
    for rows in done:
        assert Batching(AUTO).cost(_fake(), shapes, rows) <= 300
    # On a CPU a kept logit position counts one token: 3 x (90 + 2) fits.
    assert _batches(Batching(AUTO, budget=300), _fake(device="cpu"), SCORE,
                    shapes)[0] == [0, 1, 2]
    # A row over the budget on its own still runs, alone.
    assert _batches(Batching(AUTO, budget=50), _fake(), SCORE, [(90, 1), (80, 1)]) == [[0], [1]]


def test_logit_tokens_and_the_gpu_scaling():
    assert logit_tokens(_fake(50304, 2048)) == 25
    assert logit_tokens(_fake(100, 1000)) == 1  # at least one token
    assert logit_tokens(_fake(50304, 2048, "cpu")) == 1
    # The probe's 8,000 tokens took 1 GB: half of 20 GB free is 80,000 tokens.
    assert scale_budget(8000, 10**9, 20 * 10**9) == 80_000


def test_the_cpu_rule_is_in_its_measured_range():
    for hidden in (64, 128, 512, 2048):
        for kind in (SCORE, GENERATE):
            assert 1024 <= cpu_budget(_fake(hidden=hidden), kind) <= 32768


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError(CPU_OOM))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize("size", [8, AUTO])
def test_out_of_memory_splits_and_later_batches_keep_the_lower_budget(size):
    shapes = [(100, 1)] * 16  # 110 tokens a row
    batching = Batching(size, budget=880)  # auto: 8 rows a batch, like the fixed 8

    def fail(rows):
        if len(rows) > 2:
            raise RuntimeError(CPU_OOM)

    done = _batches(batching, _fake(), SCORE, shapes, fail)
    # The first batch of 8 splits into 4 + 4, then 2 + 2 twice; the lower budget (or rows)
    # holds for the second batch, which then never fails.
    assert sorted(r for rows in done for r in rows) == list(range(16))
    assert all(len(rows) == 2 for rows in done)
    assert batching.splits == 3
    if size == AUTO:
        assert batching.budgets[SCORE] == 220 and batching.chosen[SCORE] == 880
        note = batching.note()
        assert "out of memory: 3 batch(es) split" in note and "now score 220 tokens" in note
    else:
        assert batching.rows == 2
        assert batching.note().endswith("now 2 sequences per batch")
    assert batching.note() == ""  # each change is reported once


def test_other_errors_and_a_single_row_out_of_memory_are_raised():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _batches(Batching(4), _fake(), SCORE, [(10, 1)] * 4,
                 lambda rows: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        _batches(Batching(4), _fake(), SCORE, [(10, 1)] * 4,
                 lambda rows: (_ for _ in ()).throw(RuntimeError(CPU_OOM)))


POLICIES = [1, 3, 8, 50, AUTO, "auto=64"]


def _policy(name):
    """A policy by name: rows, auto, or ``auto=N`` (auto with a budget of N tokens, which
    makes batches of every size here)."""
    if isinstance(name, str) and name.startswith("auto="):
        return Batching(AUTO, budget=int(name.split("=")[1]))
    return name


@pytest.mark.parametrize("sharing", ["cache", "sequence"])
def test_scores_are_the_same_with_every_policy(model, cases, sharing):
    prompts, conts = cases
    with torch.inference_mode():
        ref = token_logprobs(model, prompts, conts, 1, PAD, sharing)
        for name in POLICIES[1:]:
            got = token_logprobs(model, prompts, conts, _policy(name), PAD, sharing)
            for a, b in zip(ref, got, strict=True):
                np.testing.assert_allclose(np.concatenate(b), np.concatenate(a), atol=2e-5,
                                           err_msg=str(name))


def test_generated_texts_are_the_same_with_every_policy(model, tokenizer, cases):
    prompts = cases[0]
    with torch.inference_mode():
        ref = generate_texts(model, tokenizer, prompts, 6, ["###"], 1, PAD)
        for name in POLICIES[1:]:
            assert generate_texts(model, tokenizer, prompts, 6, ["###"], _policy(name),
                                  PAD) == ref, name


def test_the_growing_cache_generates_what_the_dynamic_cache_does(model, tokenizer, cases,
                                                                 monkeypatch):
    """The default KV cache (`kvcache.GrowingLayer`, written in place) against transformers'
    DynamicCache (a torch.cat at every token): the same texts, batched or not, and when a
    prompt outgrows the room it was given (the buffer then doubles)."""
    from ckptsweep.evaluate import kvcache, logprobs

    prompts = cases[0]
    with torch.inference_mode():
        dynamic = generate_texts(model, tokenizer, prompts, 12, ["###"], 3, PAD,
                                 cache_implementation="dynamic")
        assert any(dynamic), "nothing generated: the comparison would prove nothing"
        grown = []
        real = kvcache.growing_cache
        monkeypatch.setattr(logprobs, "growing_cache",
                            lambda m, room: grown.append(real(m, room)) or grown[-1])
        assert generate_texts(model, tokenizer, prompts, 12, ["###"], 3, PAD) == dynamic
        assert grown and all(layer.filled > 0 for c in grown for layer in c.layers)
        for size in (1, _policy("auto")):
            assert generate_texts(model, tokenizer, prompts, 12, ["###"], size, PAD) == dynamic
        monkeypatch.setattr(logprobs, "growing_cache", lambda m, room: real(m, 0))
        assert generate_texts(model, tokenizer, prompts, 12, ["###"], 3, PAD) == dynamic


def _oom_above(model, monkeypatch, rows: int) -> list[int]:
    """Every forward of ``model`` with more than ``rows`` rows fails as the CPU allocator
    does; returns the list of the failed forwards' row counts."""
    failed = []
    forward = model.forward

    def limited(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > rows:
            failed.append(ids.shape[0])
            raise RuntimeError(CPU_OOM)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", limited)
    return failed


def _same(a, b):
    assert (a.prediction == b.prediction).all()
    assert (a.score.fillna(-1) == b.score.fillna(-1)).all()
    assert (a.score_norm.fillna(-1) == b.score_norm.fillna(-1)).all()
    np.testing.assert_allclose(np.concatenate(a.label_logprobs.to_list()),
                               np.concatenate(b.label_logprobs.to_list()), atol=1e-4)


@pytest.mark.parametrize("size", [50, AUTO])
def test_evaluation_is_the_same_with_every_batch_size(frame, model, tokenizer, sets, size,
                                                      monkeypatch):
    """Every method's path (classification, multiple choice, completion, generation)
    gives the frame of ``batch_size: 8`` (and of 1, `test_batched_equals_one_by_one`);
    auto with a small budget, so that its batches are of every size here. Auto's progress
    line says the budgets it chose, once."""
    if size == AUTO:
        monkeypatch.setattr(batching_module, "cpu_budget", lambda model, kind: 400)
    lines = []
    _same(evaluate_model(model, tokenizer, sets, replace(CFG, batch_size=size),
                         progress=lines.append), frame)
    chose = [line for line in lines if "batches: auto" in line]
    if size == AUTO:
        assert len(chose) == 2  # scoring in the first block, generation in summ_id's first
        assert chose[0].endswith("batches: auto, score 400 tokens per forward")
        assert "summ_id" in chose[1] and "generate 400 tokens, score 400 tokens" in chose[1]
    else:
        assert not chose


@pytest.mark.parametrize("size, scored", [(8, slice(None)), (AUTO, slice(1, 3))])
def test_out_of_memory_never_fails_the_job(frame, model, tokenizer, sets, size, scored,
                                           monkeypatch):
    """Forwards over 2 rows fail as the CPU allocator does: the job still ends, with the
    predictions of the unforced run, and the block's progress line says what happened."""
    failed = _oom_above(model, monkeypatch, 2)
    lines = []
    forced = evaluate_model(model, tokenizer, sets[scored], replace(CFG, batch_size=size),
                            progress=lines.append)
    assert failed  # the forced path did run
    names = [es.name for es in sets[scored]]
    _same(forced, frame[frame.eval_set.isin(names)].reset_index(drop=True))
    noted = [line for line in lines if "out of memory" in line]
    assert noted[0].startswith("[1/")  # the first block's line already says it
    if size == 8:
        assert noted[0].endswith("now 2 sequences per batch")
    else:
        assert "batches: auto, now " in noted[0]


def test_the_cache_key_does_not_hold_the_batch_size(sets):
    es: EvalSet = sets[0]
    keys = [_block_key("m", EvalConfig(batch_size=size), 512, es, "default", 0, "loglik")
            for size in (1, 32, AUTO)]
    assert keys[0] == keys[1] == keys[2]


@pytest.mark.parametrize("kind", [SCORE, GENERATE])
def test_the_gpu_budget_scales_one_probe_forward(model, kind, monkeypatch):
    """The probe runs here on the CPU with CUDA's memory counters stubbed: about
    PROBE_TOKENS in one forward of the given width, with a padded row and the KV cache;
    its measured peak, scaled to half the free memory, is the budget."""
    seen = []
    counters = {"memory_allocated": lambda device: 10**6,
                "max_memory_allocated": lambda device: 10**6 + 50 * 10**6,
                "mem_get_info": lambda device: (10**10, 2 * 10**10),
                "synchronize": lambda device: None, "empty_cache": lambda: None,
                "reset_peak_memory_stats": lambda device: None}
    for name, fn in counters.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    hook = model.model.register_forward_pre_hook(lambda m, a, kw: seen.append(
        (tuple(kw["input_ids"].shape), int(kw["attention_mask"].sum()), kw["use_cache"])),
        with_kwargs=True)
    try:
        budget = batching_module.gpu_budget(model, kind, 100)
    finally:
        hook.remove()
    # On a CPU logit_tokens is 1: a row costs 100 + 1 (generation) or 100 + 16 (scoring).
    row = 101 if kind == GENERATE else 116
    rows = batching_module.PROBE_TOKENS // row
    assert seen == [((rows, 100), rows * 100 - 1, True)]
    assert budget == scale_budget(rows * row, 50 * 10**6, 10**10)
