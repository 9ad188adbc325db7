"""Tests of ckptsweep.evaluate on a tiny random OLMo and a BPE tokenizer trained on the spot."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from rouge_score import rouge_scorer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from ckptsweep.data.adapters import convert
from ckptsweep.data.prompts import build_prompt, prompt_hash
from ckptsweep.data.tasks import task_type
from ckptsweep.evaluate.config import EvalConfig, EvalSet
from ckptsweep.evaluate.logprobs import continuation_logprobs, cut_at_stop, generate_texts
from ckptsweep.evaluate.methods import rouge_l
from ckptsweep.evaluate.run import evaluate_model
from ckptsweep.evaluate.schema import COLUMNS, write_predictions
from ckptsweep.files import read_jsonl

NAMES = ["Anna", "Bob", "Carla", "Dmitri", "Eve", "Farid", "Gina", "Hugo"]
CITIES = ["Paris", "Lima", "Oslo", "Kyoto", "Accra", "Quito"]
FOODS = ["rice", "bread", "fish", "beans", "soup"]


def _fact(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    if rng.random() < 0.5:
        return f"{name} lives in {rng.choice(CITIES)}."
    return f"{name} eats {rng.choice(FOODS)}."


def _text(rng: random.Random, n: int) -> str:
    return " ".join(_fact(rng) for _ in range(n))


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    # The label words are left out of the training lines, so they are multi-token and the
    # general (one sequence per label) scoring path is exercised end to end.
    lines = [_text(rng, 3) for _ in range(300)] + ["### Input: Question: Answer: Summary:"] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|padding|>")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    # Ids set explicitly: OlmoConfig's defaults are the real 50k vocabulary's. A large
    # initializer range makes the random model's outputs peaked, so argmaxes are not ties.
    config = OlmoConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                        eos_token_id=0, bos_token_id=0, pad_token_id=1, initializer_range=0.2)
    return OlmoForCausalLM(config).eval()


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(1)

    def nli(prefix, n):
        return [{"id": f"{prefix}-{i}", "premise": _text(rng, 2), "hypothesis": _fact(rng),
                 "label": i % 3} for i in range(n)]

    def summ(prefix, n):
        return [{"id": f"{prefix}-{i}", "document": _text(rng, 3), "summary": _fact(rng)}
                for i in range(n)]

    def mc(prefix, n):
        return [{"id": f"{prefix}-{i}", "context": _text(rng, 2), "question": "Where?",
                 "choices": [rng.choice(CITIES), "in " + rng.choice(CITIES),
                             " ".join(rng.sample(CITIES, 3))], "label": i % 3}
                for i in range(n)]

    def completion(prefix, n):  # HellaSwag rows through its adapter (task `completion`)
        return [dict(convert("hellaswag", {
            "ind": i, "activity_label": "Travel", "ctx_a": _text(rng, 2), "ctx_b": "she flies to",
            "endings": rng.sample(CITIES, 4), "label": str(i % 4)}, i, prefix),
            id=f"{prefix}-{i}") for i in range(n)]

    nli_test = nli("nli-test", 10)
    # A pool record that shares a scored id must never be used as a demonstration.
    nli_pool = [*nli("nli-train", 12), dict(nli_test[0], premise="LEAKED")]
    return [
        EvalSet("nli_id", "nli", _write(d / "nli_test.jsonl", nli_test),
                _write(d / "nli_train.jsonl", nli_pool), formats=("default", "io")),
        EvalSet("summ_id", "summarization", _write(d / "summ_test.jsonl", summ("s-test", 8)),
                _write(d / "summ_train.jsonl", summ("s-train", 8)), limit=6),
        EvalSet("mc", "multiple_choice", _write(d / "mc_test.jsonl", mc("mc-test", 6)),
                _write(d / "mc_train.jsonl", mc("mc-train", 8))),
        EvalSet("hs", "completion", _write(d / "hs_test.jsonl", completion("hs-test", 6)),
                _write(d / "hs_train.jsonl", completion("hs-train", 8))),
    ]


CFG = EvalConfig(shots=(0, 2), seed=3, separator="<|endoftext|>", max_new_tokens=8,
                 batch_size=8)


@pytest.fixture(scope="module")
def frame(model, tokenizer, sets):
    return evaluate_model(model, tokenizer, sets, CFG)


def _records(es: EvalSet) -> dict[str, dict]:
    return {str(r["id"]): r for r in read_jsonl(es.test_path)}


def _direct_logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt) from one unpadded forward of prompt + continuation."""
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([p + c])).logits[0].float().log_softmax(-1)
    return sum(logp[len(p) + k - 1, t].item() for k, t in enumerate(c))


