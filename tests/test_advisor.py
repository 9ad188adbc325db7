"""The checkpoint advisor: advice on constructed grids with known answers, the tie rules
of the predictor metrics, seeding, and a golden test on the AMURO & CHAR release (the
published numbers, read straight from the CSV, decide what is right)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ckptsweep.analysis import amurochar as A
from ckptsweep.analysis import ranking as R
from ckptsweep.analysis import stats
from ckptsweep.analysis.advisor import build_panels, pretrain_gpu_hours
from ckptsweep.analysis.advisor_draws import Series, resample_means
from ckptsweep.analysis.advisor_report import compute_advice
from ckptsweep.analysis.advisor_settings import ADVISOR_FIGURES, ADVISOR_TABLES, AdvisorSettings
from ckptsweep.analysis.predictor_sources import add_proxy, logprob_values, transfer_panels
from ckptsweep.analysis.predictors import add_step, costs, pool, validate
from ckptsweep.analysis.scores import EXAMPLES_COLUMNS, scores_from_examples
from ckptsweep.cli import main

DATA = Path(__file__).parent / "data" / "amurochar"
PERF, OFFICIAL = DATA / "all_perf_table.csv", DATA / "official_eval_table.csv"
STEPS = [100, 200, 300, 400, 500]
FAST = AdvisorSettings(n_boot=300)


def ones(n: int, k: int) -> np.ndarray:
    """n examples, the first k of them right: nested across steps, so differences are
    exact and paired."""
    out = np.zeros(n)
    out[:k] = 1.0
    return out


def grid(per_step: dict, base: dict | None = None, eval_set: str = "e1",
         tokens_per_step: int = 1000) -> pd.DataFrame:
    """A per-example table: fine-tune ``t`` (in-domain on ``eval_set``) at every step,
    ``per_step[step]`` one array per seed (or one array), and the base's scores."""
    rows = []

    def add(step, variant, seed, values):
        for i, v in enumerate(values):
            rows.append({"model": "m", "step": step, "tokens": step * tokens_per_step,
                         "variant": variant, "train_task": None if variant == "base" else "t",
                         "train_kind": None if variant == "base" else "classification",
                         "lr": None if variant == "base" else 1e-3, "seed": seed,
                         "eval_set": eval_set, "task": "nli", "eval_kind": "classification",
                         "role": "base" if variant == "base" else "id", "format": "default",
                         "shots": 0, "id": f"x{i:04d}", "metric": "accuracy", "score": v,
                         "score_norm": np.nan, "gold": "yes", "prediction": "yes"})

    for step, arrays in per_step.items():
        arrays = arrays if isinstance(arrays, list) else [arrays]
        for s, values in enumerate(arrays):
            add(step, f"t-lr1e-3-s{s}", s, values)
    for step, values in (base or {}).items():
        add(step, "base", None, values)
    df = pd.DataFrame(rows, columns=EXAMPLES_COLUMNS)
    return df.astype({"seed": "Int64", "lr": "float64"})


def run(examples: pd.DataFrame, settings: AdvisorSettings = FAST, **kw):
    scores = scores_from_examples(examples, seed=0, n_boot=100)
    return compute_advice(scores, settings, examples=examples, **kw)[0]


# ------------------------------------------------------------------ constructed grids

def test_a_planted_best_checkpoint_is_found():
    n = 400
    ex = grid({s: ones(n, k) for s, k in zip(STEPS, (200, 240, 360, 280, 260), strict=True)})
    adv = run(ex)["advisor"].iloc[0]
    assert adv["best_step"] == 300 and adv["last_step"] == 500 and not adv["last_is_best"]
    assert adv["regret"] == pytest.approx(0.25)
    assert 0 < adv["regret_low"] < 0.25 < adv["regret_high"]
    assert adv["earliest_step"] == 300 and adv["noninferior_steps"] == "300"
    assert adv["test"] == "bootstrap"


