"""Importing the AMURO & CHAR authors' released results and reproducing their numbers.

The CSVs under tests/data/amurochar/ are unmodified copies of the release (Apache-2.0, see
the NOTICE there). Golden numbers: the paper's cross-task MRC (section 6.2) and Table 5.
"""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from ckptsweep.analysis import amurochar as A
from ckptsweep.analysis import names as NAMES
from ckptsweep.analysis import tables as T
from ckptsweep.analysis.scores import SCORES_COLUMNS
from ckptsweep.cli import main

DATA = Path(__file__).parent / "data" / "amurochar"
PERF, OFFICIAL = DATA / "all_perf_table.csv", DATA / "official_eval_table.csv"
STEPS = [1000, 18000, 342000, 424000, 505000, 592000, 738000, A.MAIN_STEP]
TABLE5_FINETUNING = [0.062, 0.149, 0.286, 0.297, 0.304, 0.297, 0.264, 0.290]
TABLE5_PRETRAINING = [0.048, 0.048, 0.004, 0.010, 0.030, 0.027, 0.021, -0.005]
PRETRAINING_DEDUP = [0.037, 0.041, 0.002, 0.009, 0.022, 0.017, 0.014, -0.002]
"""Not published: Table 5's pre-training row with SciQ counted once (computed here)."""


@pytest.fixture(scope="module")
def imported():
    return A.import_release(PERF, OFFICIAL)


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory):
    """The two CLI verbs end to end, with the shipped (default) analysis config."""
    root = tmp_path_factory.mktemp("amurochar")
    out = root / "imported" / "amurochar.parquet"
    main(["import-amurochar", "--perf", str(PERF), "--official", str(OFFICIAL),
          "--out", str(out)])
    main(["tables", "--scores", str(out), "--out", str(root / "tables")])
    return root / "tables"


# ------------------------------------------------------------------ the imported table

def test_import_has_the_scores_schema(imported):
    scores, notes = imported
    assert list(scores.columns) == SCORES_COLUMNS
    assert len(scores) == 649 + 107 - 1  # both files, minus one duplicated cell
    assert scores["n"].isna().all() and scores["seed"].isna().all()
    assert set(scores["model"]) == {A.MODEL}
    assert sorted(scores["step"].unique()) == STEPS  # "main" sorts last
    cell = ["model", "step", "variant", "eval_set", "format", "shots", "metric"]
    assert not scores.duplicated(cell).any()
    (note,) = notes
    assert "all_perf_table.csv:409" in note and "checkpoint-1000_4shots" in note
    assert set(scores["format"]) == {"default", "instruct", "io"}
    # value -/+ 1.96 std for the perf table; no interval for the official one
    perf = scores[scores["eval_set"] == "mnli_matched"]
    assert ((perf["ci_low"] <= perf["value"]) & (perf["value"] <= perf["ci_high"])).all()
    assert scores.loc[scores["eval_set"] == "boolq", "ci_low"].isna().all()


def test_roles_follow_the_papers_table1(imported):
    scores, _ = imported
    role = scores[scores["variant"] != "base"].drop_duplicates(["train_task", "eval_set"])
    role = role.set_index(["train_task", "eval_set"])["role"]
    assert role[("mnli", "mnli_mismatched")] == "id"
    assert role[("mnli", "rte")] == "ood"
    assert role[("mnli", "xsum")] == "cross-task"
    assert role[("xsum", "xlsum")] == "id"
    assert role[("socialiqa", "sciq_qg")] == "ood"
    assert role[("paws", "stsb")] == "ood"
    assert role[("tulu", "boolq")] == "benchmark"
    assert role[("tulu", "sciq_mc")] == "benchmark"
    kinds = scores.drop_duplicates("eval_set").set_index("eval_set")
    assert kinds.loc["sciq_qg", ["eval_kind", "metric"]].tolist() == ["generation", "rouge_l"]
    assert kinds.loc["sciq_mc", "eval_kind"] == "multiple_choice"
    assert set(scores.loc[scores["eval_kind"] == "generation", "metric"]) == {"rouge_l"}


@pytest.mark.parametrize("name, official, expected", [
    ("mnli_matched", False, ("mnli_matched", "default")),
    ("mnli_matched_instruct", False, ("mnli_matched", "instruct")),
    ("mnli_mismatched_inputoutput", False, ("mnli_mismatched", "io")),
    ("sciq", False, ("sciq_qg", "default")),
    ("sciq_instruct", False, ("sciq_qg", "instruct")),
    ("llmbar_Adversarial_Manual", False, ("llmbar_Adversarial_Manual", "default")),
    ("sciq", True, ("sciq_mc", "default")),
    ("rte", True, ("rte_mc", "default")),
])
def test_eval_names(name, official, expected):
    assert A.parse_eval_name(name, official) == expected


