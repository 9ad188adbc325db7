"""Shared fixtures: a tiny tokenizer and OLMo built on the spot (no hub here)."""

import pytest

LINES = [
    f"{name} lives in {city}. {name} is a {job}. ### Input_1: ### Input_2: ### Inference: "
    "entailment neutral contradiction yes no ### Summary: ### Question: ### Answer:"
    for name in ("Ana", "Bo", "Cy", "Di", "Ed") for city in ("Rome", "Oslo", "Lima")
    for job in ("baker", "pilot", "nurse")
]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from ckptsweep.tokenizer import train_tokenizer

    return train_tokenizer(LINES * 4, [], 400, tmp_path_factory.mktemp("tok"))


@pytest.fixture
def tiny_model(tiny_tokenizer):
    """A fresh, randomly initialised tiny OLMo (seeded) for every test."""
    from ckptsweep.pretrain import PretrainConfig, build_model

    cfg = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    return build_model(cfg, tiny_tokenizer)