def test_a_flat_grid_makes_the_earliest_checkpoint_noninferior():
    n = 400  # the last is best by 4 examples in 400 (0.01), well inside epsilon = 0.05
    ex = grid({s: ones(n, 280 + i) for i, s in enumerate(STEPS)})
    tables = run(ex, AdvisorSettings(epsilon=0.05, n_boot=300))
    adv = tables["advisor"].iloc[0]
    assert adv["best_step"] == 500 and adv["earliest_step"] == 100
    assert adv["noninferior_steps"] == ",".join(map(str, STEPS))
    assert adv["earliest_bound"] < 0.05
    steps = tables["advisor_steps"]
    assert steps["noninferior"].all() and steps["is_earliest"].tolist() == [1, 0, 0, 0, 0]


def test_a_steep_grid_makes_only_the_best_noninferior():
    n = 400
    ex = grid({s: ones(n, k) for s, k in zip(STEPS, (40, 120, 200, 280, 360), strict=True)})
    adv = run(ex)["advisor"].iloc[0]
    assert adv["best_step"] == adv["earliest_step"] == adv["last_step"] == 500
    assert adv["noninferior_steps"] == "500" and adv["regret"] == 0
    # The same grid without examples: the normal test on the scores' intervals agrees.
    scores = scores_from_examples(ex, seed=0, n_boot=300)
    normal, _ = compute_advice(scores, FAST)
    row = normal["advisor"].iloc[0]
    assert row["test"] == "normal" and row["noninferior_steps"] == "500"


def test_epsilon_and_alpha_are_parameters():
    n = 400  # 300 is 0.02 below the best (400)
    ex = grid({s: ones(n, k) for s, k in zip(STEPS, (40, 120, 272, 280, 200), strict=True)})
    strict = run(ex, AdvisorSettings(epsilon=0.005, n_boot=300))["advisor"].iloc[0]
    loose = run(ex, AdvisorSettings(epsilon=0.1, n_boot=300))["advisor"].iloc[0]
    assert strict["earliest_step"] == 400 and loose["earliest_step"] == 300


def test_resampling_matches_the_stats_helper_for_one_set_and_seed():
    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.random(50)
    point, draws = resample_means([{"e": a[None]}, {"e": b[None]}], seed=7, n_boot=500)
    assert point == pytest.approx([a.mean(), b.mean()])
    lo, hi = np.quantile(draws[:, 0] - draws[:, 1], [0.05, 0.95])
    _, lo2, hi2 = stats.paired_bootstrap(a, b, seed=7, n_boot=500, alpha=0.1)
    assert (lo, hi) == pytest.approx((lo2, hi2), abs=1e-12)


def test_seeds_are_resampled_too():
    rng = np.random.default_rng(0)
    x = rng.random(80)
    one = resample_means([{"e": x[None]}], seed=1, n_boot=400)[1][:, 0]
    same = resample_means([{"e": np.vstack([x, x])}], seed=1, n_boot=400)[1][:, 0]
    assert np.allclose(one, same)  # identical seeds: nothing to add
    apart = resample_means([{"e": np.vstack([x, x + 0.2])}], seed=1, n_boot=400)[1][:, 0]
    assert np.ptp(apart) > np.ptp(one)  # seeds that disagree widen the interval


def test_several_seeds_are_averaged_in_the_advice():
    n = 200
    ex = grid({s: [ones(n, k), ones(n, k + 20)] for s, k in zip(STEPS, (20, 60, 100, 140, 120),
                                                                  strict=True)})
    adv = run(ex)["advisor"].iloc[0]
    assert adv["best_step"] == 400 and adv["best_value"] == pytest.approx(150 / 200)


def test_same_seed_same_numbers():
    n = 300
    ex = grid({s: ones(n, k) for s, k in zip(STEPS, (150, 160, 170, 165, 168), strict=True)},
              base={s: ones(n, k) for s, k in zip(STEPS, (100, 90, 110, 120, 80), strict=True)})
    a, b = run(ex), run(ex)
    for name in ADVISOR_TABLES:
        pd.testing.assert_frame_equal(a[name], b[name])
    c = run(ex, AdvisorSettings(seed=1, n_boot=300))
    assert not np.allclose(a["advisor_steps"]["ci_low"], c["advisor_steps"]["ci_low"])