@pytest.mark.parametrize("model_id, official, expected", [
    ("olmo1b_checkpoint-1000_original_hf_4shots", False, (1000, "base", None, 4)),
    ("olmo1b_checkpoint-18000_original", False, (18000, "base", None, 0)),
    ("olmo1b_original_hf", False, (A.MAIN_STEP, "base", None, 0)),
    ("olmo1b_original_hf_7shots", False, (A.MAIN_STEP, "base", None, 7)),
    ("olmo1b_hf_ckpt424000_xsum_3epoch_2e-7_2shots", False,
     (424000, "xsum-lr2e-7-3ep", 2e-7, 2)),
    ("olmo1b_hf_main_mnli_3epoch_2e-5", False, (A.MAIN_STEP, "mnli-lr2e-5-3ep", 2e-5, 0)),
    ("olmo1b_hf_main_tulu_5epoch_2e-6_4shots", False, (A.MAIN_STEP, "tulu-lr2e-6-5ep", 2e-6, 4)),
    ("checkpoint-505000", True, (505000, "base", None, A.OFFICIAL_SHOTS)),
    ("olmo1b_original_hf", True, (A.MAIN_STEP, "base", None, A.OFFICIAL_SHOTS)),
    ("olmo1b_hf_ckpt1000_tulu_5epoch_2e-6", True, (1000, "tulu-lr2e-6-5ep", 2e-6, 0)),
])
def test_model_ids(model_id, official, expected):
    p = A.parse_model_id(model_id, official)
    assert (p["step"], p["variant"], p["lr"], p["shots"]) == expected
    assert A.step_label(p["step"]) == ("main" if expected[0] == A.MAIN_STEP else str(p["step"]))


@pytest.mark.parametrize("model_id, official", [
    ("olmo7b_checkpoint-1000_original_hf_4shots", False),
    ("olmo1b_hf_ckpt1000_squad_3epoch_2e-6_4shots", False),  # unknown task
    ("checkpoint-1000_4shots", True),  # the perf table's stray alias is not official
])
def test_unknown_model_ids_fail(model_id, official):
    with pytest.raises(ValueError, match="unknown"):
        A.parse_model_id(model_id, official)


def test_unknown_id_fails_naming_file_and_line(tmp_path):
    lines = PERF.read_text().splitlines()
    lines[4] = "3,olmo1b_checkpoint-1000_finetuned_4shots,cnn,0.1,0.01"
    bad = tmp_path / "all_perf_table.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"all_perf_table\.csv, line 5: unknown model id "
                                         r"'olmo1b_checkpoint-1000_finetuned_4shots'"):
        A.import_release(bad, OFFICIAL)
    lines = PERF.read_text().splitlines()
    lines[2] = "1,olmo1b_hf_ckpt738000_xsum_3epoch_2e-7_4shots,cnn_fewshot,0.06,0.0004"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match=r"line 3: unknown eval dataset 'cnn_fewshot'"):
        main(["import-amurochar", "--perf", str(bad), "--official", str(OFFICIAL),
              "--out", str(tmp_path / "x.parquet")])
    assert not (tmp_path / "x.parquet").exists()


def test_refuses_to_write_over_the_workflow_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="refusing"):
        main(["import-amurochar", "--perf", str(PERF), "--official", str(OFFICIAL),
              "--out", "results/scores.parquet"])
    with pytest.raises(SystemExit, match="refusing"):
        main(["import-amurochar", "--perf", str(PERF), "--official", str(OFFICIAL),
              "--out", "./results/../results/scores.parquet"])
    with pytest.raises(ValueError, match="refusing"):
        A.check_out_path(tmp_path / "elsewhere" / "results" / "scores.parquet")
    assert not (tmp_path / "results").exists()


def test_shipped_analysis_config_is_the_default():
    assert A.DEFAULT_ANALYSIS.name == "amurochar_analysis.yaml" and A.DEFAULT_ANALYSIS.exists()
    cfg = yaml.safe_load(A.DEFAULT_ANALYSIS.read_text())
    assert (cfg["shots"], cfg["format"]) == (4, "default")
    pre = [p["eval"] for p in cfg["groups"]["pretraining"]]
    assert pre.count("sciq_mc") == 2  # the published duplicate, on purpose
    assert [p["eval"] for p in cfg["groups"]["pretraining_dedup"]].count("sciq_mc") == 1
    assert {len(v) for v in cfg["cross_task"].values()} == {4}


