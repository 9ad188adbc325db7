"""Scores, analysis tables and figures on hand-made data with known answers."""

import json

import numpy as np
import pandas as pd
import pytest

from ckptsweep.analysis import names as NAMES
from ckptsweep.analysis import tables as T
from ckptsweep.analysis.cost import gpu_hours
from ckptsweep.analysis.figures import write_figures
from ckptsweep.analysis.groups import base_trend, group_units, pt_ft_groups
from ckptsweep.analysis.mrc import mrc_cross_task, mrc_format, mrc_ood, paired_changes
from ckptsweep.analysis.performance import forgetting
from ckptsweep.analysis.scores import (
    EXAMPLES_COLUMNS,
    SCORES_COLUMNS,
    assign_role,
    build_tables,
    write_outputs,
)

EVAL_SETS = {
    "nli": {"task": "nli", "kind": "classification", "of": "nli", "role_in": "id"},
    "nli_ood": {"task": "nli", "kind": "classification", "of": "nli", "role_in": "ood"},
    "para": {"task": "paraphrase", "kind": "classification", "of": "para", "role_in": "id"},
    "summ": {"task": "summarization", "kind": "generation", "of": "summ", "role_in": "id"},
    "summ_ood": {"task": "summarization", "kind": "generation", "of": "summ", "role_in": "ood"},
    "qg": {"task": "question_generation", "kind": "generation", "of": "qg", "role_in": "id"},
    "qa_who": {"task": "multiple_choice", "kind": "multiple_choice", "of": None,
               "role_in": None},
}
KINDS = {"nli": "classification", "para": "classification", "summ": "generation",
         "qg": "generation"}
CFG = {"shots": 4, "format": "default", "seed": 0, "n_boot": 200, "rise_threshold": 0.3,
       "min_base": 0.01,
       "groups": {"finetuning": [{"eval": "nli", "train": "nli"},
                                 {"eval": "summ", "train": "summ"}],
                  "pretraining": [{"eval": "qa_who", "train": "*"}]}}


def provenance(variant: str, step: int) -> dict:
    """Manifest fields of a variant named like the workflow's: ``{task}-lr1e-3-s{seed}``."""
    if variant == "base":
        return {"model": "tiny", "step": step, "tokens": step * 1000, "variant": "base",
                "train_task": None, "train_kind": None, "lr": None, "seed": None}
    task, seed = variant.split("-")[0], variant.rsplit("-", 1)[1]
    return {"model": "tiny", "step": step, "tokens": step * 1000, "variant": variant,
            "train_task": task, "train_kind": KINDS[task], "lr": 1e-3, "seed": int(seed[1:])}


def make_scores(values: dict) -> pd.DataFrame:
    """A scores table from {(variant, step, eval_set[, format]): value}."""
    rows = []
    for key, value in values.items():
        variant, step, eval_set, fmt = (*key, "default")[:4]
        p = provenance(variant, step)
        kind = EVAL_SETS[eval_set]["kind"]
        rows.append({**p, "eval_set": eval_set, "eval_kind": kind,
                     "role": assign_role(variant, p["train_task"], eval_set, EVAL_SETS),
                     "format": fmt, "shots": 4,
                     "metric": "rouge_l" if kind == "generation" else "accuracy",
                     "value": value, "ci_low": value - 0.01, "ci_high": value + 0.01, "n": 50})
    return pd.DataFrame(rows, columns=SCORES_COLUMNS)


NLI0, NLI1, SUMM, PARA, QG = ("nli-lr1e-3-s0", "nli-lr1e-3-s1", "summ-lr1e-3-s0",
                              "para-lr1e-3-s0", "qg-lr1e-3-s0")