def test_compute_saved(tmp_path):
    n = 100
    ex = grid({s: ones(n, 80) for s in STEPS})
    bench = tmp_path / "benchmarks" / "finetune" / "m"
    for s in STEPS:
        (bench / str(s)).mkdir(parents=True)
        (bench / str(s) / "t-lr1e-3-s0.tsv").write_text("s\tmax_rss\n3600\t1\n")
    st = AdvisorSettings(n_params=1e9, mfu=0.5, peak_tflops=100.0, n_boot=100)
    adv = run(ex, st, benchmarks=tmp_path / "benchmarks")["advisor"].iloc[0]
    assert adv["earliest_step"] == 100 and adv["tokens_per_step"] == 1000
    assert adv["pretrain_gpu_hours_saved"] == pytest.approx(400 * 1000 * 6e9 / 50e12 / 3600)
    assert adv["finetune_gpu_hours_saved"] == pytest.approx(4.0)
    assert adv["finetune_gpu_hours_grid"] == pytest.approx(5.0)
    assert adv["finetune_cost_basis"] == "benchmarks"
    assert pretrain_gpu_hours(10, 1.0, None, 0.4, 312) != pretrain_gpu_hours(10, 1, 1, 0.4, 312)


# ------------------------------------------------------------------ predictor metrics

def test_a_predictor_equal_to_the_truth_scores_one_and_reversed_zero():
    truth = np.array([0.2, 0.5, 0.4, 0.9, 0.7])
    same, rev = R.metrics(truth, truth, k=1), R.metrics(truth, -truth, k=1)
    assert same["decision_accuracy"] == 1 and same["top1_regret"] == 0 and same["topk_hit"] == 1
    assert same["spearman"] == pytest.approx(1) and same["kendall"] == pytest.approx(1)
    assert rev["decision_accuracy"] == 0 and rev["spearman"] == pytest.approx(-1)
    assert rev["top1_regret"] == pytest.approx(0.7) and rev["topk_hit"] == 0


def test_ties_are_handled_as_documented():
    # A tie in the truth: the pair does not count.
    assert R.decision_accuracy([1, 1, 2], [3, 2, 1]) == 0.0
    assert np.isnan(R.decision_accuracy([1, 1, 1], [1, 2, 3]))
    assert R.decision_accuracy([1.0, 1.004, 2], [3, 2, 1], truth_tol=0.01) == 0.0
    # A tie in the predictor: half.
    assert R.decision_accuracy([1, 2, 3], [1, 1, 1]) == 0.5
    assert R.decision_accuracy([1, 2, 3], [1, 1, 2]) == pytest.approx(2.5 / 3)
    # Random tie-breaking for the top: expected regret and hit probability.
    assert R.top1_regret([0, 1, 2], [5, 5, 0]) == pytest.approx(1.5)
    assert R.topk_hit([0, 0, 1], [1, 1, 1], k=1) == pytest.approx(1 / 3)
    assert R.topk_hit([0, 0, 1], [1, 1, 1], k=2) == pytest.approx(2 / 3)
    assert R.topk_hit([1, 0, 1], [0, 1, 0], k=1) == 0  # either best counts, neither picked
    assert np.isnan(R.correlations([1, 2, 3], [1, 1, 1])[0])


def test_vectorised_correlations_equal_scipys():
    rng = np.random.default_rng(0)
    t, p = rng.random((20, 6)), np.round(rng.random((20, 6)), 1)  # ties in p
    m = R.metrics(t, p, k=2)
    for i in range(20):
        assert m["spearman"][i] == pytest.approx(sps.spearmanr(t[i], p[i]).statistic)
        assert m["kendall"][i] == pytest.approx(sps.kendalltau(t[i], p[i]).statistic)


def _validated(ex, settings=FAST, proxy=None):
    scores = scores_from_examples(ex, seed=0, n_boot=100)
    panels = build_panels(scores, ex, settings)
    if proxy is not None:
        add_proxy(panels, proxy, settings)
    add_step(panels)
    groups, cells = validate(panels, settings, costs(panels, scores, None, settings)[:2])
    return groups.set_index("predictor"), pool(panels, cells, settings).set_index("predictor")


