"""Pre-training: checkpoints load like hub revisions, and runs repeat bit for bit."""

import json

import pytest
import torch

from ckptsweep.checkpoints.load import load, load_checkpoint
from ckptsweep.checkpoints.manifest import Checkpoint, read_manifest, write_manifest
from ckptsweep.train.pretrain import PretrainConfig, lr_at, pretrain

from .conftest import LINES

QUIET = {"log": lambda _: None}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                            for i, t in enumerate(LINES)))
    return path


@pytest.fixture
def tok_dir(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def tiny(**kw):
    return PretrainConfig(**{"layers": 1, "hidden": 32, "heads": 2, "ffn": 64,
                             "max_position": 128, "steps": 6, "batch_size": 2, "seq_len": 32,
                             "checkpoints": [2, 6], **kw})


def test_checkpoints_load_through_the_manifest(corpus, tok_dir, tmp_path):
    saved = pretrain(corpus, tok_dir, tmp_path / "a", tiny(), **QUIET)
    assert [p.name for p in saved] == ["step2", "step6"]
    tokens = json.loads((saved[0] / "pretrain_info.json").read_text())["tokens"]
    assert tokens == 2 * 2 * 32
    write_manifest(tmp_path / "m.tsv", [Checkpoint("2", tokens, "local", str(saved[0]))])
    assert read_manifest(tmp_path / "m.tsv")["2"].tokens == 128
    model, tok = load_checkpoint(tmp_path / "m.tsv", "2")
    assert type(model).__name__ == "OlmoForCausalLM" and tok.eos_token_id == 0
    with pytest.raises(KeyError, match="no step '3'"):
        load_checkpoint(tmp_path / "m.tsv", "3")


def test_same_seed_same_weights(corpus, tok_dir, tmp_path):
    a = load(pretrain(corpus, tok_dir, tmp_path / "a", tiny(), **QUIET)[1])[0]
    b = load(pretrain(corpus, tok_dir, tmp_path / "b", tiny(), **QUIET)[1])[0]
    c = load(pretrain(corpus, tok_dir, tmp_path / "c", tiny(seed=1), **QUIET)[1])[0]
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_schedule_warms_up_then_decays():
    cfg = PretrainConfig(steps=100, lr=1.0, warmup=0.1, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_checkpoints_outside_the_budget_are_refused(corpus, tok_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\[7\] are outside 1..6"):
        pretrain(corpus, tok_dir, tmp_path / "x", tiny(checkpoints=[7]), **QUIET)
