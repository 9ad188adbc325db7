"""The prediction cache: a re-run is served from it, a change of anything that changes a
prediction is not."""

# ruff: noqa: F811  (the imported fixtures are parameter names)
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from ckptsweep.evaluate.cache import SCORING_VERSION, PredictionCache, model_fingerprint
from ckptsweep.evaluate.config import EvalConfig, EvalSet
from ckptsweep.evaluate.run import evaluate_model
from ckptsweep.files import read_jsonl
from tests.test_evaluate import CFG, model, sets, tokenizer  # noqa: F401  (fixtures)


class Calls:
    """Counts the sequences the model runs (forward passes, generation steps included)."""

    def __init__(self, model):
        self.rows = 0
        self.handle = model.register_forward_hook(self._count, with_kwargs=True)

    def _count(self, _module, _args, kwargs, _out):
        self.rows += kwargs["input_ids"].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


def _run(model, tokenizer, sets, cache_dir, **kw):
    cfg = EvalConfig(**{**vars(CFG), "cache_dir": str(cache_dir) if cache_dir else None, **kw})
    with Calls(model) as calls:
        df = evaluate_model(model, tokenizer, sets, cfg)
    return df, calls.rows


@pytest.fixture(scope="module")
def first(model, tokenizer, sets, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    df, rows = _run(model, tokenizer, sets, cache)
    return cache, df, rows


def test_second_run_is_served_from_the_cache(first, model, tokenizer, sets):
    cache, df, rows = first
    assert rows > 0
    again, rows_again = _run(model, tokenizer, sets, cache)
    assert rows_again == 0
    pd.testing.assert_frame_equal(again, df)
    uncached, _ = _run(model, tokenizer, sets, None)
    pd.testing.assert_frame_equal(uncached, df)


def test_shards_are_keyed_blocks(first):
    cache, df, _ = first
    shards = sorted(cache.glob("*/*.parquet"))
    assert len(shards) == df.groupby(["eval_set", "format", "shots"]).ngroups
    import pyarrow.parquet as pq

    key = json.loads(pq.read_schema(shards[0]).metadata[b"key"])
    assert key["version"] == SCORING_VERSION and key["model"].startswith("weights:")
    assert set(key) >= {"eval_set", "format", "shots", "method", "decoding", "dtype"}


@pytest.mark.parametrize("change", [{"method": "tokenprob"}, {"shots": (1,)},
                                    {"max_new_tokens": 5}, {"dtype": "bfloat16"}])
def test_a_change_is_recomputed(first, model, tokenizer, sets, change):
    cache, df, _ = first
    m = copy.deepcopy(model)  # evaluate_model casts in place
    _, rows = _run(m, tokenizer, sets, cache, **change)
    assert rows > 0
    if "max_new_tokens" in change:  # only generation depends on it
        _, rows = _run(m, tokenizer, [sets[0], sets[2]], cache, **change)
        assert rows == 0


def test_new_weights_are_recomputed(first, tokenizer, sets, model):
    cache, df, _ = first
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.01)
    again, rows = _run(other, tokenizer, sets[:1], cache)
    assert rows > 0
    assert not (again.label_logprobs.map(tuple)
                == df[df.eval_set == "nli_id"].label_logprobs.map(tuple).to_list()).all()


def test_edited_records_are_recomputed_row_by_row(first, model, tokenizer, sets, tmp_path):
    cache, df, _ = first
    records = read_jsonl(sets[0].test_path)
    records[0]["label"] = (records[0]["label"] + 1) % 3          # gold changed
    records[1]["hypothesis"] = "Anna eats soup."                  # prompt changed
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    edited = EvalSet(sets[0].name, "nli", path, sets[0].pool_path, formats=("default",))
    with Calls(model) as calls:
        again = evaluate_model(model, tokenizer, [edited], EvalConfig(**{
            **vars(CFG), "shots": (0,), "cache_dir": str(cache)}))
    # nli labels are three tokens here: per example, the prompt once, then one row per
    # label and spelling on its KV cache (prefix_sharing).
    assert 0 < calls.rows <= 2 * (1 + 6)
    old = df[(df.eval_set == "nli_id") & (df.format == "default") & (df.shots == 0)]
    assert again.score[0] == float(again.prediction[0] == again.gold[0]) != old.score.iloc[0]
    assert again.prompt_hash[1] != old.prompt_hash.iloc[1]
    pd.testing.assert_frame_equal(again.iloc[2:].reset_index(drop=True),
                                  old.iloc[2:].reset_index(drop=True))


def test_no_cache_dir_writes_nothing(model, tokenizer, sets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(model, tokenizer, sets[:1], None)
    assert not list(tmp_path.iterdir())


def test_model_fingerprint(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert model_fingerprint("allenai/OLMo-1B-hf", sha) == f"hub:allenai/OLMo-1B-hf@{sha}"
    assert model_fingerprint("allenai/OLMo-1B-hf", "main") is None  # a branch moves
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "train_log.txt").write_text("took 3 s")
    key = model_fingerprint(tmp_path)
    (tmp_path / "train_log.txt").write_text("took 4 s")  # not a checkpoint file
    assert model_fingerprint(tmp_path, "local") == key
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert model_fingerprint(tmp_path) != key


def test_cache_read_of_missing_block_is_empty(tmp_path):
    assert PredictionCache(tmp_path).read("ab" * 32) == {}
