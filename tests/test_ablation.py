"""The prediction-method ablation (the paper's Table 2): its grid, the `ckptsweep ablation`
verb on a tiny model, its table, and its wiring into the workflow (dry runs only)."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from ckptsweep.analysis import ablation as AB
from ckptsweep.analysis import names as NAMES
from ckptsweep.analysis.settings import GPUS_PER_JOB
from ckptsweep.checkpoints.manifest import Checkpoint, write_manifest
from ckptsweep.cli import main
from ckptsweep.evaluate.schema import ABLATION_SCHEMA
from ckptsweep.study import checks
from ckptsweep.study import grid as study
from ckptsweep.study.config import Study

from .test_finetune import records

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config/demo.yaml"
TINY = ROOT / "tests/config/tiny.yaml"
BIN = Path(sys.executable).parent


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------ the grid

def test_ablation_grid_of_the_demo():
    raw = load(DEMO)
    cfg = Study.from_config(raw)
    plan = study.ablation(cfg)
    assert plan["methods"] == ["free", "constrained", "tokenprob", "loglik"]
    assert plan["eval_sets"] == ["nli", "para"]  # the in-domain classification sets
    assert plan["variants"] == [
        {"name": "base", "sets": ["nli", "para"]},
        {"name": "nli-lr2e-3-s0", "sets": ["nli"]}, {"name": "para-lr2e-3-s0", "sets": ["para"]}]
    assert study.final_step(cfg, "tiny") == "1000"
    del raw["analysis"]["ablation"]
    assert study.ablation(Study.from_config(raw)) is None


def test_ablation_defaults_and_explicit_sets():
    raw = load(TINY)
    assert raw["analysis"]["ablation"] == {}
    plan = study.ablation(Study.from_config(raw))
    assert plan["methods"] == list(NAMES.ABLATION_METHODS)
    assert plan["eval_sets"] == ["nli"]
    raw["analysis"]["ablation"] = {"eval_sets": ["nli_ood"], "methods": ["free"]}
    cfg = Study.from_config(raw)
    checks.check(cfg)
    plan = study.ablation(cfg)
    assert plan["methods"] == ["free"]
    # nli_ood's `of` is nli: the nli fine-tunes are scored on it, the others are not
    assert [v["name"] for v in plan["variants"]] == ["base", "nli-lr1e-3-s0", "nli-lr1e-3-s1"]


@pytest.mark.parametrize("name", ["summ", "arc_who", "nope"])
def test_ablation_sets_must_be_classification_eval_sets(name):
    cfg = load(TINY)
    cfg["analysis"]["ablation"] = {"eval_sets": [name]}
    with pytest.raises(ValueError, match=r"analysis\.ablation\.eval_sets: .*" + name):
        checks.check(Study.from_config(cfg))


def test_ablation_without_a_classification_set_is_named():
    cfg = load(TINY)
    for name in ("nli", "nli_ood"):
        del cfg["datasets"][name]
    del cfg["finetune"]["tasks"]["nli"]
    with pytest.raises(ValueError, match=r"analysis\.ablation\.eval_sets"):
        checks.check(Study.from_config(cfg))


# ------------------------------------------------------------------ the CLI verb

@pytest.fixture
def ablation_job(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    """A base checkpoint with its manifest, a 'fine-tune' folder and an NLI eval set, in
    the project root (a manifest's local checkpoints lie under it)."""
    monkeypatch.chdir(tmp_path)
    for name in ("ckpt", "ft"):
        tiny_model.save_pretrained(tmp_path / name)
        tiny_tokenizer.save_pretrained(tmp_path / name)
    write_manifest(tmp_path / "m.tsv", [Checkpoint("5", 640, "local", str(tmp_path / "ckpt"))])
    recs = records(30)
    for split, part in (("train", recs[:20]), ("test", recs[20:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    spec = {"model": "tiny", "step": "5",
            "sets": [{"name": "nli", "task": "nli", "test_path": str(tmp_path / "test.jsonl"),
                      "pool_path": str(tmp_path / "train.jsonl"), "formats": ["default"]}],
            "variants": [{"name": "base", "sets": ["nli"], "model": None},
                         {"name": "nli-lr1e-3-s0", "sets": ["nli"],
                          "model": str(tmp_path / "ft")}],
            "methods": ["free", "loglik", "tokenprob"],
            "evaluation": {"shots": [1], "seed": 1, "separator": "<|endoftext|>",
                           "max_new_tokens": 8, "batch_size": 4, "method": "loglik"}}
    return tmp_path, spec


def test_ablation_verb_loads_each_variant_once_and_scores_every_method(ablation_job):
    root, spec = ablation_job
    out = root / "ablation.parquet"
    threads = torch.get_num_threads()
    try:
        main(["ablation", "--spec", json.dumps(spec), "--manifest", str(root / "m.tsv"),
              "--threads", "1", "--cache-dir", "", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    df = pd.read_parquet(out)
    assert list(df.columns) == ABLATION_SCHEMA.names
    assert len(df) == 2 * 3 * 10  # variants x methods x test examples
    assert set(df["model"]) == {"tiny"} and set(df["step"]) == {5}
    counts = df.groupby(["variant", "method"]).size()
    assert counts.to_dict() == {(v, m): 10 for v in ("base", "nli-lr1e-3-s0")
                                for m in ("free", "loglik", "tokenprob")}
    assert set(df["shots"]) == {1} and set(df["format"]) == {"default"}
    # the same weights in both folders: the same predictions, method by method
    a = df[df["variant"] == "base"].reset_index(drop=True)
    b = df[df["variant"] != "base"].reset_index(drop=True)
    pd.testing.assert_series_equal(a["prediction"], b["prediction"])
    table = AB.ablation_table(df, seed=0, n_boot=100)
    assert table["variant"].tolist()[:3] == ["base"] * 3
    assert table["method"].tolist()[:3] == ["free", "tokenprob", "loglik"]
    assert (table["n"] == 10).all()


def test_ablation_verb_rejects_an_unknown_method(ablation_job):
    root, spec = ablation_job
    spec["methods"] = ["guess"]
    with pytest.raises(SystemExit, match="analysis.ablation.methods"):
        main(["ablation", "--spec", json.dumps(spec), "--manifest", str(root / "m.tsv"),
              "--out", str(root / "x.parquet")])
    assert not (root / "x.parquet").exists()


# ------------------------------------------------------------------ the table

def hand_made() -> pd.DataFrame:
    """Base and one fine-tune, two methods, 10 examples; plus a row the table must ignore."""
    rows = []
    acc = {("base", "loglik"): 0.6, ("base", "free"): 0.2, ("nli-lr1e-3-s0", "loglik"): 0.9,
           ("nli-lr1e-3-s0", "free"): 0.8}
    for (variant, method), a in acc.items():
        for i in range(10):
            rows.append({"model": "tiny", "step": 1000, "variant": variant, "eval_set": "nli",
                         "shots": 2, "method": method, "format": "default", "id": f"n{i}",
                         "metric": "accuracy", "score": float(i < round(a * 10))})
    rows.append({**rows[0], "metric": "accuracy_norm", "score": 1.0})
    return pd.DataFrame(rows).sample(frac=1, random_state=0)  # order must not matter


def test_ablation_table_on_a_hand_made_frame():
    table = AB.ablation_table(hand_made(), seed=0, n_boot=200)
    assert list(table.columns) == AB.ABLATION_COLUMNS
    assert list(table.columns) == ["model", "step", "variant", "eval_set", "shots", "method",
                                   "accuracy", "ci_low", "ci_high", "n"]
    assert table[["variant", "method"]].values.tolist() == [
        ["base", "free"], ["base", "loglik"], ["nli-lr1e-3-s0", "free"],
        ["nli-lr1e-3-s0", "loglik"]]
    assert table["accuracy"].tolist() == pytest.approx([0.2, 0.6, 0.8, 0.9])
    assert (table["n"] == 10).all()
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    assert (table["ci_high"] - table["ci_low"] > 0).all()
    again = AB.ablation_table(hand_made().sample(frac=1, random_state=1), seed=0, n_boot=200)
    pd.testing.assert_frame_equal(table, again)  # seeded, and independent of row order


# ------------------------------------------------------------------ GPU hours

def test_gpu_defaults_match_the_schema():
    schema = load(ROOT / "workflow/schemas/config.schema.yaml")
    analysis = schema["properties"]["analysis"]["properties"]
    assert analysis["gpus_per_job"]["default"] == GPUS_PER_JOB
    assert analysis["ablation"]["properties"]["methods"]["default"] == \
        list(NAMES.ABLATION_METHODS)


# ------------------------------------------------------------------ workflow (dry runs)

def dry(config: Path) -> str:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", "--cores", "2",
                           "--configfile", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def rule_count(out: str, rule: str) -> int:
    m = re.search(rf"^{rule}\s+(\d+)$", out.split("Job stats:", 1)[1], re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.workflow
def test_dry_run_has_one_ablation_job_per_model_and_its_outputs():
    out = dry(TINY)
    assert rule_count(out, "ablation") == 1
    for path in ("results/ablation/tiny.parquet", "results/tables/ablation.csv",
                 "results/tables/gpu_hours.csv", "results/figures/ablation.png",
                 "results/models/tiny/30/nli-lr1e-3-s1"):
        assert path in out, path
    inputs = re.search(r"rule ablation:\n\s+input: (.*)", out).group(1).split(", ")
    # the base's manifest, only the fine-tunes trained on an ablation set's `of`, its data
    assert inputs == ["resources/checkpoints/tiny/30.tsv", "results/models/tiny/30/nli-lr1e-3-s0",
                      "results/models/tiny/30/nli-lr1e-3-s1", "resources/data/nli/train.jsonl",
                      "resources/data/nli/test.jsonl"]


@pytest.mark.workflow
def test_without_the_block_there_is_no_ablation(tmp_path):
    cfg = copy.deepcopy(load(TINY))
    del cfg["analysis"]["ablation"]
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = dry(path)
    assert rule_count(out, "ablation") == 0
    assert "ablation" not in out
    assert "results/tables/gpu_hours.csv" in out
    assert rule_count(out, "tables") == 1