# ------------------------------------------------------------------ golden numbers

def test_cross_task_mrc_golden(tables_dir):
    mrc = pd.read_csv(tables_dir / "mrc_cross_task.csv")
    assert list(mrc.columns[:3]) == ["direction", "n", "mrc"]
    mrc = mrc.set_index("direction")
    # paper section 6.2: -61.4 % and +0.3 %
    assert round(mrc.loc["classification->generation", "mrc"], 4) == pytest.approx(-0.6146,
                                                                                 abs=5e-5)
    assert round(mrc.loc["generation->classification", "mrc"], 4) == pytest.approx(0.0031,
                                                                                 abs=5e-5)
    assert mrc["n"].tolist() == [32, 32] and (mrc["n_skipped"] == 0).all()
    # "not statistically significantly different from a 0% change"
    assert mrc.loc["generation->classification", "p_value"] > 0.05
    assert mrc.loc["classification->generation", "p_value"] < 0.05


def test_table5_golden(tables_dir):
    t5 = pd.read_csv(tables_dir / "pt_ft_groups.csv")
    assert list(t5.columns[:5]) == ["group", "step", "raw_change", "ratio_change", "n"]
    t5 = t5[t5["step"] != "all"].astype({"step": int})

    def row(group):
        g = t5[t5["group"] == group].set_index("step")
        assert g.index.tolist() == STEPS  # checkpoints 1000 ... main
        return g

    ft, pt, dedup = row("finetuning"), row("pretraining"), row("pretraining_dedup")
    assert [round(x, 3) for x in ft["raw_change"]] == pytest.approx(TABLE5_FINETUNING, abs=5e-4)
    assert [round(x, 3) for x in pt["raw_change"]] == pytest.approx(TABLE5_PRETRAINING, abs=5e-4)
    assert [round(x, 3) for x in dedup["raw_change"]] == pytest.approx(PRETRAINING_DEDUP,
                                                                       abs=5e-4)
    assert ft["n"].tolist() == [7] * 8
    assert pt["n"].tolist() == [6] * 8 and dedup["n"].tolist() == [5] * 8


def test_tables_without_examples_skip_per_example_tables(tables_dir):
    written = {p.stem for p in tables_dir.glob("*.csv")}
    assert written == set(NAMES.TABLE_NAMES) - set(NAMES.EXAMPLE_TABLES)
    summary = yaml.safe_load((tables_dir / "summary.json").read_text())
    assert summary["skipped_tables"] == [n for n in NAMES.TABLE_NAMES if n in NAMES.EXAMPLE_TABLES]
    assert summary["base_trend"] is None


def test_explicit_pairs_must_select_something(imported):
    scores, _ = imported
    cfg = yaml.safe_load(A.DEFAULT_ANALYSIS.read_text())
    cfg["cross_task"] = {"x": [{"eval": "xsum", "train": "mnli", "shots": 7}]}
    with pytest.raises(ValueError, match=r"cross_task\.x\[0\]: pair .* selects no fine-tuned"):
        T.compute_tables(scores, None, cfg)
    cfg["cross_task"] = {"x": [{"eval": "nope", "train": "mnli"}]}
    with pytest.raises(ValueError, match=r"cross_task\.x\[0\]\.eval: eval set 'nope'"):
        T.compute_tables(scores, None, cfg)


def test_ood_table_warns_about_the_unlabelled_sets(tmp_path):
    """The release's qqp and stsb numbers are artifacts (gold -1): the OOD table says so."""
    imported = tmp_path / "amurochar.parquet"
    main(["import-amurochar", "--perf", str(DATA / "all_perf_table.csv"),
          "--official", str(DATA / "official_eval_table.csv"), "--out", str(imported)])
    main(["tables", "--scores", str(imported), "--out", str(tmp_path / "t")])
    ood = pd.read_csv(tmp_path / "t/mrc_ood.csv").set_index(["train_task", "eval_set"])
    assert "unlabelled" in ood.loc[("paws", "qqp"), "note"]
    assert "unlabelled" in ood.loc[("paws", "all"), "note"]
    assert pd.isna(ood.loc[("mnli", "rte"), "note"])
