"""Prefix sharing in candidate scoring (`ckptsweep.evaluate.config.SHARING`): the prompt run once
with its KV cache and the candidates on top of it give the log-probabilities of the direct
computation (one unpadded forward of prompt + candidate), whatever the padding, batching
and candidate lengths."""

# ruff: noqa: F811  (the imported fixtures are parameter names)
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import Cache

from ckptsweep.evaluate.config import SHARING, EvalConfig
from ckptsweep.evaluate.logprobs import (
    _last_log_softmax,
    _select_cache,
    cache_pays,
    continuation_logprobs,
    generate_texts,
    token_logprobs,
)
from ckptsweep.evaluate.run import evaluate_model
from tests.test_evaluate import CFG, model, sets, tokenizer  # noqa: F401  (fixtures)

PAD = 1


def _direct(model, prompt: list[int], cont: list[int]) -> list[float]:
    """Per-token log p(cont | prompt) from one unpadded forward of prompt + cont."""
    with torch.no_grad():
        logp = model(torch.tensor([prompt + cont])).logits[0].float().log_softmax(-1)
    return [logp[len(prompt) + k - 1, t].item() for k, t in enumerate(cont)]


@pytest.fixture(scope="module")
def cases(model):
    """Prompts of 1 to 40 tokens (left padding of every width in the prompt forwards)
    with 1 to 6 candidates of 1 to 7 tokens, plus the awkward ones: a duplicated
    candidate, candidates sharing all but their last token, a candidate that is a
    prefix of another, a single-token candidate beside multi-token ones, and a prompt
    whose candidates are all single tokens."""
    rng = random.Random(7)
    vocab = model.config.vocab_size

    def toks(n):
        return [rng.randrange(2, vocab) for _ in range(n)]

    prompts = [toks(rng.randint(1, 40)) for _ in range(11)]
    conts = [[toks(rng.randint(1, 7)) for _ in range(rng.randint(1, 6))] for _ in prompts]
    a, b = toks(4), toks(1)[0]
    conts[0] = [a, list(a), a[:3] + [b], a[:2], [a[0]], a + toks(2)]
    conts[1] = [[t] for t in toks(4)]
    prompts[2] = toks(1)  # a one-token prompt: the most left padding
    return prompts, conts


@pytest.mark.parametrize("sharing", SHARING)
@pytest.mark.parametrize("batch_size", [1, 3, 16, "auto"])
def test_every_mode_equals_the_direct_computation(model, cases, sharing, batch_size):
    prompts, conts = cases
    with torch.inference_mode():
        got = token_logprobs(model, prompts, conts, batch_size, PAD, sharing)
    for prompt, cands, values in zip(prompts, conts, got, strict=True):
        assert len(values) == len(cands)
        for cont, lps in zip(cands, values, strict=True):
            np.testing.assert_allclose(lps, _direct(model, prompt, cont), atol=2e-5)


def _forwards(model, fn) -> list[tuple[int, int, int]]:
    """(rows, new columns, columns of past KV cache it ran on) of each decoder forward.

    The past cache is found by type among the forward's arguments, whatever transformers
    calls that argument (``past_key_values`` before 5.24, ``cache`` since)."""
    seen = []

    def record(module, args, kwargs, out):
        caches = [v for v in kwargs.values() if isinstance(v, Cache)]
        past = caches[0].get_seq_length() if caches else 0
        # A forward that builds a fresh cache sees it filled by itself: no past columns.
        seen.append((*kwargs["input_ids"].shape, past - kwargs["input_ids"].shape[1]
                     if past else 0))

    hook = model.model.register_forward_hook(record, with_kwargs=True)
    try:
        with torch.inference_mode():
            fn()
    finally:
        hook.remove()
    return seen


def test_cache_runs_each_prompt_once(model):
    prompts = [list(range(2, 32)), list(range(40, 60))]
    conts = [[[5, 6, 7], [8, 9], [10]], [[11, 12, 13, 14], [15, 16]]]
    seen = _forwards(model, lambda: token_logprobs(model, prompts, conts, 8, PAD, "cache"))
    # One forward of the two prompts (30 columns, left-padded), then the four distinct
    # candidate tails (longest 3 tokens) on top of the prompts' 30 cached columns: the
    # prompt tokens run once.
    assert seen == [(2, 30, 0), (4, 3, 30)]
    seen = _forwards(model, lambda: token_logprobs(model, prompts, conts, 8, PAD, "sequence"))
    assert seen == [(5, 32, 0)]  # 5 sequences, each with the whole prompt


def test_tail_rows_are_chunked_by_batch_size(model):
    prompt = list(range(2, 22))
    conts = [[[k, k + 1] for k in range(30, 37)]]  # 7 distinct one-token tails
    seen = _forwards(model, lambda: token_logprobs(model, [prompt], conts, 3, PAD, "cache"))
    assert seen == [(1, 20, 0), (3, 1, 20), (3, 1, 20), (1, 1, 20)]


