"""Cross-stage transfer analysis: correlations, calibration and the population config,
on constructed populations whose answers are known."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ckptsweep.analysis import names as NAMES
from ckptsweep.analysis import transfer_population as TP
from ckptsweep.analysis import transfer_tables as TT
from ckptsweep.errors import ConfigError
from ckptsweep.study import checks
from ckptsweep.study import grid as study
from ckptsweep.study import transfer as transfer_config
from ckptsweep.study.config import Study, load
from ckptsweep.train.pretrain import mix_documents

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"ece_bins": 10, "seed": 0, "n_boot": 300, "alpha": 0.05, "scales": ["s", "l"],
            "shots": 0, "format": "default"}


# ------------------------------------------------------------------ correlations

def test_identical_rankings_correlate_one_and_reversed_minus_one():
    x = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    assert TP.spearman(x, x * 2 + 1) == pytest.approx(1.0)
    assert TP.kendall(x, x ** 3) == pytest.approx(1.0)
    assert TP.spearman(x, -x) == pytest.approx(-1.0)
    assert TP.kendall(x, 1 - x) == pytest.approx(-1.0)


def test_ties_match_scipy_and_constant_rankings_are_nan():
    x = np.array([1, 2, 2, 3, 3, 3, 4.0])
    y = np.array([2, 1, 2, 4, 3, 3, 5.0])
    assert TP.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert TP.kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert math.isnan(TP.spearman(x, np.ones(7)))
    assert math.isnan(TP.kendall(np.ones(7), y))


def test_rows_are_independent_samples():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (50, 8)).astype(float), rng.integers(0, 4, (50, 8)).astype(float)
    rho, tau = TP.spearman(a, b), TP.kendall(a, b)
    for i in range(50):
        want = stats.spearmanr(a[i], b[i]).statistic
        assert rho[i] == pytest.approx(want) if not np.isnan(want) else np.isnan(rho[i])
        want = stats.kendalltau(a[i], b[i]).statistic
        assert tau[i] == pytest.approx(want) if not np.isnan(want) else np.isnan(tau[i])


# ------------------------------------------------------------------ calibration

def test_ece_of_a_perfectly_calibrated_predictor_is_zero():
    # 0.75 confident on 8 examples, 6 right; 0.35 confident on 20, 7 right.
    conf = np.array([0.75] * 8 + [0.35] * 20)
    correct = np.array([1] * 6 + [0] * 2 + [1] * 7 + [0] * 13)
    assert TP.ece(conf, correct, 10) == pytest.approx(0.0)


def test_ece_of_a_miscalibrated_predictor_matches_the_hand_computation():
    conf = np.array([0.9, 0.9, 0.6, 0.6, 0.3, 1.0])
    correct = np.array([1, 0, 1, 1, 0, 1])
    # bin 9: {0.9, 0.9, 1.0}, acc 2/3, conf 2.8/3; bin 6: acc 1, conf 0.6; bin 3: acc 0,
    # conf 0.3.  ECE = 3/6 |2/3 - 2.8/3| + 2/6 |1 - 0.6| + 1/6 |0 - 0.3|
    hand = 3 / 6 * abs(2 / 3 - 2.8 / 3) + 2 / 6 * 0.4 + 1 / 6 * 0.3
    assert TP.ece(conf, correct, 10) == pytest.approx(hand)
    # Two bins: [0, .5) holds 0.3; [.5, 1] the rest (acc 4/5, conf 4.0/5).
    assert TP.ece(conf, correct, 2) == pytest.approx(1 / 6 * 0.3 + 5 / 6 * abs(0.8 - 0.8))
    rel = TP.reliability(conf, correct, 10)
    assert rel.loc[9, "n"] == 3 and rel.loc[9, "accuracy"] == pytest.approx(2 / 3)
    # Vectorised along the last axis.
    both = TP.ece(np.stack([conf, conf]), np.stack([correct, correct]), 10)
    assert both == pytest.approx([hand, hand])


def test_brier_confidence_and_gold_probability_by_hand():
    lps = [np.log([0.7, 0.2, 0.1]), np.log([0.7, 0.2, 0.1]) + 3.0]  # shifted: same probs
    v = TP.example_values(lps, [0, 1])
    assert v["accuracy"].tolist() == [1.0, 0.0]
    assert v["confidence"].tolist() == pytest.approx([0.7, 0.7])
    assert v["gold_prob"].tolist() == pytest.approx([0.7, 0.2])
    assert v["brier"].tolist() == pytest.approx([0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2,
                                                 0.7 ** 2 + 0.8 ** 2 + 0.1 ** 2])


# ------------------------------------------------------------------ populations

def population(n_members=10, n_examples=200, seed=0, post_noise=0.0, benches=("b1", "b2")):
    """Members with planted accuracies (evenly spaced), drawn per example at both stages;
    choice log-probabilities that make the model right exactly when drawn correct."""
    rng = np.random.default_rng(seed)
    rows = []
    levels = np.linspace(0.3, 0.8, n_members)
    for i, p in enumerate(levels):
        scale = "s" if i % 2 == 0 else "l"
        for stage, shift in (("pre", 0.0), ("post", 0.1)):
            for b in benches:
                right = rng.random(n_examples) < min(p + shift + rng.normal(0, post_noise), 1)
                for k in range(n_examples):
                    c = float(rng.uniform(0.3, 0.95))
                    rows.append({"member": f"m{i}@1", "model": f"m{i}", "step": "1",
                                 "mixture": f"mix{i // 2}", "scale": scale, "stage": stage,
                                 "eval_set": b, "category": "cat", "id": f"e{k:04d}",
                                 "accuracy": float(right[k]), "confidence": c,
                                 "gold_prob": c if right[k] else (1 - c) / 3,
                                 "brier": (1 - c) ** 2 if right[k] else c ** 2 + 1})
    return pd.DataFrame(rows)


def test_planted_ordering_is_recovered_from_noisy_examples():
    pop = TP.Population(population(), ["s", "l"], 10)
    r = TP.correlate(pop, ["b1"], TP.ALL, "accuracy", seed=0, n_boot=300)
    assert r["n_members"] == 10
    assert r["spearman"] > 0.8
    assert r["spearman_model_low"] <= r["spearman"] <= r["spearman_model_high"]
    assert r["spearman_example_low"] <= r["spearman_example_high"]
    assert -1 <= r["kendall_model_low"] <= r["kendall"] <= r["kendall_model_high"] <= 1
    # Per category (mean over its benchmarks) too.
    assert TP.correlate(pop, ["b1", "b2"], "all", "accuracy", n_boot=100)["spearman"] > 0.8


def test_pure_noise_does_not_transfer():
    ex = population(n_examples=100)
    # Same accuracy level for everyone: rankings are noise.
    ex["accuracy"] = (np.random.default_rng(1).random(len(ex)) < 0.5).astype(float)
    pop = TP.Population(ex, ["s", "l"], 10)
    r = TP.correlate(pop, ["b1"], TP.ALL, "accuracy", n_boot=300)
    assert r["spearman_example_low"] < 0 < r["spearman_example_high"]


def test_same_seed_same_numbers_and_every_table():
    ex = population(n_members=6, n_examples=60)
    a = TT.analyse(ex, SETTINGS)
    b = TT.analyse(ex, SETTINGS)
    assert set(a) == set(NAMES.TRANSFER_TABLES)
    for name in NAMES.TRANSFER_TABLES:
        pd.testing.assert_frame_equal(a[name], b[name])
    c = TT.analyse(ex, {**SETTINGS, "seed": 1})["transfer_correlation"]
    assert not np.allclose(a["transfer_correlation"]["spearman_model_low"],
                           c["spearman_model_low"], equal_nan=True)
    pd.testing.assert_series_equal(a["transfer_correlation"]["spearman"], c["spearman"])
    corr = a["transfer_correlation"]
    assert set(corr["scale"]) == {"s", "l", "all"}
    assert set(corr["unit_type"]) == {"benchmark", "category", "all"}
    assert set(a["transfer_scales"]["scale_b"]) == {"l"}
    assert a["transfer_agreement"]["within"].all()  # both benchmarks in one category


def test_member_metrics_are_the_per_example_means():
    ex = population(n_members=4, n_examples=30)
    m = TT.analyse(ex, SETTINGS)["transfer_metrics"]
    row = m[(m["member"] == "m2@1") & (m["stage"] == "post") & (m["eval_set"] == "b2")].iloc[0]
    g = ex[(ex["member"] == "m2@1") & (ex["stage"] == "post") & (ex["eval_set"] == "b2")]
    assert row["accuracy"] == pytest.approx(g["accuracy"].mean())
    assert row["brier"] == pytest.approx(g["brier"].mean())
    assert row["ece"] == pytest.approx(TP.ece(g["confidence"], g["accuracy"], 10))


def test_members_must_share_examples():
    ex = population(n_members=4, n_examples=20)
    ex = ex.drop(index=ex.index[(ex["member"] == "m1@1") & (ex["id"] == "e0003")])
    with pytest.raises(ValueError, match="same examples"):
        TP.Population(ex, ["s", "l"], 10)


def test_load_examples_joins_gold_and_averages_seeds(tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps({"id": f"e{k}", "label": k % 2}) for k in range(4)))
    runs = []
    for stage, variants in (("pre", ["base"]), ("post", ["ft-s0", "ft-s1"])):
        for v in variants:
            right = v != "ft-s1"
            lps = [[0.0, -2.0] if (k % 2 == 0) == right else [-2.0, 0.0] for k in range(4)]
            path = tmp_path / f"{v}.parquet"
            pd.DataFrame({"eval_set": "b", "format": "default", "shots": 0,
                          "id": [f"e{k}" for k in range(4)], "label_logprobs": lps}
                         ).to_parquet(path)
            runs.append({"member": "m@1", "model": "m", "step": "1", "mixture": "x",
                         "scale": "s", "stage": stage, "variant": v, "path": str(path)})
    ex = TP.load_examples(runs, {"b": "c"}, TP.gold_indices({"b": test}), shots=0)
    assert ex[ex["stage"] == "pre"]["accuracy"].tolist() == [1.0] * 4
    assert ex[ex["stage"] == "post"]["accuracy"].tolist() == [0.5] * 4  # seeds averaged
    with pytest.raises(ValueError, match="no default 2-shot rows"):
        TP.load_examples(runs, {"b": "c"}, {}, shots=2)


# ------------------------------------------------------------------ config

@pytest.fixture()
def demo():
    return yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def test_demo_population_has_four_mixtures_and_eight_members_per_scale(demo):
    demo = Study.from_config(demo)
    members = transfer_config.members(demo)
    assert len({m["mixture"] for m in members}) >= 4
    for scale in transfer_config.scales(demo):
        assert sum(m["scale"] == scale for m in members) >= 8
    runs = transfer_config.runs(demo)
    assert len(runs) == 2 * len(members)
    assert {r["variant"] for r in runs} == {"base", "instruct-lr2e-3-s0"}
    # Members are evaluated on the benchmarks only; the AMURO model as before.
    plan = study.eval_plan(demo, "base", "pop_bio_s")
    assert sorted(plan) == sorted(transfer_config.categories(demo))
    assert len(study.eval_plan(demo, "base", "tiny")) == len(study.eval_sets(demo))
    assert study.analysis_models(demo) == ["tiny"]
    checks.check(demo)


@pytest.mark.parametrize("edit, key", [
    (lambda t, c: t.update(sft="nope"), "transfer.sft"),
    (lambda t, c: t["categories"].update(x=["summ"]), "transfer.categories.x"),
    (lambda t, c: t["categories"].update(x=["nosuchset"]), "transfer.categories.x"),
    (lambda t, c: t["categories"].update(x=["arc_who"]), "transfer.categories.x"),
    (lambda t, c: t["models"].update(ghost={"mixture": "a", "scale": "small"}),
     "transfer.models.ghost"),
    (lambda t, c: t["models"]["pop_bio_s"].update(steps=[7]), "transfer.models.pop_bio_s.steps"),
    (lambda t, c: c["models"]["pop_bio_s"].update(eval_sets=["arc_who"]),
     "transfer.models.pop_bio_s"),
    (lambda t, c: c["models"]["pop_bio_s"].update(finetune=[]), "transfer.models.pop_bio_s"),
    (lambda t, c: t.update(shots=5), "transfer.shots"),
    (lambda t, c: t.update(scales=["small"]), "transfer.scales"),
    (lambda t, c: t.update(min_members=9), "transfer.models"),
    (lambda t, c: c["models"]["tiny"].update(eval_sets=["zzz"]), "models.tiny.eval_sets"),
    (lambda t, c: c["analysis"].update(models=["zzz"]), "analysis.models"),
])
def test_config_errors_name_the_key(demo, edit, key):
    cfg = copy.deepcopy(demo)
    edit(cfg["transfer"], cfg)
    with pytest.raises(ConfigError) as err:
        checks.check(Study.from_config(cfg))
    assert err.value.key == key


def test_schema_names_a_missing_label(demo):
    cfg = copy.deepcopy(demo)
    del cfg["transfer"]["models"]["pop_two_l"]["scale"]
    with pytest.raises(ConfigError, match=r"^transfer\.models\.pop_two_l\.scale: required"):
        load(cfg)
    cfg = copy.deepcopy(demo)
    cfg["models"]["pop_two_l"]["pretrain"]["mixture"]["web"] = 1.0
    # (the demo's two-people models share one mixture block: a YAML anchor)
    with pytest.raises(ConfigError, match=r"^models\.pop_two_.\.pretrain\.mixture: 'web' is not"):
        load(cfg)


def test_datadecide_example_config_is_consistent():
    cfg = Study.from_config(yaml.safe_load((ROOT / "config/transfer_datadecide.yaml").read_text()))
    checks.check(cfg)
    members = transfer_config.members(cfg)
    assert len({m["mixture"] for m in members}) >= 4
    assert len({m["scale"] for m in members}) >= 2
    for model in cfg.transfer.models:
        assert cfg.models[model].source == "hub"


# ------------------------------------------------------------------ mixtures

def test_mixture_resamples_document_kinds_to_the_weights():
    docs = [{"id": f"d{i}", "kind": k, "text": k} for i, k in
            enumerate(["bio"] * 70 + ["bio_who_q"] * 20 + ["two_people"] * 10)]
    mixed = mix_documents(docs, {"bio": 0.2, "bio_who_q": 0.6, "two_people": 0.2}, seed=0)
    kinds = pd.Series([d["kind"] for d in mixed]).value_counts()
    assert len(mixed) == 100
    assert kinds.to_dict() == {"bio_who_q": 60, "bio": 20, "two_people": 20}
    assert mixed == mix_documents(docs, {"bio": 0.2, "bio_who_q": 0.6, "two_people": 0.2}, 0)
    with pytest.raises(ValueError, match="bio_verify"):
        mix_documents(docs, {"bio_verify": 1.0}, 0)
    with pytest.raises(ValueError, match="kind"):
        mix_documents([{"id": "x", "text": "t"}], {"bio": 1.0}, 0)


def test_spread_against_noise_tells_signal_from_chance():
    pop = TP.Population(population(), ["s", "l"], 10)
    spread, noise = TT.spread_and_noise(pop, ["b1"], TP.ALL, "accuracy")
    assert spread > 3 * noise  # planted levels 0.3 .. 0.8, 200 examples each
    flat = population(n_examples=100)
    flat["accuracy"] = (np.random.default_rng(1).random(len(flat)) < 0.5).astype(float)
    pop = TP.Population(flat, ["s", "l"], 10)
    spread, noise = TT.spread_and_noise(pop, ["b1"], TP.ALL, "accuracy")
    assert spread < 2 * noise
    assert math.isnan(TT.spread_and_noise(pop, ["b1"], "s", "ece")[1])


def test_gpu_hours_of_the_analysed_models_leave_the_population_out(tmp_path):
    from ckptsweep.analysis.cost import gpu_hours

    head = "s\th:m:s\tmax_rss\tcpu_time\n"
    for rel in ("pretrain/tiny.tsv", "pretrain/pop_a.tsv", "evaluate/tiny/10/base.tsv",
                "evaluate/pop_a/10/base.tsv", "transfer_tables/transfer_tables.tsv",
                "world/world.tsv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(head + "36.0\t0:00:36\t100\t30.0\n")
    every = gpu_hours(tmp_path).set_index("rule")
    mine = gpu_hours(tmp_path, models=["tiny"]).set_index("rule")
    assert every.loc["total", "jobs"] == 6 and mine.loc["total", "jobs"] == 3
    assert set(mine.index) == {"pretrain", "evaluate", "world", "total"}
    assert mine.loc["evaluate", "hours"] == pytest.approx(0.01)
