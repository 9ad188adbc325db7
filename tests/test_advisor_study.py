"""The checkpoint advisor's workflow side, without Snakemake: the ``advisor`` block typed and
checked, the proxy's and the adaptive sweep's specs (`ckptsweep.study.advisor`), the proxy
job's split and step budget, the adaptive selection and recommendation, and the proxy's
measured cost."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ckptsweep.analysis.adaptive import recommend, select, spent_hours, summary
from ckptsweep.analysis.advisor import build_panels
from ckptsweep.analysis.advisor_settings import ADVISOR_FIGURES, ADVISOR_TABLES, AdvisorSettings
from ckptsweep.analysis.predictor_sources import add_proxy
from ckptsweep.analysis.predictors import add_step, costs, measured_hours, pool, validate
from ckptsweep.analysis.scores import scores_from_examples
from ckptsweep.errors import ConfigError
from ckptsweep.evaluate.config import ProxyConfig
from ckptsweep.evaluate.proxy import proxy_epochs, split
from ckptsweep.study import advisor
from ckptsweep.study.checks import check
from ckptsweep.study.config import Study
from tests.test_advisor import STEPS, grid, ones

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
ADAPTIVE = yaml.safe_load((ROOT / "config/demo_adaptive.yaml").read_text())


def study(edit=None, base=DEMO) -> Study:
    cfg = copy.deepcopy(base)
    if edit:
        edit(cfg)
    s = Study.from_config(cfg)
    check(s)
    return s


# ------------------------------------------------------------------ the block and its checks

def test_the_block_is_typed_with_the_settings_defaults():
    s = study()
    a = s.advisor
    assert isinstance(a, AdvisorSettings) and a.mode == "retrospective"
    assert a.proxy == ProxyConfig(data_fraction=0.1, steps_fraction=0.1, dev_size=50)
    assert a.adaptive is None and a.top_k == AdvisorSettings.top_k
    assert study(lambda c: c.pop("advisor")).advisor is None


@pytest.mark.parametrize("edit, key", [
    (lambda c: (c["advisor"].pop("proxy"), c["advisor"].update(mode="adaptive")),
     r"advisor\.proxy: required"),
    (lambda c: c["advisor"]["proxy"].update(tasks=["instruct"]), r"advisor\.proxy\.tasks"),
    (lambda c: c["advisor"]["proxy"].update(tasks=["arc_who"]), r"advisor\.proxy\.tasks"),
    (lambda c: c["advisor"].update(shots=[5]), r"advisor\.shots"),
    (lambda c: c["advisor"].update(n_params={"huge": 1e9}), r"advisor\.n_params"),
    (lambda c: c["advisor"]["proxy"].update(dev_size=1599), r"advisor\.proxy\.dev_size"),
    (lambda c: c["advisor"].update(epsilon=-0.1), r"advisor\.epsilon"),
    (lambda c: c["advisor"]["adaptive"].update(predictor="step"),
     r"advisor\.adaptive\.predictor"),
])
def test_bad_blocks_are_refused_naming_the_key(edit, key):
    base = ADAPTIVE if "adaptive" in key else DEMO
    with pytest.raises(ConfigError, match=key):
        study(edit, base)


# ------------------------------------------------------------------ specs

def test_the_proxy_runs_every_classification_and_generation_task_once():
    s = study()
    fts = advisor.proxy_finetunes(s, "tiny")
    # One per task (its first seed), instruct (chat) left out; the population has none.
    assert [f.name for f in fts] == ["nli-lr2e-3-s0", "para-lr2e-3-s0", "summ-lr2e-3-s0",
                                     "qg-lr2e-3-s0"]
    assert advisor.proxy_models(s) == ["tiny"]
    assert advisor.proxy_folders(s) == [f"results/advisor/proxy/tiny/{x}"
                                        for x in (50, 300, 600, 1000)]
    only = study(lambda c: c["advisor"]["proxy"].update(tasks=["summ"]))
    assert [f.dataset for f in advisor.proxy_finetunes(only, "tiny")] == ["summ"]


def test_the_proxy_spec_holds_what_changes_its_result():
    s = study()
    spec = json.loads(advisor.proxy(s, "tiny", "300"))
    assert spec["step"] == "300" and "tasks" not in spec["proxy"]
    assert spec["proxy"] == {"data_fraction": 0.1, "steps_fraction": 0.1, "dev_size": 50,
                             "formats": ["default"], "seed": 0}
    nli = next(t for t in spec["tasks"] if t["dataset"] == "nli")
    assert nli["variant"] == "nli-lr2e-3-s0" and nli["dev_set"] == "nli__dev"
    assert nli["train"] == "resources/data/nli/train.jsonl"
    assert nli["finetune"]["lr"] == 0.002 and nli["finetune"]["epochs"] == 2
    assert spec["evaluation"]["shots"] == [2] and "batch_size" not in spec["evaluation"]
    assert advisor.proxy_input(s, "tiny", "300")["manifest"] == "resources/checkpoints/tiny/300.tsv"
    runs = json.loads(advisor.proxy_runs(s))
    assert runs["eval_sets"]["nli__dev"]["of"] == "nli"
    assert runs["eval_sets"]["nli__dev"]["role_in"] == "id"
    assert len(runs["runs"]) == 4 * 4


def test_outputs_per_mode():
    s = study()
    names = {Path(p).stem for p in advisor.targets(s)}
    assert names == {*ADVISOR_TABLES, *ADVISOR_FIGURES}
    assert advisor.proxy_scores(s) == [advisor.PROXY_SCORES]
    assert advisor.transfer_metrics(s) == ["results/tables/transfer_metrics.csv"]
    assert set(advisor.gold_files(s)) == {"arc_who", "sciq_attr", "boolq_verify",
                                          "hellaswag_job"}
    settings = json.loads(advisor.settings(s))
    assert not set(settings) & set(advisor.SETTINGS_ONLY)
    AdvisorSettings.from_block(settings)  # what the advise rule builds
    a = study(base=ADAPTIVE)
    assert advisor.adaptive(a) and advisor.targets(a) == []
    spec = json.loads(advisor.adaptive_spec(a))
    assert spec["k"] == a.advisor.adaptive.k and spec["models"] == {"tiny": [50, 300, 600,
                                                                             1000]}
    assert advisor.last_predictions(a) == ["results/predictions/tiny/1000"]


def test_the_selection_names_the_second_phase(tmp_path):
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"models": {"tiny": {"steps": [300, 1000]}}}))
    assert advisor.selected_steps(path) == {"tiny": [300, 1000]}
    assert advisor.selected_predictions(path) == ["results/predictions/tiny/300",
                                                  "results/predictions/tiny/1000"]


# ------------------------------------------------------------------ the proxy job's budget

def test_the_dev_slice_is_held_out_and_fixed():
    records = [{"id": str(i)} for i in range(100)]
    cfg = ProxyConfig(data_fraction=0.25, dev_size=10, seed=3)
    dev, train = split(records, cfg, "nli")
    assert len(dev) == 10 and len(train) == round(0.25 * 90)
    assert not {r["id"] for r in dev} & {r["id"] for r in train}
    assert split(records, cfg, "nli") == (dev, train)  # the same at every checkpoint
    assert split(records, cfg, "para")[0] != dev  # each task its own slice
    with pytest.raises(ConfigError, match=r"advisor\.proxy\.dev_size"):
        split(records, ProxyConfig(dev_size=99), "nli", need=2)


def test_the_proxy_runs_a_fraction_of_the_full_steps():
    # 1,600 records x 2 epochs at batch 16 = 200 steps; 10 % of them on 155 records.
    epochs, steps, full = proxy_epochs(1600, 155, 2, 16, 0.1)
    assert (steps, full) == (20, 200)
    assert epochs == pytest.approx(20 / 10)  # 10 batches per epoch of 155 records
    assert proxy_epochs(10, 1, 1, 16, 0.01)[1] == 1  # at least one step


# ------------------------------------------------------------------ selection and report

def proxy_table(values: dict[int, dict[str, float]]) -> pd.DataFrame:
    rows = [{"model": "m", "step": s, "variant": f"{t}-lr1e-3-s0", "train_task": t,
             "metric": "accuracy", "value": v, "role": "id", "eval_set": f"{t}__dev"}
            for s, per in values.items() for t, v in per.items()]
    return pd.DataFrame(rows)


def test_the_top_k_besides_the_last_and_the_last_are_selected():
    proxy = proxy_table({100: {"a": 0.2, "b": 0.3}, 200: {"a": 0.9, "b": 0.8},
                         300: {"a": 0.5, "b": 0.9}, 400: {"a": 0.1, "b": 0.1}})
    sel = select(proxy, {"m": [400, 100, 200, 300]}, k=1)["models"]["m"]
    # 200: ranks 1 and 2 (mean 1.5); 300: 2 and 1 (1.5), lower mean proxy score; 400 last.
    assert sel["top_k"] == [200] and sel["steps"] == [200, 400] and sel["last"] == 400
    assert select(proxy, {"m": [100, 200, 300, 400]}, k=2)["models"]["m"]["steps"] == [
        200, 300, 400]
    assert select(proxy, {"m": [100, 200, 300, 400]}, k=9)["models"]["m"]["steps"] == [
        100, 200, 300, 400]
    with pytest.raises(ValueError, match="500"):
        select(proxy, {"m": [100, 500]}, k=1)


def test_the_recommendation_and_its_cost(tmp_path):
    n = 200
    ks = dict(zip(STEPS, (60, 150, 120, 100, 90), strict=True))
    full_ex = grid({s: ones(n, k) for s, k in ks.items()})
    full = scores_from_examples(full_ex, seed=0, n_boot=100)
    ran = [200, 500]  # the proxy's pick and the last
    ex = full_ex[full_ex["step"].isin(ran)]
    scores = scores_from_examples(ex, seed=0, n_boot=100)
    selection = {"models": {"m": {"steps": ran, "top_k": [200], "last": 500}}}
    table = recommend(scores, ex, selection, AdvisorSettings(n_boot=200), None, full)
    row = table.iloc[0]
    assert row["recommended_step"] == 200 and row["last_step"] == 500
    assert row["last_regret"] == pytest.approx((150 - 90) / n)
    assert row["recommended_low"] < row["recommended_value"] < row["recommended_high"]
    assert row["full_best_step"] == 200 and row["regret_vs_full_best"] == 0
    assert bool(row["found_full_best"])
    bench = tmp_path / "benchmarks"
    for rule, name in (("proxy", "5.tsv"), ("finetune", "5/t-lr1e-3-s0.tsv")):
        (bench / rule / "m" / Path(name).parent).mkdir(parents=True, exist_ok=True)
        (bench / rule / "m" / name).write_text("s\tmax_rss\n360\t1\n")
    spent = spent_hours(bench, ["m"])
    assert spent == {"proxy": 0.1, "finetune": 0.1, "evaluate": 0.0}
    out = summary(table, selection, spent, {"finetune": 1.0, "evaluate": 1.0, "basis": "x"})
    assert out["cost"]["fraction_of_full_grid"] == pytest.approx(0.1)
    assert out["cost"]["finetune_fraction"] == pytest.approx(0.2)
    assert out["in_domain"][0]["recommended_step"] == 200


def test_the_proxy_costs_what_its_jobs_measured(tmp_path):
    n = 100
    ft = {s: ones(n, k) for s, k in zip(STEPS, (10, 20, 30, 40, 50), strict=True)}
    ex = grid(ft)
    scores = scores_from_examples(ex, seed=0, n_boot=100)
    proxy = scores_from_examples(grid(ft, eval_set="t__dev"), 0, 100)
    bench = tmp_path / "benchmarks"
    for s in STEPS:
        for rule, name in (("finetune", f"{s}/t-lr1e-3-s0.tsv"), ("evaluate", f"{s}.tsv"),
                           ("proxy", f"{s}.tsv")):
            path = bench / rule / "m" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"s\tmax_rss\n{360 if rule == 'proxy' else 3600}\t1\n")
    settings = AdvisorSettings(n_boot=100)
    panels = build_panels(scores, ex, settings)
    add_proxy(panels, proxy, settings)
    add_step(panels)
    unit = costs(panels, scores, bench, settings)
    measured = measured_hours(bench, proxy, settings)
    assert measured["proxy_finetune"][("m", 100)] == pytest.approx(0.1)
    _, cells = validate(panels, settings, unit[:2], measured)
    pooled = pool(panels, cells, settings).set_index("predictor")
    # A fine-tune (1 h) and its variant's share of the evaluation (1 h) per checkpoint.
    assert pooled.loc["proxy_finetune", "cost_fraction"] == pytest.approx(0.1 / 2)
    assert np.isclose(pooled.loc["proxy_finetune", "decision_accuracy"], 1.0)


def test_the_bits_per_byte_job_scores_the_bases_generation_sets():
    s = study()
    assert advisor.bpb_sets(s, "tiny") == {"summ": ["default", "io", "instruct"],
                                           "summ_ood": ["default"],
                                           "qg": ["default", "io", "instruct"],
                                           "qg_ood": ["default"]}
    assert advisor.bpb_files(s) == [f"results/advisor/bpb/tiny/{x}.parquet"
                                    for x in (50, 300, 600, 1000)]
    spec = json.loads(advisor.bpb(s, "tiny", "600"))
    assert [x["name"] for x in spec["sets"]] == ["qg", "qg_ood", "summ", "summ_ood"]
    assert spec["model"] == "tiny" and spec["step"] == "600"
    assert "resources/data/qg/train.jsonl" in advisor.bpb_input(s, "tiny", "600")["data"]
    off = study(lambda c: c["advisor"].update(bpb=False))
    assert advisor.bpb_files(off) == [] and advisor.bpb_sets(off, "tiny") == {}


def test_share_links_outputs_with_their_records(tmp_path):
    from base64 import urlsafe_b64encode

    from ckptsweep.operate.migrate import record
    from ckptsweep.operate.share import share

    src, dst = tmp_path / "full", tmp_path / "adaptive"
    out = "resources/pretrained/tiny/step50"
    (src / out).mkdir(parents=True)
    (src / out / "model.safetensors").write_text("weights")
    meta = src / ".snakemake" / "metadata"
    meta.mkdir(parents=True)
    for path in (out, "resources/other"):
        (meta / urlsafe_b64encode(path.encode()).decode()).write_text(
            json.dumps({"params": [repr('{"step": 50}')]}))
    assert share(src, dst, ["resources/pretrained/tiny"], log=lambda _: None) == [out]
    copied = dst / out / "model.safetensors"
    assert copied.read_text() == "weights"
    assert copied.stat().st_ino == (src / out / "model.safetensors").stat().st_ino
    assert record(dst, out) == record(src, out) and record(dst, "resources/other") is None
    share(src, dst, ["resources/pretrained/tiny"], log=lambda _: None)  # again: left as is