def test_predictors_are_validated_against_the_grid():
    n = 400
    ft = {s: ones(n, k) for s, k in zip(STEPS, (100, 200, 300, 250, 150), strict=True)}
    base = {s: ones(n, k) for s, k in zip(STEPS, (10, 20, 30, 25, 15), strict=True)}
    groups, pooled = _validated(grid(ft, base))
    assert groups.loc["base_fewshot", "decision_accuracy"] == 1.0
    assert groups.loc["base_fewshot", "top1_regret"] == 0
    assert groups.loc["step", "decision_accuracy"] == pytest.approx(0.6)
    assert pooled.loc["base_fewshot", "gain_vs_step"] == pytest.approx(0.4)
    assert pooled.loc["base_fewshot", "gain_vs_step_low"] > 0
    assert pooled.loc["step", "cost_fraction"] == 0
    assert 0 < pooled.loc["base_fewshot", "cost_fraction"] < 1
    # A proxy that reverses the truth is caught.
    proxy = scores_from_examples(grid({s: 1 - v for s, v in ft.items()}), 0, 100)
    groups, pooled = _validated(grid(ft, base), proxy=proxy)
    assert groups.loc["proxy_finetune", "spearman"] == pytest.approx(-1)
    assert groups.loc["proxy_finetune", "decision_accuracy"] == 0
    assert pooled.loc["proxy_finetune", "cost_fraction"] == pytest.approx(0.1)


def test_label_logprobs_become_predictors(tmp_path):
    d = tmp_path / "predictions" / "m" / "100"
    d.mkdir(parents=True)
    pd.DataFrame({"eval_set": ["e1", "e1"], "task": ["nli", "nli"], "format": "default",
                  "shots": 0, "id": ["x0000", "x0001"], "gold": ["neutral", "entailment"],
                  "label_logprobs": [[-1.0, -2.0, -3.0], [-0.5, -0.5, -4.0]],
                  "metric": "accuracy"}).to_parquet(d / "base.parquet")
    v = logprob_values(tmp_path / "predictions").pivot(index="id", columns="predictor",
                                                        values="value")
    assert v.loc["x0000", "gold_logprob"] == -2.0
    assert v.loc["x0000", "gold_logprob_norm"] == pytest.approx(-2.0 / len("neutral"))
    p = np.exp([-1.0, -2.0, -3.0])
    assert v.loc["x0000", "base_confidence"] == pytest.approx(p.max() / p.sum())


def test_continuous_base_metrics_are_paired_with_the_grid(tmp_path):
    n = 60
    ks = (20, 40, 50, 30, 10)
    ft = {s: ones(n, k) for s, k in zip(STEPS, ks, strict=True)}
    for s, k in zip(STEPS, ks, strict=True):  # the gold label's log-probability tracks k
        d = tmp_path / "predictions" / "m" / str(s)
        d.mkdir(parents=True)
        pd.DataFrame({"eval_set": "e1", "task": "paraphrase", "format": "default", "shots": 0,
                      "id": [f"x{i:04d}" for i in range(n)], "gold": "yes",
                      "label_logprobs": [[-1.0, -2.0 + k / 100]] * n,
                      "metric": "accuracy"}).to_parquet(d / "base.parquet")
    bpb = pd.DataFrame([{"model": "m", "step": s, "eval_set": "e1", "format": "default",
                         "shots": 0, "id": f"x{i:04d}", "bits_per_byte": 1 + s / 1000}
                        for s in STEPS for i in range(n)])
    tables = run(grid(ft), predictions_dir=tmp_path / "predictions", bpb=bpb)
    g = tables["predictors_groups"].set_index("predictor")
    assert g.loc["gold_logprob", "decision_accuracy"] == 1.0
    assert g.loc["gold_logprob_norm", "decision_accuracy"] == 1.0
    assert g.loc["base_confidence", "decision_accuracy"] == 0.0  # confident in "no"
    assert g.loc["neg_bits_per_byte", "spearman"] == pytest.approx(-g.loc["step", "spearman"])
    assert (tables["predictors"]["cost_basis"] == "jobs").all()


