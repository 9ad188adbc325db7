"""Shared fixtures: a tiny tokenizer and OLMo built on the spot (no hub here)."""

import json

import pytest

LINES = [
    f"{name} lives in {city}. {name} is a {job}. ### Input_1: ### Input_2: ### Inference: "
    "entailment neutral contradiction yes no ### Summary: ### Question: ### Answer:"
    for name in ("Ana", "Bo", "Cy", "Di", "Ed") for city in ("Rome", "Oslo", "Lima")
    for job in ("baker", "pilot", "nurse")
]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from ckptsweep.data.tokenizer import train_tokenizer

    return train_tokenizer(LINES * 4, [], 400, tmp_path_factory.mktemp("tok"))


@pytest.fixture
def tiny_model(tiny_tokenizer):
    """A fresh, randomly initialised tiny OLMo (seeded) for every test."""
    from ckptsweep.train.pretrain import PretrainConfig, build_model

    cfg = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    return build_model(cfg, tiny_tokenizer)


@pytest.fixture
def job(tiny_tokenizer, tiny_model, tmp_path, monkeypatch):
    """A fine-tune job's inputs (test_resume, test_warm): a checkpoint on disk, its
    manifest and a training file, what the CLI reads, from the project root (a manifest's
    local checkpoints lie under it)."""
    from ckptsweep.checkpoints.manifest import Checkpoint, write_manifest

    from .test_finetune import records

    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt"
    tiny_model.save_pretrained(ckpt)
    tiny_tokenizer.save_pretrained(ckpt)
    write_manifest(tmp_path / "manifest.tsv", [Checkpoint("0", 0, "local", str(ckpt))])
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records(48)))
    return tmp_path


@pytest.fixture
def cxx_compiler():
    """The compiled paths (``compile: true``, meant for GPUs) run here on CPU through the
    same torch.compile / inductor code generation, which needs a C++ compiler: without
    one their tests skip loudly (fail in CI)."""
    import os
    import shutil
    import warnings

    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        msg = ("NO C++ COMPILER: torch.compile on CPU (inductor) needs g++ or clang++ "
               "(apt install g++); the compiled-path tests did not run")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)


@pytest.fixture
def dynamo_counters(cxx_compiler):
    """torch.compile's counters in this process (graphs compiled, graph breaks), from a
    clean start."""
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()