HAND = {
    # base at two checkpoints; qg at step 2 is below min_base, so its ratio is skipped
    ("base", 1, "summ"): 0.4, ("base", 1, "qg"): 0.2, ("base", 1, "nli"): 0.5,
    ("base", 1, "para"): 0.5, ("base", 1, "summ_ood"): 0.3, ("base", 1, "qa_who"): 0.5,
    ("base", 2, "summ"): 0.5, ("base", 2, "qg"): 0.005, ("base", 2, "nli"): 0.4,
    ("base", 2, "para"): 0.6, ("base", 2, "summ_ood"): 0.3, ("base", 2, "qa_who"): 0.9,
    ("base", 1, "summ", "io"): 0.4,
    # classification fine-tune on generation sets (the OOD set and the io format must not count)
    (NLI0, 1, "summ"): 0.2, (NLI0, 1, "qg"): 0.3, (NLI0, 1, "summ_ood"): 0.0,
    (NLI0, 2, "summ"): 0.25, (NLI0, 2, "qg"): 0.0, (NLI0, 1, "summ", "io"): 0.0,
    (NLI0, 1, "nli"): 0.8, (NLI0, 2, "nli"): 0.6, (NLI0, 1, "qa_who"): 0.4,
    (NLI1, 1, "nli"): 0.6, (NLI1, 2, "nli"): 0.6, (NLI1, 1, "qa_who"): 0.4,
    # generation fine-tune on classification sets
    (SUMM, 1, "nli"): 0.55, (SUMM, 1, "para"): 0.5, (SUMM, 2, "nli"): 0.4,
    (SUMM, 2, "para"): 0.66, (SUMM, 1, "summ"): 0.6, (SUMM, 2, "summ"): 0.8,
    (SUMM, 1, "qa_who"): 0.6, (SUMM, 2, "qa_who"): 0.8,
    # owners of the other in-domain sets
    (PARA, 1, "para"): 0.7, (QG, 1, "qg"): 0.5,
}


def test_role_assignment():
    assert assign_role("base", None, "nli", EVAL_SETS) == "base"
    assert assign_role(NLI0, "nli", "nli", EVAL_SETS) == "id"
    assert assign_role(NLI0, "nli", "nli_ood", EVAL_SETS) == "ood"
    assert assign_role(NLI0, "nli", "summ", EVAL_SETS) == "cross-task"
    assert assign_role(NLI0, "nli", "summ_ood", EVAL_SETS) == "cross-task"
    assert assign_role(NLI0, "nli", "qa_who", EVAL_SETS) == "benchmark"
    with pytest.raises(ValueError, match="not in the eval-set description"):
        assign_role(NLI0, "nli", "nope", EVAL_SETS)


def test_mrc_cross_task_known_answer_and_skip_rule():
    changes = paired_changes(make_scores(HAND), shots=4, fmt="default", min_base=0.01)
    mrc = mrc_cross_task(changes, seed=0).set_index("direction")
    c2g = mrc.loc["classification->generation"]
    # (0.2-0.4)/0.4, (0.3-0.2)/0.2, (0.25-0.5)/0.5; qg at step 2 has base 0.005 < 0.01
    assert c2g["mrc"] == pytest.approx((-0.5 + 0.5 - 0.5) / 3)
    assert (c2g["n"], c2g["n_skipped"]) == (3, 1)
    assert c2g["ci_low"] <= c2g["mrc"] <= c2g["ci_high"]
    g2c = mrc.loc["generation->classification"]
    assert g2c["mrc"] == pytest.approx((0.1 + 0.0 + 0.0 + 0.1) / 4)
    assert (g2c["n"], g2c["n_skipped"]) == (4, 0)
    assert 0 <= g2c["p_value"] <= 1


def test_mrc_ood_and_format():
    changes = paired_changes(make_scores(HAND), shots=4, fmt="default", min_base=0.01)
    ood = mrc_ood(changes, seed=0)
    assert ood.empty  # the OOD set of summ is scored only by the nli fine-tune: cross-task
    values = {("base", 1, "nli"): 0.5, ("base", 1, "nli", "io"): 0.2, (NLI0, 1, "nli"): 0.75,
              (NLI0, 1, "nli", "io"): 0.3, (NLI0, 1, "nli_ood"): 0.6,
              ("base", 1, "nli_ood"): 0.4}
    all_fmt = paired_changes(make_scores(values), shots=4, fmt=None, min_base=0.01)
    fmt = mrc_format(all_fmt, seed=0).set_index("format")["mrc"]
    assert fmt.to_dict() == pytest.approx({"default": 0.5, "io": 0.5})
    ood = mrc_ood(paired_changes(make_scores(values), 4, "default", 0.01), seed=0)
    assert ood.set_index("eval_set").loc["all", "mrc"] == pytest.approx(0.5)