def test_transfer_population_panels():
    rows = []
    for step, (pre, post) in zip((1, 2, 3), ((0.3, 0.5), (0.4, 0.6), (0.5, 0.55)), strict=True):
        for stage, acc in (("pre", pre), ("post", post)):
            rows.append({"member": f"a@{step}", "model": "a", "step": step, "stage": stage,
                         "eval_set": "arc", "n": 500, "accuracy": acc, "confidence": acc,
                         "gold_prob": acc})
    (panel,) = transfer_panels(pd.DataFrame(rows), FAST)
    assert panel.key["role"] == "transfer" and list(panel.steps) == [1, 2, 3]
    assert set(panel.series) == {"truth", "pre_accuracy", "pre_confidence", "pre_gold_prob"}
    assert isinstance(panel.series["pre_confidence"], Series)


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="epsilonn"):
        AdvisorSettings.from_block({"epsilonn": 0.1})
    assert AdvisorSettings.from_block({"epsilon": 0.02}, alpha=0.1).alpha == 0.1


# ------------------------------------------------------------------ AMURO & CHAR, golden

IN_DOMAIN = {"mnli": ("mnli_matched", "mnli_mismatched"), "paws": ("paws",),
             "xsum": ("xsum", "xlsum"), "socialiqa": ("socialiqa",)}
"""The paper's Table 1: each SFT task's in-domain eval sets."""


def published_best() -> dict[str, int]:
    """Best fine-tuned checkpoint per SFT task (in-domain, 4 shots, default format), read
    from the released CSV without the importer: mean over the task's in-domain sets."""
    raw = pd.read_csv(PERF, index_col=0)
    m = raw["model_id"].str.extract(
        r"^olmo1b_hf_(?:ckpt(?P<step>\d+)|main)_(?P<task>[a-z]+)_\d+epoch_[0-9.e-]+_4shots$")
    raw = raw.join(m).dropna(subset=["task"])
    # main is the last checkpoint
    raw["step"] = pd.to_numeric(raw["step"]).fillna(A.MAIN_STEP).astype(int)
    out = {}
    for task, sets in IN_DOMAIN.items():
        r = raw[(raw["task"] == task) & raw["eval dataset"].isin(sets)]
        out[task] = int(r.groupby("step")["Performance"].mean().idxmax())
    return out


@pytest.fixture(scope="module")
def amuro(tmp_path_factory):
    root = tmp_path_factory.mktemp("advise")
    imported = root / "imported" / "amurochar.parquet"
    main(["import-amurochar", "--perf", str(PERF), "--official", str(OFFICIAL),
          "--out", str(imported)])
    main(["advise", "--scores", str(imported), "--n-boot", "200", "--n-params", "1.18e9",
          "--out", str(root / "advice")])
    return root / "advice"


def test_advise_names_the_published_best_checkpoints(amuro):
    for name in ADVISOR_TABLES:
        assert (amuro / f"{name}.csv").exists() and (amuro / f"{name}.html").exists()
    for name in ADVISOR_FIGURES:
        assert (amuro / f"{name}.png").exists() and (amuro / f"{name}.svg").exists()
    adv = pd.read_csv(amuro / "advisor.csv")
    adv = adv[(adv["role"] == "id") & (adv["shots"] == 4) & (adv["format"] == "default")]
    adv = adv.set_index("train_task")
    best = published_best()
    assert best == {"mnli": 738000, "paws": 505000, "xsum": 592000, "socialiqa": 424000}
    for task, step in best.items():
        assert adv.loc[task, "best_step"] == step
        assert adv.loc[task, "last_step"] == A.MAIN_STEP and not adv.loc[task, "last_is_best"]
        assert adv.loc[task, "test"] == "normal"
    # PAWS: the last checkpoint is several points short, significantly.
    assert adv.loc["paws", "regret"] == pytest.approx(0.911002 - 0.878125, abs=1e-6)
    assert adv.loc["paws", "regret_low"] > 0.02
    assert adv.loc["paws", "pretrain_gpu_hours_saved"] > 0


def test_one_group_per_eval_set_on_request():
    scores, _ = A.import_release(PERF, OFFICIAL)
    st = AdvisorSettings(by_eval_set=True, roles=("id",), formats=("default",), shots=(4,),
                         n_boot=100)
    adv = compute_advice(scores, st)[0]["advisor"].set_index("eval_set")
    # The release: matched peaks at 592000 (0.7993), mismatched at 738000 (0.8166).
    assert adv.loc["mnli_matched", "best_step"] == 592000
    assert adv.loc["mnli_mismatched", "best_step"] == 738000
    assert adv.loc["paws", "best_step"] == 505000
