"""Inputs are checked where they are read: a damaged or missing model file, a data file
with fewer records than the config asks for. Each error names the file and the variant or
dataset, and a job that fails leaves neither a temporary folder nor an output that looks
finished."""

from __future__ import annotations

import json

import pytest

from ckptsweep.checkpoints.load import load
from ckptsweep.checkpoints.manifest import Checkpoint, write_manifest
from ckptsweep.evaluate.job import evaluate_checkpoint

from .test_finetune import records

QUIET = {"log": lambda _: None}


@pytest.fixture
def study(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    """A base checkpoint, a fine-tune folder, an NLI eval set, and the evaluation spec of
    both variants, in a project root."""
    monkeypatch.chdir(tmp_path)
    for name in ("ckpt", "ft"):
        tiny_model.save_pretrained(tmp_path / name)
        tiny_tokenizer.save_pretrained(tmp_path / name)
    write_manifest("m.tsv", [Checkpoint("5", 640, "local", "ckpt")])
    recs = records(24)
    for split, part in (("train", recs[:16]), ("test", recs[16:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    sets = [{"name": "nli", "task": "nli", "test_path": "test.jsonl",
             "pool_path": "train.jsonl", "formats": ["default"]}]
    spec = {"step": "5", "variants": [{"name": "base", "model": None, "sets": sets},
                                      {"name": "nli-lr1e-3-s0", "model": "ft", "sets": sets}],
            "evaluation": {"shots": [1], "seed": 1, "separator": "<|endoftext|>",
                           "max_new_tokens": 4, "batch_size": 8}}
    return tmp_path, spec


def test_the_job_evaluates_both_variants(study):
    root, spec = study
    evaluate_checkpoint(spec, "m.tsv", "out", cache_dir="", **QUIET)
    assert sorted(p.name for p in (root / "out").iterdir()) == ["base.parquet",
                                                                "nli-lr1e-3-s0.parquet"]


@pytest.mark.parametrize("damage, message", [
    (lambda ft: (ft / "model.safetensors").write_bytes(
        (ft / "model.safetensors").read_bytes()[:100]), r"ft/model\.safetensors is damaged"),
    (lambda ft: (ft / "model.safetensors").unlink(), r"ft holds no \*\.safetensors weights"),
    (lambda ft: (ft / "config.json").write_text("{"), r"ft/config\.json is missing or damaged"),
    (lambda ft: [p.unlink() for p in ft.iterdir()] and ft.rmdir(),
     r"checkpoint folder ft is missing"),
])
def test_a_damaged_model_is_named_and_leaves_nothing_behind(study, damage, message):
    root, spec = study
    damage(root / "ft")
    with pytest.raises((ValueError, FileNotFoundError),
                       match=r"variant nli-lr1e-3-s0 of step 5: .*" + message):
        evaluate_checkpoint(spec, "m.tsv", "out", cache_dir="", **QUIET)
    # The base variant was scored before the failure: nothing of it may look finished,
    # and no temporary folder stays.
    assert not (root / "out").exists()
    assert not [p for p in root.iterdir() if ".tmp" in p.name]


def test_a_pickled_weights_file_is_never_loaded(study):
    """Only safetensors are read: a pytorch_model.bin (a pickle) beside no safetensors is
    refused, not unpickled."""
    root, _ = study
    (root / "ft" / "model.safetensors").rename(root / "ft" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no pickle is loaded"):
        load(root / "ft", what="the fine-tune")


def test_a_short_data_file_fails_the_prepare_job_naming_it(tmp_path):
    """A split with fewer usable records than datasets.<d>.n_test asks for."""
    from ckptsweep.data.snapshots import prefetch_dataset, prepare_snapshot

    raw = tmp_path / "raw" / "nli"
    raw.mkdir(parents=True)
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3, "idx": i}
            for i in range(10)]
    for split in ("train", "test"):
        (raw / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prefetch_dataset({"dataset": "nli", "source": "world"}, tmp_path / "snap",
                     raw=tmp_path / "raw")
    spec = {"dataset": "nli", "schema": "mnli", "task": "nli", "n_train": 5, "n_test": 50,
            "evaluated": True, "seed": 42}
    with pytest.raises(ValueError, match=r"datasets\.nli\.n_test asks for 50 records but "
                                         r".*snap/test holds 10"):
        prepare_snapshot(spec, tmp_path / "snap", tmp_path / "out")
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