def test_table5_group_means_on_hand_made_table():
    changes = paired_changes(make_scores(HAND), shots=4, fmt="default", min_base=0.01)
    units = group_units(changes, CFG["groups"])
    t5 = pt_ft_groups(units, seed=0)
    ft = t5[t5["group"] == "finetuning"].set_index("step")
    # step 1: nli seeds (0.8, 0.6) -> 0.7 vs 0.5; summ 0.6 vs 0.4. step 2: 0.6 vs 0.4; 0.8 vs 0.5
    assert ft.loc[1, "raw_change"] == pytest.approx(0.2)
    assert ft.loc[1, "ratio_change"] == pytest.approx((0.4 + 0.5) / 2)
    assert ft.loc[2, "raw_change"] == pytest.approx(0.25)
    assert ft.loc[2, "ratio_change"] == pytest.approx((0.5 + 0.6) / 2)
    assert ft.loc["all", "raw_change"] == pytest.approx(0.225)
    assert ft.loc["all", "n"] == 4
    assert ft.loc["all", "ci_low"] <= 0.225 <= ft.loc["all", "ci_high"]
    pt = t5[t5["group"] == "pretraining"].set_index("step")
    # qa_who, any fine-tune: step 1 nli (0.4 mean of seeds) -0.1, summ +0.1; step 2 summ -0.1
    assert pt.loc[1, "raw_change"] == pytest.approx(0.0)
    assert pt.loc[1, "n"] == 2
    assert pt.loc[2, "raw_change"] == pytest.approx(-0.1)


def test_forgetting_counts_on_hand_made_examples():
    rows = []
    for variant, scores in (("base", [1, 1, 0, 0, 1]), (NLI0, [1, 0, 1, 0, 0])):
        for i, s in enumerate(scores):
            rows.append({**provenance(variant, 1), "eval_set": "nli", "eval_kind":
                         "classification", "role": "base" if variant == "base" else "id",
                         "format": "default", "shots": 4, "id": f"n{i}", "metric": "accuracy",
                         "score": float(s)})
    for variant, scores in (("base", [0.6, 0.4, 0.7]), (NLI0, [0.3, 0.5, 0.9])):
        for i, s in enumerate(scores):
            rows.append({**provenance(variant, 1), "eval_set": "summ", "eval_kind":
                         "generation", "role": "base" if variant == "base" else "cross-task",
                         "format": "default", "shots": 4, "id": f"s{i}", "metric": "rouge_l",
                         "score": s})
    out = forgetting(pd.DataFrame(rows), shots=4, fmt="default").set_index("eval_set")
    assert out.loc["nli", ["n", "base_correct", "ft_correct", "forgotten", "learned"]].tolist() \
        == [5, 3, 2, 2, 1]
    assert out.loc["nli", "forgotten_rate"] == pytest.approx(2 / 3)
    # ROUGE-L counts as correct at >= 0.5: base [T, F, T] -> ft [F, T, T]
    assert out.loc["summ", ["forgotten", "learned"]].tolist() == [1, 1]


# ------------------------------------------------------------------ a synthetic study on disk

