"""Label spelling variants and the prediction methods of the paper's Table 2 (loglik,
tokenprob, constrained, free) on tiny random OLMos."""

# ruff: noqa: F811  (the imported fixtures are parameter names)
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import ckptsweep.evaluate.methods as ev_methods
from ckptsweep.data.prompts import render
from ckptsweep.data.tasks import task_type
from ckptsweep.evaluate.config import EvalConfig, EvalSet
from ckptsweep.evaluate.items import _Lm
from ckptsweep.evaluate.labels import (
    _NON_SEMANTIC,
    first_label,
    lenient_label_tokens,
    trie_greedy,
)
from ckptsweep.evaluate.logprobs import generate_texts
from ckptsweep.evaluate.run import evaluate_model
from ckptsweep.files import read_jsonl
from tests.test_evaluate import model, sets, tokenizer  # noqa: F401  (fixtures)

NAMES = ("Ana", "Bo", "Cy", "Di", "Ed")
CITIES = ("Rome", "Oslo", "Lima")


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _direct(model, tok, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt) from one unpadded forward."""
    p, c = tok(prompt)["input_ids"], _ids(tok, continuation)
    with torch.no_grad():
        logp = model(torch.tensor([p + c])).logits[0].float().log_softmax(-1)
    return sum(logp[len(p) + k - 1, t].item() for k, t in enumerate(c))


def _last_logits(model, tok, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1].float()


@pytest.fixture(scope="module")
def para_set(tmp_path_factory):
    """A paraphrase set over the conftest tokenizer's words: " yes" and "yes" are single
    (different) tokens there, " no" one token and "no" two."""
    rng = random.Random(5)
    d = tmp_path_factory.mktemp("para")
    records = [{"id": f"p-{i}", "sentence1": f"{rng.choice(NAMES)} lives in {rng.choice(CITIES)}.",
                "sentence2": f"{rng.choice(NAMES)} is a pilot.", "label": i % 2}
               for i in range(8)]
    path = d / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return EvalSet("para", "paraphrase", path, None, formats=("default", "instruct"))


def _cfg(**kw) -> EvalConfig:
    return EvalConfig(**{"shots": (0,), "separator": "<|endoftext|>", "max_new_tokens": 8,
                         "batch_size": 4, **kw})


def _prompt(es: EvalSet, row) -> str:
    record = {str(r["id"]): r for r in read_jsonl(es.test_path)}[row.id]
    return render(task_type(es.task), record, row.format)  # 0-shot: the bare prompt


# --------------------------------------------------------------------------- variants


def test_loglik_combines_both_spellings(tiny_model, tiny_tokenizer, para_set):
    tok = tiny_tokenizer
    assert _ids(tok, " yes") != _ids(tok, "yes") and len(_ids(tok, "no")) == 2
    df = evaluate_model(tiny_model, tok, [para_set], _cfg())
    assert (df.method == "loglik").all()
    for row in df.itertuples():
        prompt = _prompt(para_set, row)
        want = [np.logaddexp(_direct(tiny_model, tok, prompt, " " + label),
                             _direct(tiny_model, tok, prompt, label)) for label in ("no", "yes")]
        np.testing.assert_allclose(row.label_logprobs, want, atol=1e-4)
        assert row.prediction == ("no", "yes")[int(np.argmax(want))]
    # Combined probabilities of distinct spellings: each label's mass, not above one.
    assert (np.exp(np.stack(df.label_logprobs.to_list())).sum(1) <= 1 + 1e-6).all()


class _NoSpaceTokenizer:
    """A tokenizer that ignores leading spaces (as SentencePiece's dummy prefix does)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, text, **kw):
        return self.tok(text.lstrip(" "), **kw)


def test_spellings_that_tokenise_alike_are_scored_once(tiny_tokenizer):
    lm = _Lm(None, tiny_tokenizer, _cfg(), 256, 1)
    assert lm.label_variants(" yes") == [_ids(tiny_tokenizer, " yes"), _ids(tiny_tokenizer, "yes")]
    lm.tokenizer = _NoSpaceTokenizer(tiny_tokenizer)
    assert lm.label_variants(" yes") == [_ids(tiny_tokenizer, "yes")]


# --------------------------------------------------------------------------- tokenprob


def test_tokenprob_is_a_direct_first_token_logit_comparison(tiny_model, tiny_tokenizer, para_set):
    tok = tiny_tokenizer
    df = evaluate_model(tiny_model, tok, [para_set], _cfg(method="tokenprob"))
    assert (df.method == "tokenprob").all()
    for row in df.itertuples():
        logits = _last_logits(tiny_model, tok, _prompt(para_set, row))
        firsts = [{_ids(tok, " " + w)[0], _ids(tok, w)[0]} for w in ("no", "yes")]
        best_logit = [max(logits[t].item() for t in ts) for ts in firsts]
        assert row.prediction == ("no", "yes")[int(np.argmax(best_logit))]
        logp = logits.log_softmax(-1)
        np.testing.assert_allclose(row.label_logprobs,
                                   [max(logp[t].item() for t in ts) for ts in firsts], atol=1e-5)


def test_lenient_label_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    no, yes = lenient_label_tokens(tok, ["no", "yes"])
    assert {*_ids(tok, " yes"), *_ids(tok, "yes")} <= set(yes)
    assert _ids(tok, " no")[0] in no and _ids(tok, "no")[0] in no  # "n": a prefix of "no"
    assert not set(no) & set(yes) and tok.eos_token_id not in no + yes
    for tid in no + yes:
        norm = tok.decode([tid]).strip(_NON_SEMANTIC).lower()
        assert norm and ("no" if tid in no else "yes").startswith(norm)
    # A token that fits two labels counts for neither.
    n1, n2 = lenient_label_tokens(tok, ["no", "nurse"])
    assert _ids(tok, "n")[0] not in n1 + n2


def test_lenient_tokenprob_is_at_least_strict(tiny_model, tiny_tokenizer, para_set):
    strict = evaluate_model(tiny_model, tiny_tokenizer, [para_set], _cfg(method="tokenprob"))
    lenient = evaluate_model(tiny_model, tiny_tokenizer, [para_set],
                             _cfg(method="tokenprob", lenient_labels=True))
    s, v = np.stack(strict.label_logprobs.to_list()), np.stack(lenient.label_logprobs.to_list())
    assert (v >= s - 1e-9).all() and (v > s + 1e-6).any()


# --------------------------------------------------------------------------- constrained


def test_trie_greedy():
    a, b, c = [5], [6, 7], [6, 8]
    # Branch on the first token, then on the second among the survivors.
    assert trie_greedy([[a], [b], [c]], [[[-2.0]], [[-1.0, -3.0]], [[-1.0, -0.5]]]) == 2
    assert trie_greedy([[a], [b], [c]], [[[-0.5]], [[-1.0, -3.0]], [[-1.0, -0.5]]]) == 0
    # A label that is complete ends decoding, even where a longer one continues it.
    assert trie_greedy([[[6]], [b]], [[[-1.0]], [[-1.0, -0.1]]]) == 0
    # Variants of one label compete token by token like any other sequence.
    assert trie_greedy([[[9], [3, 4]], [[1]]], [[[-3.0], [-0.1, -5.0]], [[-1.0]]]) == 0


def _hf_constrained(model, tok, prompt: str, labels: list[str]) -> str:
    """Reference: transformers' own greedy generate restricted to the labels' spellings."""
    seqs = {tuple(_ids(tok, t)): label for label in labels for t in (" " + label, label)}
    prompt_ids = tok(prompt)["input_ids"]
    n, eos = len(prompt_ids), tok.eos_token_id

    def allowed(_batch, input_ids):
        done = tuple(input_ids[n:].tolist())
        if done in seqs:
            return [eos]
        return sorted({s[len(done)] for s in seqs if s[:len(done)] == done and len(s) > len(done)})

    out = model.generate(torch.tensor([prompt_ids]), prefix_allowed_tokens_fn=allowed,
                         max_new_tokens=max(map(len, seqs)) + 1, do_sample=False,
                         eos_token_id=eos, pad_token_id=tok.pad_token_id)
    new = [t for t in out[0, n:].tolist() if t != eos]
    return seqs[tuple(new)]


def test_constrained_equals_constrained_generate(model, tokenizer, sets):
    nli = sets[0]  # multi-token label words: the trie has real branches
    df = evaluate_model(model, tokenizer, [nli], _cfg(method="constrained"))
    loglik = evaluate_model(model, tokenizer, [nli], _cfg())
    labels = list(task_type("nli").labels)
    assert (df.method == "constrained").all() and df.prediction.isin(labels).all()
    for row in df.itertuples():
        assert row.prediction == _hf_constrained(model, tokenizer, _prompt(nli, row), labels)
    # The label probabilities are the loglik ones; only the decision differs.
    np.testing.assert_allclose(np.stack(df.label_logprobs.to_list()),
                               np.stack(loglik.label_logprobs.to_list()), atol=1e-6)


# --------------------------------------------------------------------------- free


def test_first_label():
    labels = ["entailment", "neutral", "contradiction"]
    assert first_label("Neutral, or entailment?", labels) == 1
    assert first_label("it is ENTAILMENT.", labels) == 0
    assert first_label("neutrality", labels) is None  # whole words only
    assert first_label("", labels) is None
    assert first_label("no way", ["no", "no way"]) == 1  # the longer label on a tie


def test_free_generation_scores_the_first_label_word(model, tokenizer, sets):
    nli = sets[0]
    cfg = _cfg(method="free", label_max_new_tokens=5)
    df = evaluate_model(model, tokenizer, [nli], cfg)
    assert (df.method == "free").all() and df.label_logprobs.map(len).eq(0).all()
    prompts = [tokenizer(_prompt(nli, row))["input_ids"] for row in df.itertuples()]
    with torch.inference_mode():
        texts = generate_texts(model, tokenizer, prompts, 5, ["###", "<|endoftext|>"], 4, 1)
    labels = list(task_type("nli").labels)
    for row, text in zip(df.itertuples(), texts, strict=True):
        k = first_label(text, labels)
        assert row.prediction == ("" if k is None else labels[k])
        assert row.score == float(row.prediction == row.gold)
    # A random model's output holds no label word: scored wrong, not skipped.
    assert (df.prediction == "").any() and (df.score[df.prediction == ""] == 0).all()


def test_free_generation_with_canned_outputs(model, tokenizer, sets, monkeypatch):
    outputs = iter(["Entailment.", "I think: neutral", "hmm", "contradiction, entailment"] * 5)
    monkeypatch.setattr(ev_methods, "generate_texts", lambda _m, _t, prompts, *a, **k: [
        next(outputs) for _ in prompts])
    nli = EvalSet("nli", "nli", sets[0].test_path, None, limit=4)
    df = evaluate_model(model, tokenizer, [nli], _cfg(method="free"))
    assert df.prediction.to_list() == ["entailment", "neutral", "", "contradiction"]
    gold = [r["label"] for r in read_jsonl(nli.test_path)[:4]]
    assert df.score.to_list() == [float(p == task_type("nli").labels[g]) if p else 0.0
                                  for p, g in zip(df.prediction, gold, strict=True)]


def test_methods_apply_to_classification_only(model, tokenizer, sets):
    df = evaluate_model(model, tokenizer, sets, _cfg(method="tokenprob"))
    assert df.groupby("task").method.unique().map(list).to_dict() == {
        "multiple_choice": ["loglik"], "completion": ["loglik"], "nli": ["tokenprob"],
        "summarization": ["greedy"]}


def test_unknown_method_fails_early(model, tokenizer, sets):
    with pytest.raises(ValueError, match="evaluation.method: 'beam' is not one of"):
        evaluate_model(model, tokenizer, sets, _cfg(method="beam"))


def test_static_generation_cache_gives_the_same_texts(model, tokenizer, sets):
    plain = evaluate_model(model, tokenizer, [sets[1]], _cfg())
    static = evaluate_model(model, tokenizer, [sets[1]], _cfg(generation_cache="static"))
    assert static.prediction.to_list() == plain.prediction.to_list()
