"""Pre-training: checkpoints load like hub revisions, and runs repeat bit for bit."""

import json
from pathlib import Path

import pytest
import torch

from ckptsweep.checkpoints.load import load, load_checkpoint
from ckptsweep.checkpoints.manifest import (
    Checkpoint,
    pretrained_checkpoints,
    read_manifest,
    write_manifest,
)
from ckptsweep.errors import ConfigError
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
                             **kw})


def weights(folder):
    return load(folder)[0].state_dict()


def test_checkpoints_load_through_the_manifest(corpus, tok_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the project root: manifests hold paths relative to it
    saved = pretrain(corpus, tok_dir, Path("pre/step2"), tiny(), 2, **QUIET)
    tokens = json.loads((saved / "pretrain_info.json").read_text())["tokens"]
    assert tokens == 2 * 2 * 32
    write_manifest("m.tsv", pretrained_checkpoints("pre", [2]))
    assert "\tpre/step2\t" in Path("m.tsv").read_text()  # relative: the project can move
    assert read_manifest("m.tsv")["2"].tokens == 128
    model, tok = load_checkpoint("m.tsv", "2")
    assert type(model).__name__ == "OlmoForCausalLM" and tok.eos_token_id == 0
    with pytest.raises(KeyError, match="no step '3'"):
        load_checkpoint("m.tsv", "3")


def test_same_seed_same_weights(corpus, tok_dir, tmp_path):
    a = weights(pretrain(corpus, tok_dir, tmp_path / "a", tiny(), 6, **QUIET))
    b = weights(pretrain(corpus, tok_dir, tmp_path / "b", tiny(), 6, **QUIET))
    c = weights(pretrain(corpus, tok_dir, tmp_path / "c", tiny(seed=1), 6, **QUIET))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_a_step_resumed_from_a_lower_one_equals_one_from_scratch(corpus, tok_dir, tmp_path):
    """Each checkpoint is its own job: a later step starts from the state an earlier step's
    job saved, and ends with the weights of a run from scratch, bit for bit."""
    scratch = weights(pretrain(corpus, tok_dir, tmp_path / "s6", tiny(), 6, **QUIET))
    states = tmp_path / "states"
    lines = []
    pretrain(corpus, tok_dir, tmp_path / "r2", tiny(), 2, states, **QUIET)
    resumed = pretrain(corpus, tok_dir, tmp_path / "r6", tiny(), 6, states, log=lines.append)
    assert "resumed from the saved state at step 2" in lines
    assert json.loads((resumed / "pretrain_info.json").read_text())["resumed_at_step"] == 2
    got = weights(resumed)
    assert all(torch.equal(scratch[k], got[k]) for k in scratch)
    # A state of another run (another seed) is never resumed from.
    lines.clear()
    pretrain(corpus, tok_dir, tmp_path / "o4", tiny(seed=3), 4, states, log=lines.append)
    assert not any("resumed" in line for line in lines)


def test_a_planted_state_runs_no_code(corpus, tok_dir, tmp_path):
    states = tmp_path / "states"
    states.mkdir()
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.mkdir, (marker,))

    torch.save({"fingerprint": "x", "payload": Evil()}, states / "step2.pt")
    lines = []
    pretrain(corpus, tok_dir, tmp_path / "p", tiny(), 4, states, log=lines.append)
    assert not marker.exists()
    assert any("ignoring unreadable pre-training state" in line for line in lines)


def test_schedule_warms_up_then_decays():
    cfg = PretrainConfig(steps=100, lr=1.0, warmup=0.1, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_a_step_outside_the_schedule_is_refused(corpus, tok_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"models\.tiny\.steps: step 7 is outside 1..6"):
        pretrain(corpus, tok_dir, tmp_path / "x", tiny(), 7, key="models.tiny", **QUIET)


def test_manifests_are_relocatable(tmp_path, monkeypatch):
    """An absolute path under the project root reads as its relative path; one elsewhere
    (another checkout's weights) is refused, naming it."""
    root = tmp_path / "project"
    (root / "resources").mkdir(parents=True)
    monkeypatch.chdir(root)
    inside = root / "resources/pretrained/tiny/step2"
    write_manifest("a.tsv", [Checkpoint("2", 8, "local", str(inside))])
    assert read_manifest("a.tsv")["2"].source == "resources/pretrained/tiny/step2"
    elsewhere = tmp_path / "old-checkout/resources/pretrained/tiny/step2"
    write_manifest("b.tsv", [Checkpoint("2", 8, "local", str(elsewhere))])
    with pytest.raises(ValueError, match=r"b\.tsv: checkpoint .*old-checkout.* lies outside"):
        read_manifest("b.tsv")
    hub = Checkpoint("2", 8, "abc123", "allenai/OLMo-1B-hf", "step2")
    write_manifest("c.tsv", [hub])
    assert read_manifest("c.tsv")["2"] == hub