N = 40
STEPS = (100, 1000, 10000)
GOLD = ["entailment" if i % 2 == 0 else ("neutral", "contradiction")[i // 2 % 2]
        for i in range(N)]


def _scores_for(variant: str, step: int, eval_set: str) -> np.ndarray:
    """Per-example scores with known means (see the asserts below)."""
    i = np.arange(N)
    if eval_set in ("nli", "nli_ood"):
        if variant == "base":  # always says "entailment": the majority class, 0.5
            return (np.array(GOLD) == "entailment").astype(float)
        return (i % (5 if variant == NLI0 else 4) != 0).astype(float)  # 0.8 / 0.75
    if eval_set == "summ":
        if variant == "base":
            return np.full(N, 0.2)
        return np.full(N, 0.6 if variant == SUMM else 0.0)
    if variant == "base":  # qa_who: learned in pre-training, 0 -> 0.5 -> 1
        return (i < N * STEPS.index(step) / 2).astype(float)
    return (i % 2 == 0).astype(float)


def write_study(root) -> list[dict]:
    manifest = []
    for step in STEPS:
        for variant in ("base", NLI0, NLI1, SUMM):
            frames = []
            for eval_set in ("nli", "nli_ood", "summ", "qa_who"):
                formats = ("default", "io") if eval_set in ("nli", "summ") else ("default",)
                for fmt in formats:
                    s = _scores_for(variant, step, eval_set)
                    kind = EVAL_SETS[eval_set]["kind"]
                    gen = kind == "generation"
                    frames.append(pd.DataFrame({
                        "eval_set": eval_set, "task": EVAL_SETS[eval_set]["task"],
                        "format": fmt, "shots": 4, "id": [f"{eval_set}-{k:03d}" for k in
                                                         range(N)][::-1],
                        "prompt_hash": "h", "demo_ids": [["d1", "d2"]] * N, "truncated": False,
                        "n_prompt_tokens": 10, "gold": "a summary" if gen else GOLD,
                        "prediction": "x", "label_logprobs": [[] if gen else [-1.0, -2.0]] * N,
                        "score": s, "score_norm": s if kind == "multiple_choice" else np.nan,
                        "metric": "rouge_l" if gen else "accuracy"}))
            path = root / f"{step}-{variant}.parquet"
            pd.concat(frames).to_parquet(path)
            manifest.append({"path": str(path), **provenance(variant, step)})
    return manifest


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    manifest = write_study(root)
    (root / "manifest.json").write_text(json.dumps(manifest))
    scores, examples = build_tables(root / "manifest.json", EVAL_SETS, seed=0, n_boot=200)
    cfg = {**CFG, "groups": {"finetuning": [{"eval": "nli", "train": "nli"},
                                            {"eval": "summ", "train": "summ"}],
                             "pretraining": [{"eval": "qa_who", "train": "*"}]}}
    tables, headline = T.compute_tables(scores, examples, cfg)
    return {"root": root, "manifest": manifest, "scores": scores, "examples": examples,
            "cfg": cfg, "tables": tables, "summary": headline}


def test_build_tables_scores_and_roles(study):
    scores, examples = study["scores"], study["examples"]
    assert list(scores.columns) == SCORES_COLUMNS
    assert list(examples.columns) == EXAMPLES_COLUMNS
    assert (scores["n"] == N).all()
    cell = scores.set_index(["step", "variant", "eval_set", "format", "metric"])
    assert cell.loc[(100, NLI0, "nli", "default", "accuracy"), "value"] == pytest.approx(0.8)
    assert cell.loc[(100, NLI0, "nli", "default", "accuracy"), "role"] == "id"
    assert cell.loc[(100, NLI0, "nli_ood", "default", "accuracy"), "role"] == "ood"
    assert cell.loc[(100, NLI0, "summ", "default", "rouge_l"), "role"] == "cross-task"
    assert cell.loc[(100, NLI0, "qa_who", "default", "accuracy"), "role"] == "benchmark"
    assert set(scores.loc[scores["variant"] == "base", "role"]) == {"base"}
    assert set(scores.loc[scores["metric"] == "accuracy_norm", "eval_set"]) == {"qa_who"}
    assert ((scores["ci_low"] <= scores["value"]) & (scores["value"] <= scores["ci_high"])).all()
    again, _ = build_tables(study["manifest"], EVAL_SETS, seed=0, n_boot=200)
    pd.testing.assert_frame_equal(scores, again)


def test_duplicate_manifest_entries_are_refused(study):
    with pytest.raises(ValueError, match="duplicated"):
        build_tables(study["manifest"] + study["manifest"][:1], EVAL_SETS, seed=0, n_boot=10)


def test_write_outputs_is_atomic_and_round_trips(study, tmp_path):
    s_path, e_path = write_outputs(study["scores"], study["examples"], tmp_path / "s.parquet",
                                   tmp_path / "e.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet", "s.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(s_path), study["scores"])


def test_data_decided_membership_rising_vs_flat(study):
    trend = study["tables"]["base_trend"].set_index("eval_set")
    assert trend.loc["qa_who", "verdict"] == "rises"
    assert trend.loc["qa_who", "diff"] == pytest.approx(1.0)
    assert trend.loc["nli", "verdict"] == "flat"
    assert trend.loc["nli", ["diff", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    member = study["tables"]["group_membership"].set_index("eval_set")
    assert member.loc["qa_who", ["by_design", "by_data"]].tolist() == ["pretraining"] * 2
    assert member.loc["nli", ["by_design", "by_data"]].tolist() == ["finetuning"] * 2
    data = study["tables"]["pt_ft_groups_data"]
    assert set(data["group"]) == {"finetuning", "pretraining"}


def test_ft_vs_base_margin_over_majority(study):
    fvb = study["tables"]["ft_vs_base"]
    nli = fvb[(fvb["eval_set"] == "nli")].set_index("step")
    # seeds 0.8 and 0.75 -> 0.775; base = majority = 0.5
    assert nli.loc["all", "margin"] == pytest.approx(0.275)
    assert nli.loc[100, ["base", "ft", "majority"]].tolist() == pytest.approx([0.5, 0.775, 0.5])
    assert nli.loc["all", "ci_low"] <= 0.275 <= nli.loc["all", "ci_high"]
    assert nli.loc["all", "n_seeds"] == 2
    summ = fvb[(fvb["eval_set"] == "summ")].set_index("step")
    assert np.isnan(summ.loc["all", "majority"])
    assert summ.loc["all", "margin"] == pytest.approx(0.4)


def test_summary_and_written_tables(study, tmp_path):
    paths = T.write_tables(study["scores"], study["examples"], study["cfg"], tmp_path)
    names = {p.name for p in paths}
    for name in NAMES.TABLE_NAMES:
        assert {f"{name}.csv", f"{name}.html"} <= names
    headline = json.loads((tmp_path / "summary.json").read_text())
    assert [r["eval_set"] for r in headline["base_trend"]["rises"]] == ["qa_who"]
    (mrc,) = [r for r in headline["mrc_cross_task"]
              if r["direction"] == "classification->generation"]
    assert mrc["mrc"] == pytest.approx(-1.0)  # nli fine-tunes score 0 ROUGE on summ
    gain = headline["group_gain"]["by_design"][0]
    assert gain["finetuning"]["mean"] > gain["pretraining"]["mean"]
    diff = gain["finetuning_minus_pretraining"]
    assert diff["ci_low"] <= diff["mean"] <= diff["ci_high"]
    (margin,) = [r for r in headline["classification_margin"]["id"] if r["eval_set"] == "nli"]
    assert margin["margin"] == pytest.approx(0.275)
    reread = T.read_tables(tmp_path)
    assert set(reread) == set(NAMES.TABLE_NAMES)


def test_figures_are_written(study, tmp_path):
    paths = write_figures(study["tables"], tmp_path)
    for name in NAMES.FIGURE_NAMES:
        for ext in ("png", "svg"):
            f = tmp_path / f"{name}.{ext}"
            assert f in paths and f.stat().st_size > 1000, f
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_figures_from_tables_without_per_example_tables(study, tmp_path):
    """An imported scores file gives no per-example tables: every declared figure is still
    written (a "no data" note where its tables are missing), from the tables folder."""
    T.write_tables(study["scores"], None, study["cfg"], tmp_path / "t")
    assert not (tmp_path / "t" / "perf_steps.csv").exists()
    paths = write_figures(tmp_path / "t", tmp_path / "f")
    for name in NAMES.FIGURE_NAMES:
        for ext in ("png", "svg"):
            f = tmp_path / "f" / f"{name}.{ext}"
            assert f in paths and f.stat().st_size > 1000, f
    assert "no data" in (tmp_path / "f" / "formats.svg").read_text()
    assert "no data" not in (tmp_path / "f" / "mrc_cross_task.svg").read_text()
    assert not (tmp_path / "f" / "ablation.png").exists()


def test_tables_without_the_examples_table_skip_per_example_tables(study, tmp_path):
    tables, headline = T.compute_tables(study["scores"], None, study["cfg"])
    assert set(tables) == set(NAMES.TABLE_NAMES) - set(NAMES.EXAMPLE_TABLES)
    for name in tables:  # what does not need examples is the same as with them
        pd.testing.assert_frame_equal(tables[name], study["tables"][name])
    assert headline["skipped_tables"] == [n for n in NAMES.TABLE_NAMES if n in NAMES.EXAMPLE_TABLES]
    assert headline["base_trend"] is None and headline["group_gain"]["by_data"] is None
    paths = T.write_tables(study["scores"], None, study["cfg"], tmp_path)
    assert {p.stem for p in paths if p.suffix == ".csv"} == set(tables)


def test_explicit_cross_task_pairs_match_the_derived_default():
    changes = paired_changes(make_scores(HAND), shots=4, fmt="default", min_base=0.01)
    derived = mrc_cross_task(changes, seed=0)
    pairs = {"classification->generation": [{"eval": "summ", "train": "nli"},
                                            {"eval": "qg", "train": "nli"}],
             "generation->classification": [{"eval": "nli", "train": "summ"},
                                            {"eval": "para", "train": "summ"}]}
    explicit = mrc_cross_task(changes, seed=0, pairs=pairs)
    pd.testing.assert_frame_equal(explicit, derived)
    assert list(explicit.columns[:3]) == ["direction", "n", "mrc"]
    # a pair may override shots/format: the io-format summ cell of the nli fine-tune
    io = mrc_cross_task(paired_changes(make_scores(HAND), None, None, 0.01), seed=0,
                          pairs={"c->g io": [{"eval": "summ", "train": "nli", "format": "io"}]},
                          shots=4, fmt="default")
    assert io.set_index("direction").loc["c->g io", ["n", "mrc"]].tolist() == [1, -1.0]


def test_a_pair_listed_twice_counts_twice():
    changes = paired_changes(make_scores(HAND), shots=4, fmt="default", min_base=0.01)
    once = {"g": [{"eval": "nli", "train": "nli"}, {"eval": "summ", "train": "summ"}]}
    twice = {"g": [*once["g"], {"eval": "summ", "train": "summ"}]}
    a = pt_ft_groups(group_units(changes, once), seed=0).set_index("step")
    b = pt_ft_groups(group_units(changes, twice), seed=0).set_index("step")
    assert a.loc[1, "raw_change"] == pytest.approx((0.2 + 0.2) / 2)
    assert b.loc[1, "raw_change"] == pytest.approx((0.2 + 0.2 + 0.2) / 3)
    assert b.loc[2, "raw_change"] == pytest.approx((0.2 + 0.3 + 0.3) / 3)
    assert (a.loc[2, "n"], b.loc[2, "n"]) == (2, 3)


# ------------------------------------------------------------------ several models

def test_two_models_are_never_pooled(study):
    """Every table keeps a model column, and adding a second model (other numbers) leaves
    the first model's rows exactly as they were."""
    scores, examples = study["scores"], study["examples"]
    ft = scores["variant"] != "base"
    other_s = scores.assign(model="other", value=scores["value"].where(~ft, 1 - scores["value"]))
    flip = examples["variant"] != "base"
    other_e = examples.assign(model="other",
                              score=examples["score"].where(~flip, 1 - examples["score"]))
    both, headline = T.compute_tables(pd.concat([scores, other_s], ignore_index=True),
                                      pd.concat([examples, other_e], ignore_index=True),
                                      study["cfg"])
    assert set(both) == set(NAMES.TABLE_NAMES)
    for name, df in both.items():
        assert "model" in df.columns, name
        assert set(df["model"]) == {"tiny", "other"}, name
        mine = df[df["model"] == "tiny"].reset_index(drop=True)
        alone = study["tables"][name].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone, check_dtype=False, obj=name)
    assert [g["model"] for g in headline["group_gain"]["by_design"]] == ["other", "tiny"]
    mrc = both["mrc_cross_task"].set_index(["model", "direction"])["mrc"]
    assert mrc[("tiny", "classification->generation")] == pytest.approx(-1.0)
    assert mrc[("other", "classification->generation")] == pytest.approx((1 - 0.2) / 0.2)


# ------------------------------------------------------------------ GPU hours (Table 3)

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + "".join(
        f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n" for s, rss, cpu in rows))


def test_gpu_hours_from_benchmark_files(tmp_path):
    root = tmp_path / "benchmarks"
    _bench(root / "finetune/tiny/50/nli-lr1e-3-s0.tsv", (3600, 500, 3000))
    _bench(root / "finetune/tiny/300/nli-lr1e-3-s0.tsv", (1800, 700, 1000))
    _bench(root / "evaluate/tiny/50/base.tsv", (720, 300, 700), (720, 310, 700))  # repeat(2)
    _bench(root / "world/world.tsv", (36, "NA", "NA"))
    _bench(root / "loose.tsv", (360, 10, 10))
    gh = gpu_hours(root).set_index("rule")
    assert gh.index.tolist() == ["evaluate", "finetune", "loose", "world", "total"]
    assert gh.loc["finetune", ["jobs", "runs", "hours", "gpu_hours"]].tolist() == \
        pytest.approx([2, 2, 1.5, 1.5])
    assert gh.loc["finetune", "cpu_hours"] == pytest.approx(4000 / 3600)
    assert gh.loc["finetune", "max_rss_mb"] == 700
    assert gh.loc["evaluate", ["jobs", "runs", "hours", "gpu_hours"]].tolist() == \
        pytest.approx([1, 2, 0.4, 0.4])
    assert gh.loc["world", ["hours", "gpus_per_job", "gpu_hours"]].tolist() == \
        pytest.approx([0.01, 0, 0])
    assert gh.loc["total", "hours"] == pytest.approx(1.5 + 0.4 + 0.1 + 0.01)
    assert gh.loc["total", "gpu_hours"] == pytest.approx(1.9)
    four = gpu_hours(root, {"finetune": 4}).set_index("rule")
    assert four.loc["finetune", "gpu_hours"] == pytest.approx(6.0)
    assert four.loc["evaluate", "gpu_hours"] == 0
    # One fine-tune set to 8 GPUs (study.finetune_gpus): its hours count 8x, the other's 1x.
    eight = gpu_hours(root, finetune_gpus={"tiny/nli-lr1e-3-s0": 8, "other/x": 2})
    eight = eight.set_index("rule")
    assert eight.loc["finetune", "gpu_hours"] == pytest.approx(1.5 * 8)
    assert eight.loc["finetune", "gpus_per_job"] == pytest.approx(8)
    assert eight.loc["total", "gpu_hours"] == pytest.approx(12 + 0.4)
    assert gpu_hours(tmp_path / "none").empty


def test_write_tables_adds_gpu_hours_only_when_asked(study, tmp_path):
    _bench(tmp_path / "b" / "finetune/tiny/1/x.tsv", (7200, 1, 1))
    cfg = {**study["cfg"], "gpus_per_job": {"finetune": 2}}
    paths = T.write_tables(study["scores"], study["examples"], cfg, tmp_path / "t",
                           benchmarks=tmp_path / "b")
    assert tmp_path / "t" / "gpu_hours.csv" in paths
    gh = T.read_tables(tmp_path / "t")["gpu_hours"].set_index("rule")
    assert gh.loc["finetune", "gpu_hours"] == pytest.approx(4.0)
    plain = T.write_tables(study["scores"], study["examples"], study["cfg"], tmp_path / "u")
    assert not [p for p in plain if p.stem == "gpu_hours"]


def test_workflow_tables_gpu_hours_and_ablation(study, tmp_path):
    """What the tables rule does: benchmarks of every rule (the ablation's too, 1 GPU by
    default) and the ablation predictions give gpu_hours and ablation tables, and the
    figures add the ablation figure."""
    _bench(tmp_path / "b" / "ablation/tiny.tsv", (1800, 1, 1))
    _bench(tmp_path / "b" / "evaluate/tiny/1/base.tsv", (3600, 1, 1))
    _bench(tmp_path / "b" / "world/world.tsv", (3600, 1, 1))
    ablation = pd.DataFrame({"model": "tiny", "step": 1000, "variant": ["base", "nli-s0"] * 4,
                             "eval_set": "nli", "shots": 4,
                             "method": ["free", "free", "loglik", "loglik"] * 2,
                             "format": "default", "id": [f"{i // 4}{i}" for i in range(8)],
                             "metric": "accuracy", "score": [0, 1, 1, 1, 0, 1, 0, 1]})
    paths = T.write_tables(study["scores"], study["examples"], study["cfg"], tmp_path / "t",
                           benchmarks=tmp_path / "b", ablation=ablation)
    names = {p.name for p in paths}
    assert {"gpu_hours.csv", "gpu_hours.html", "ablation.csv", "ablation.html"} <= names
    tables = T.read_tables(tmp_path / "t")
    gh = tables["gpu_hours"].set_index("rule")
    assert gh.loc["ablation", "gpu_hours"] == pytest.approx(0.5)
    assert gh.loc["world", "gpu_hours"] == 0
    assert gh.loc["total", "gpu_hours"] == pytest.approx(1.5)
    ab = tables["ablation"]
    assert ab[["variant", "method", "accuracy", "n"]].values.tolist() == [
        ["base", "free", 0.0, 2], ["base", "loglik", 0.5, 2], ["nli-s0", "free", 1.0, 2],
        ["nli-s0", "loglik", 1.0, 2]]
    paths = write_figures(tmp_path / "t", tmp_path / "f")
    assert tmp_path / "f" / "ablation.png" in paths
    assert (tmp_path / "f" / "ablation.svg").stat().st_size > 1000


def test_base_trend_with_one_checkpoint_is_flat(study):
    one = study["examples"][study["examples"]["step"] == 1000]
    trend = base_trend(one, 4, "default", 0.3, seed=0, n_boot=50)
    assert (trend["verdict"] == "flat").all() and (trend["diff"] == 0).all()