def _direct_variants_logprob(model, tokenizer, prompt: str, label: str) -> float:
    """log(p(" label") + p("label")): both spellings of a label, where they tokenise apart."""
    spaced, bare = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" " + label,
                                                                                 label))
    assert spaced != bare  # byte-level BPE: the leading space is part of the first token
    return float(np.logaddexp(_direct_logprob(model, tokenizer, prompt, " " + label),
                              _direct_logprob(model, tokenizer, prompt, label)))


def _rebuild_prompt(tokenizer, es: EvalSet, row) -> str:
    """The row's prompt text, rebuilt from its record and recorded demonstrations."""
    task = task_type(es.task)
    pool = {str(r["id"]): r for r in read_jsonl(es.pool_path)}
    demos = [pool[i] for i in row.demo_ids]
    return build_prompt(task, _records(es)[row.id], row.format, demos, CFG.separator,
                        lambda t: len(tokenizer(t)["input_ids"]), 10**9).text


def test_columns_and_rows(frame, sets):
    assert tuple(frame.columns) == COLUMNS
    # nli: 10 x 2 formats x 2 shot counts; summ: limit 6 x 2; mc and hs: 6 x 2.
    assert frame.groupby("eval_set").size().to_dict() == {"nli_id": 40, "summ_id": 12, "mc": 12,
                                                          "hs": 12}
    gen = frame[frame.task == "summarization"]
    assert (gen.metric == "rouge_l").all() and gen.label_logprobs.map(len).eq(0).all()
    assert gen.score_norm.isna().all()
    assert frame[frame.task == "nli"].score_norm.isna().all()
    assert frame.label_logprobs[frame.task == "nli"].map(len).eq(3).all()


def test_label_logprobs_equal_direct_forward(frame, model, tokenizer, sets):
    for es in (sets[0], sets[2], sets[3]):
        task = task_type(es.task)
        records = _records(es)
        for row in frame[frame.eval_set == es.name].itertuples():
            prompt = _rebuild_prompt(tokenizer, es, row)
            assert prompt_hash(prompt) == row.prompt_hash
            record = records[row.id]
            choices = task.labels if task.kind == "classification" else record["choices"]
            direct = [_direct_variants_logprob(model, tokenizer, prompt, c) for c in choices]
            np.testing.assert_allclose(row.label_logprobs, direct, atol=1e-4)
            assert row.prediction == choices[int(np.argmax(direct))]
            assert row.score == float(np.argmax(direct) == record["label"])