def test_scoring_uses_the_current_cache_api(model, tokenizer, caplog):
    """No deprecation notice from our own calls into transformers: the prompt-cache path
    (prompt forward that keeps its cache, tails on top of it) and generation."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers")
    level = logger.level
    logger.setLevel(logging.WARNING)  # the CLI sets TRANSFORMERS_VERBOSITY=error
    logging.Logger.warning_once.cache_clear()  # a notice shown earlier would hide this one
    logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
            warnings.simplefilter("always")
            token_logprobs(model, [[3, 4, 5, 6]], [[[7, 8, 9], [10, 11]]], 4, PAD, "cache")
            generate_texts(model, tokenizer, [[3, 4, 5], [6, 7]], 4, ["\n"], 2, PAD)
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
    notices = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [n for n in notices if "deprecat" in n.lower()], notices


def test_single_token_candidates_build_no_cache(model):
    prompts = [list(range(2, 12)), list(range(20, 25))]
    conts = [[[5], [6], [7]], [[8], [9]]]
    for sharing in ("auto", "cache", "sequence"):
        seen = _forwards(model, lambda s=sharing: token_logprobs(model, prompts, conts, 8, PAD, s))
        assert seen == [(2, 10, False)], sharing  # the single-token fast path: one forward
    with torch.inference_mode():
        calls = []
        original = model.forward

        def spy(*args, **kw):
            calls.append(kw.get("use_cache"))
            return original(*args, **kw)

        model.forward = spy
        try:
            token_logprobs(model, prompts, conts, 8, PAD, "cache")
        finally:
            del model.forward
    assert calls == [False]  # no KV cache kept when nothing runs on top of it


def test_selected_cache_leaves_the_prompt_cache_alone(model):
    with torch.inference_mode():
        _, cache, mask = _last_log_softmax(model, [[3, 4, 5], [6, 7]], 1, PAD, use_cache=True)
        before = [layer.keys.clone() for layer in cache.layers]
        rows = torch.tensor([1, 1, 0])
        selected = _select_cache(cache, rows)
        assert selected.layers[0].keys.shape[0] == 3
        torch.testing.assert_close(selected.layers[0].keys, before[0][rows])
        model(input_ids=torch.tensor([[8], [9], [10]]),
              attention_mask=torch.cat([mask[rows], torch.ones(3, 1, dtype=torch.long)], 1),
              position_ids=torch.tensor([[2], [2], [3]]), cache=selected,
              use_cache=True)
        assert selected.get_seq_length() == 4
        assert cache.get_seq_length() == 3
        for layer, old in zip(cache.layers, before, strict=True):
            torch.testing.assert_close(layer.keys, old)


def test_cache_pays():
    prompt = list(range(100))
    assert cache_pays(prompt, [[1], [2], [3]])  # single tokens: the fast path
    assert cache_pays(prompt, [[1, 2, 3], [4, 5, 6, 7]])  # a long prompt, short answers
    assert not cache_pays([1, 2, 3], [list(range(30)), list(range(40))])  # answers dominate
    assert not cache_pays(prompt, [[1, 2, 3]])  # one candidate: nothing to share
    assert not cache_pays(prompt, [[1, 2, 3], [1, 2, 4]])  # one tail: one sequence does it


def test_auto_routes_per_prompt(model):
    short = [[3, 4], [list(range(10, 30)), list(range(30, 50))]]  # answers dominate
    long = [list(range(2, 60)), [[5, 6], [7, 8]]]
    prompts, conts = [short[0], long[0]], [short[1], long[1]]
    seen = _forwards(model, lambda: token_logprobs(model, prompts, conts, 8, PAD, "auto"))
    assert sorted(seen) == sorted([(1, 58, 0), (2, 1, 58), (2, 21, 0)])
    with torch.inference_mode():
        auto = continuation_logprobs(model, prompts, conts, 8, PAD, "auto")
        none = continuation_logprobs(model, prompts, conts, 8, PAD, "none")
    np.testing.assert_allclose(np.concatenate(auto), np.concatenate(none), atol=1e-4)


def test_bad_inputs_are_named(model):
    with pytest.raises(ValueError, match="prefix sharing 'x'"):
        token_logprobs(model, [[3]], [[[4]]], 8, PAD, "x")
    with pytest.raises(ValueError, match="candidate 0 of prompt 0 has no tokens"):
        token_logprobs(model, [[3]], [[[]]], 8, PAD, "cache")
    with pytest.raises(ValueError, match="prompt 0 has no tokens"):
        token_logprobs(model, [[]], [[[4]]], 8, PAD, "cache")


def test_bfloat16_cache_is_close_to_the_sequences(model, cases):
    """In bf16 the modes agree to bf16's precision (the prompt's keys and values are the
    same bf16 numbers either way; only the reduction order differs)."""
    prompts, conts = cases
    low = type(model)(model.config).to(torch.bfloat16).eval()
    low.load_state_dict(model.state_dict())
    with torch.inference_mode():
        cached = continuation_logprobs(low, prompts, conts, 4, PAD, "cache")
        seqs = continuation_logprobs(low, prompts, conts, 4, PAD, "sequence")
    a, b = np.concatenate(cached), np.concatenate(seqs)
    np.testing.assert_allclose(a, b, rtol=0.02, atol=0.2)


def test_evaluation_is_the_same_with_every_mode(model, tokenizer, sets):
    """The whole evaluation (nli labels and multiple-choice answers are multi-token with
    this tokenizer) predicts the same with sharing on and off."""
    frames = {s: evaluate_model(model, tokenizer, sets[::2],
                                EvalConfig(**{**vars(CFG), "prefix_sharing": s}))
              for s in ("auto", "sequence")}
    a, b = frames["auto"], frames["sequence"]
    assert (a.prediction == b.prediction).all() and (a.score_norm.fillna(-1)
                                                     == b.score_norm.fillna(-1)).all()
    np.testing.assert_allclose(np.concatenate(a.label_logprobs.to_list()),
                               np.concatenate(b.label_logprobs.to_list()), atol=1e-4)


def test_unknown_sharing_fails_before_any_work(model, tokenizer, sets):
    with pytest.raises(ValueError, match="prefix_sharing"):
        evaluate_model(model, tokenizer, sets, EvalConfig(prefix_sharing="always"))