def test_single_token_fast_path_equals_general_path(model, tokenizer):
    prompts = [tokenizer(t)["input_ids"] for t in ["Anna lives in", "Bob eats rice. Eve eats"]]
    labels = [[t] for t in tokenizer(" Paris Lima fish", add_special_tokens=False)["input_ids"]]
    conts = [labels, labels[:2]]
    forwarded = []
    hook = model.model.register_forward_hook(lambda m, a, kw, out: forwarded.append(
        kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        with torch.inference_mode():
            fast = continuation_logprobs(model, prompts, conts, 8, 1, sharing="sequence")
            assert forwarded == [2]  # one sequence per prompt covers all its labels
            general = continuation_logprobs(model, prompts, conts, 8, 1, sharing="none")
            assert forwarded == [2, 5]
            auto = continuation_logprobs(model, prompts, conts, 8, 1)
            assert forwarded == [2, 5, 2]  # the default keeps the fast path
    finally:
        hook.remove()
    for f, g, a in zip(fast, general, auto, strict=True):
        np.testing.assert_allclose(f, g, atol=1e-5)
        np.testing.assert_allclose(a, g, atol=1e-5)


def test_batched_equals_one_by_one(frame, model, tokenizer, sets):
    single = evaluate_model(model, tokenizer, sets, EvalConfig(**{**vars(CFG), "batch_size": 1}))
    assert (single.prediction == frame.prediction).all()
    assert (single.n_prompt_tokens == frame.n_prompt_tokens).all()
    np.testing.assert_allclose(np.concatenate(single.label_logprobs.to_list()),
                               np.concatenate(frame.label_logprobs.to_list()), atol=1e-4)


def test_demonstrations_never_scored(frame, sets):
    for es in sets:
        rows = frame[frame.eval_set == es.name]
        scored = set(_records(es))  # every id of the test file, not only the limit
        for row in rows.itertuples():
            assert row.id not in row.demo_ids
            assert not scored & set(row.demo_ids)
            assert len(row.demo_ids) == (row.shots if not row.truncated else len(row.demo_ids))
        assert (rows[rows.shots == 2].demo_ids.map(len) == 2).all()


def test_truncation_keeps_prompts_within_budget(model, tokenizer, sets):
    cfg = EvalConfig(**{**vars(CFG), "max_length": 40})
    df = evaluate_model(model, tokenizer, sets, cfg)
    longest = {}
    for es in sets:
        task = task_type(es.task)
        for r in read_jsonl(es.test_path):
            choices = task.labels if task.kind == "classification" else r.get("choices", [])
            longest[r["id"]] = max((len(tokenizer(" " + c, add_special_tokens=False)["input_ids"])
                                    for c in choices), default=0)
    room = np.where(df.metric == "rouge_l", cfg.max_new_tokens, df.id.map(longest))
    assert (df.n_prompt_tokens + room <= 40).all()
    assert df.truncated[df.shots == 2].all()  # 2-shot prompts are ~100 tokens here
    assert (df.demo_ids[df.truncated].map(len) < 2).all()


def test_same_seed_same_frame(frame, model, tokenizer, sets):
    pd.testing.assert_frame_equal(evaluate_model(model, tokenizer, sets, CFG), frame)
    other = evaluate_model(model, tokenizer, sets[:1], EvalConfig(**{**vars(CFG), "seed": 4}))
    assert other.demo_ids.to_list() != frame[frame.eval_set == "nli_id"].demo_ids.to_list()


def test_cut_at_stop():
    assert cut_at_stop("Bob eats rice. ### Input: x", ["###", "\n\n"]) == "Bob eats rice. "
    assert cut_at_stop("a\n\nb ### c", ["###", "\n\n"]) == "a"
    assert cut_at_stop("no stop here", ["###", ""]) == "no stop here"


def test_generation_stops_at_stop_string(frame, model, tokenizer, sets):
    gen = frame[frame.task == "summarization"]
    assert not gen.prediction.str.contains("###", regex=False).any()
    # Pick as stop string a word the model generates after some other text, then check
    # that generation ends right before it: the new prediction is the old one cut there.
    row, stop = next((r, w) for r in gen.itertuples() for w in re.findall(r"[A-Z][a-z]+",
                                                                          r.prediction)
                     if r.prediction.find(w) > 0)
    cfg = EvalConfig(**{**vars(CFG), "stop": ("###", stop)})
    again = evaluate_model(model, tokenizer, [sets[1]], cfg)
    assert not again.prediction.str.contains(stop, regex=False).any()
    new = again.set_index(["format", "shots", "id"]).prediction[(row.format, row.shots, row.id)]
    assert new == cut_at_stop(row.prediction, [stop]).strip()


def test_empty_stop_string_is_ignored(model, tokenizer):
    prompts = [tokenizer(t)["input_ids"] for t in ["Anna lives in", "Bob eats rice. Eve"]]
    with torch.inference_mode():
        plain = generate_texts(model, tokenizer, prompts, 8, ["###"], 8, 1)
        empty = generate_texts(model, tokenizer, prompts, 8, ["###", ""], 8, 1)
    assert empty == plain and all(plain)


def test_rouge_l_is_the_library_value(frame, sets):
    gold, pred = "Anna lives in Paris and eats rice.", "Anna is living in Paris."
    library = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(gold, pred)
    assert rouge_l(gold, pred) == library["rougeL"].fmeasure
    assert 0 < rouge_l(gold, pred) < 1
    for row in frame[frame.metric == "rouge_l"].itertuples():
        assert row.score == pytest.approx(rouge_l(row.gold, row.prediction))


def test_multiple_choice_score_norm_is_length_normalised(frame, sets):
    records = {**_records(sets[2]), **_records(sets[3])}
    for row in frame[frame.task.isin(["multiple_choice", "completion"])].itertuples():
        record = records[row.id]
        lps, choices = row.label_logprobs, record["choices"]
        best_norm = int(np.argmax([lp / len(c) for lp, c in zip(lps, choices, strict=True)]))
        assert row.score_norm == float(best_norm == record["label"])
        assert row.score == float(int(np.argmax(lps)) == record["label"])
        assert row.gold == choices[record["label"]]


def test_answer_words_sum_the_words_of_each_label(model, tokenizer, sets, tmp_path):
    """Two-way RTE scored by a three-way NLI model: not_entailment = neutral +
    contradiction, probabilities summed; predictions stay in RTE's labels."""
    records = [{**r, "label": int(r["label"] > 0)} for r in read_jsonl(sets[0].test_path)]
    words = {"entailment": ["entailment"], "not_entailment": ["neutral", "contradiction"]}
    rte = EvalSet("rte", "nli_binary", _write(tmp_path / "rte.jsonl", records), None,
                  answer_words=words)
    cfg = EvalConfig(shots=(0,), space_variants=False, batch_size=4)
    frame = evaluate_model(model, tokenizer, [rte], cfg)
    task = task_type("nli_binary")
    for row, record in zip(frame.itertuples(), records, strict=True):
        prompt = build_prompt(task, record, "default", [], "", lambda t: 0, 10**9).text
        lp = {w: _direct_logprob(model, tokenizer, prompt, " " + w)
              for w in ("entailment", "neutral", "contradiction")}
        direct = [lp["entailment"], float(np.logaddexp(lp["neutral"], lp["contradiction"]))]
        np.testing.assert_allclose(row.label_logprobs, direct, atol=1e-4)
        assert row.prediction == task.labels[int(np.argmax(direct))]
        assert row.score == float(np.argmax(direct) == record["label"])
    # Without answer_words the same set scores RTE's own words: different numbers.
    own = evaluate_model(model, tokenizer, [EvalSet("rte", "nli_binary", rte.test_path, None)],
                         cfg)
    assert not np.allclose(np.stack(own.label_logprobs), np.stack(frame.label_logprobs))


@pytest.mark.parametrize("task, words, method, message", [
    ("multiple_choice", {"a": ["b"]}, "loglik",
     "datasets.rte.eval.answer_words: needs a classification task"),
    ("nli_binary", {"entailment": ["entailment"], "not_entailment": ["neutral"]}, "free",
     "answer_words: needs a classification task scored by loglik or tokenprob"),
    ("nli_binary", {"entailment": ["entailment"]}, "loglik",
     r"answer_words: needs exactly the labels \['entailment', 'not_entailment'\]"),
])
def test_answer_words_errors_name_the_set(model, tokenizer, sets, task, words, method,
                                          message):
    bad = EvalSet("rte", task, sets[0].test_path, None, answer_words=words)
    with pytest.raises(ValueError, match=message):
        evaluate_model(model, tokenizer, [bad], EvalConfig(shots=(0,), method=method))


def test_config_errors_before_any_work(model, tokenizer, sets):
    bad = EvalSet("mc_io", "multiple_choice", sets[2].test_path, sets[2].pool_path,
                  formats=("io",))
    with pytest.raises(ValueError, match=r"datasets\.mc_io\.eval\.formats: .*no format 'io'"):
        evaluate_model(model, tokenizer, [bad], CFG)
    no_pool = EvalSet("nli_np", "nli", sets[0].test_path, None)
    with pytest.raises(ValueError, match="pool_path"):
        evaluate_model(model, tokenizer, [no_pool], CFG)


def test_an_empty_eval_file_fails_naming_it(model, tokenizer, sets, tmp_path):
    """An eval set whose file has no records is an error, never a set that vanishes."""
    empty = tmp_path / "test.jsonl"
    empty.write_text("")
    bad = EvalSet("nli_empty", "nli", empty, sets[0].pool_path)
    with pytest.raises(ValueError, match=r"eval set 'nli_empty': .*test\.jsonl has no records"):
        evaluate_model(model, tokenizer, [bad], CFG)


def test_write_predictions_keeps_schema(frame, tmp_path):
    path = tmp_path / "p.parquet"
    write_predictions(frame[frame.metric == "rouge_l"], path)
    schema = pq.read_schema(path)
    assert schema.field("label_logprobs").type.value_type == pa.float64()
    back = pd.read_parquet(path)
    assert math.isnan(back.score_norm.iloc[0]) and list(back.demo_ids.iloc[-1]) != []


def test_compiled_scoring_equals_eager(frame, model, tokenizer, sets, dynamo_counters):
    """``compile: true`` scores classification, multiple-choice and completion sets with a
    compiled model: the same log-probabilities as eager, without a compile per shape."""
    from dataclasses import replace

    scored = [sets[0], sets[2], sets[3]]
    compiled = evaluate_model(model, tokenizer, scored, replace(CFG, compile=True))
    eager = frame[frame.eval_set.isin([es.name for es in scored])]
    key = ["eval_set", "id", "format", "shots"]
    both = eager.merge(compiled, on=key, suffixes=("_eager", "_compiled"))
    assert len(both) == len(eager) == len(compiled)
    for a, b in zip(both.label_logprobs_eager, both.label_logprobs_compiled, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert (both.prediction_eager == both.prediction_compiled).all()
    # One graph for the first batch shape, one with dynamic shapes after it; no breaks.
    assert dynamo_counters["stats"]["unique_graphs"] == 2
    assert not dynamo_counters["graph_break"]
