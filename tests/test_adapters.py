"""Hub-schema records -> canonical records, and the split preparation around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptsweep.data.adapters import ADAPTERS, SCHEMA_TASK, convert
from ckptsweep.data.prepare import prepare_split
from ckptsweep.data.prompts import render, target
from ckptsweep.data.tasks import check_record, task_type
from ckptsweep.data.world.build import build_world
from ckptsweep.data.world.config import WorldConfig

# One realistic record per schema, shaped like the hub's.
HUB_RECORDS = {
    "mnli": {"premise": "A man plays.", "hypothesis": "Someone plays.", "label": 0, "idx": 7},
    "paws": {"id": 3, "sentence1": "A b.", "sentence2": "B a.", "label": 1},
    "qqp": {"question1": "How?", "question2": "Why?", "label": 0, "idx": 5},
    "xsum": {"document": "Long text.", "summary": "Short.", "id": "29750031"},
    "social_iqa_qg": {"context": "Tracy went out.", "question": "Why did Tracy do this?",
                      "answerA": "to rest", "answerB": "to eat", "answerC": "to run",
                      "label": "2"},
    "tulu": {"dataset": "flan_v2", "id": "flan_v2_1",
             "messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello"}]},
    "arc": {"id": "Mercury_1", "question": "Which is a gas?",
            "choices": {"text": ["rock", "air", "wood", "ice"], "label": ["1", "2", "3", "4"]},
            "answerKey": "2"},
    "sciq": {"question": "What is H2O?", "distractor3": "salt", "distractor1": "oil",
             "distractor2": "sand", "correct_answer": "water", "support": "Water is H2O."},
    "boolq": {"question": "is the sky blue", "answer": True, "passage": "The sky is blue."},
    "hellaswag": {"ind": 4, "activity_label": "Cooking", "ctx_a": "A man cooks.",
                  "ctx_b": "he", "ctx": "A man cooks. he", "endings": ["a", "b", "c", "d"],
                  "source_id": "x", "split": "val", "split_type": "indomain", "label": "3"},
}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("schema", sorted(HUB_RECORDS))
def test_every_schema_converts_to_a_valid_canonical_record(schema):
    rec = convert(schema, HUB_RECORDS[schema], 0, "ds")
    check_record(task_type(SCHEMA_TASK[schema]), rec, f"{schema} example")
    assert isinstance(rec["id"], str)


def test_adapters_cover_the_required_schemas():
    required = {"mnli", "paws", "xsum", "social_iqa_qg", "tulu", "arc", "sciq", "boolq",
                "hellaswag"}
    assert required <= set(ADAPTERS) and set(ADAPTERS) == set(SCHEMA_TASK)


def test_string_labels_and_answer_keys():
    assert convert("social_iqa_qg", HUB_RECORDS["social_iqa_qg"], 0, "s")["answer"] == "to eat"
    assert convert("hellaswag", HUB_RECORDS["hellaswag"], 0, "h")["label"] == 3
    assert convert("arc", HUB_RECORDS["arc"], 0, "a")["label"] == 1  # "2" among "1".."4"
    letters = dict(HUB_RECORDS["arc"], answerKey="C",
                   choices={"text": ["x", "y", "z"], "label": ["A", "B", "C"]})
    assert convert("arc", letters, 0, "a")["label"] == 2


def test_hellaswag_completion_prompt_is_lm_evaluation_harness():
    """Real HellaSwag (task `completion`): "activity_label: ctx_a Ctx_b", then " " + each
    ending, both cleaned of WikiHow's bracket markers as the harness does; the same record
    also carries the question-style fields the synthetic world's `multiple_choice` uses."""
    raw = {"ind": 7, "activity_label": "Personal Care and Style",
           "ctx_a": "[header] How to dye your hair [title] Buy the dye.", "ctx_b": "wear gloves",
           "endings": ["[step] Put on the gloves  first.", "Eat lunch.", "Sleep [substeps] now.",
                       "Run."], "label": "0"}
    rec = convert("hellaswag", raw, 0, "h")
    completion = task_type("completion")
    check_record(completion, rec, "hellaswag")
    check_record(task_type("multiple_choice"), rec, "hellaswag")
    assert render(completion, rec, "default") == (
        "Personal Care and Style: How to dye your hair. Buy the dye. Wear gloves")
    assert rec["choices"] == [" Put on the gloves first.", "Eat lunch.", "Sleep now.", "Run."]
    assert target(completion, rec) == "  Put on the gloves first."  # the harness's " " + ending
    assert (rec["context"], rec["question"]) == (raw["ctx_a"], "wear gloves")


def test_a_schema_refuses_a_task_it_does_not_convert_to(tmp_path):
    raw = write_jsonl(tmp_path / "raw" / "test.jsonl", [HUB_RECORDS["hellaswag"]])
    with pytest.raises(ValueError, match="datasets.hubset.task: schema 'hellaswag' converts to "
                       "task type 'completion' or 'multiple_choice', not 'nli'"):
        prepare_split("hellaswag", "nli", raw, tmp_path / "out.jsonl", "hubset")


def test_arc_question_splits_context_at_last_question_marker():
    rec = dict(HUB_RECORDS["arc"], question="Kalo has a dog. Question: Who has a dog?")
    out = convert("arc", rec, 0, "a")
    assert out["context"] == "Kalo has a dog." and out["question"] == "Who has a dog?"
    assert convert("arc", HUB_RECORDS["arc"], 0, "a")["context"] == ""


def test_boolq_is_a_false_true_choice_with_a_sentence_question():
    out = convert("boolq", HUB_RECORDS["boolq"], 0, "b")
    assert out["choices"] == ["false", "true"] and out["label"] == 1
    assert out["question"] == "Is the sky blue?" and out["context"] == "The sky is blue."
    superglue = {"question": "is it", "passage": "p", "idx": 0, "label": 0}
    assert convert("boolq", superglue, 0, "b")["label"] == 0


def test_sciq_shuffle_depends_on_content_not_position():
    rec = HUB_RECORDS["sciq"]
    a, b = convert("sciq", rec, 0, "s"), convert("sciq", rec, 9, "s")
    assert a["choices"] == b["choices"] and a["choices"][a["label"]] == "water"
    positions = set()
    for i in range(40):
        out = convert("sciq", dict(rec, question=f"What is H2O, take {i}?"), 0, "s")
        assert out["choices"][out["label"]] == "water"
        assert sorted(out["choices"]) == ["oil", "salt", "sand", "water"]
        positions.add(out["label"])
    assert positions == {0, 1, 2, 3}


@pytest.mark.parametrize("schema, bad", [
    ("mnli", {"label": -1}), ("paws", {"label": -1}), ("qqp", {"label": -1}),
    ("hellaswag", {"label": ""}), ("boolq", None),
])
def test_unlabelled_splits_are_refused_naming_dataset_and_split(tmp_path, schema, bad):
    if schema == "boolq":  # SuperGLUE BoolQ's test split
        record = {"question": "is it", "passage": "p", "idx": 0, "label": -1}
    else:
        record = dict(HUB_RECORDS[schema], **bad)
    raw = write_jsonl(tmp_path / "raw" / "test.jsonl", [HUB_RECORDS[schema], record])
    with pytest.raises(ValueError, match=r"dataset 'hubset', split 'test'.*no gold labels"):
        prepare_split(schema, SCHEMA_TASK[schema], raw, tmp_path / "out.jsonl", "hubset")
    assert not (tmp_path / "out.jsonl").exists()


def test_errors_name_dataset_file_and_line(tmp_path):
    broken = dict(HUB_RECORDS["mnli"])
    del broken["hypothesis"]
    raw = write_jsonl(tmp_path / "train.jsonl", [HUB_RECORDS["mnli"], broken])
    with pytest.raises(ValueError, match=r"dataset 'm', .*train\.jsonl:2.*hypothesis"):
        prepare_split("mnli", "nli", raw, tmp_path / "out.jsonl", "m")
    with pytest.raises(ValueError, match="converts to task type 'nli'"):
        prepare_split("mnli", "paraphrase", raw, tmp_path / "out.jsonl", "m")
    with pytest.raises(KeyError, match="unknown dataset schema"):
        prepare_split("nope", "nli", raw, tmp_path / "out.jsonl", "m")


def test_ids_limit_and_seed(tmp_path):
    records = [dict(HUB_RECORDS["social_iqa_qg"], context=f"c{i}.") for i in range(30)]
    raw = write_jsonl(tmp_path / "siqa" / "train.jsonl", records)
    out = tmp_path / "data" / "siqa" / "train.jsonl"
    assert prepare_split("social_iqa_qg", "question_generation", raw, out, "siqa") == 30
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # No own id field: the line number; ids are qualified with the split.
    assert [r["id"] for r in rows] == [f"train/siqa-{i}" for i in range(30)]

    assert prepare_split("social_iqa_qg", "question_generation", raw, out, "siqa",
                         limit=10, seed=3) == 10
    first = out.read_bytes()
    prepare_split("social_iqa_qg", "question_generation", raw, out, "siqa", limit=10, seed=3)
    assert out.read_bytes() == first
    ids = [json.loads(line)["id"] for line in first.decode().splitlines()]
    assert ids == sorted(ids, key=lambda s: int(s.split("-")[-1]))  # file order kept
    prepare_split("social_iqa_qg", "question_generation", raw, out, "siqa", limit=10, seed=4)
    assert out.read_bytes() != first

    mnli = write_jsonl(tmp_path / "mnli.jsonl", [HUB_RECORDS["mnli"]])
    prepare_split("mnli", "nli", mnli, out, "mnli")
    assert json.loads(out.read_text())["id"] == "mnli/7"  # the dataset's own id, per split


def test_every_world_dataset_prepares(tmp_path):
    world = build_world(WorldConfig(n_people=30, n_cities=10, n_ood_people=15, n_persistent=2,
                                    persistent_docs=2, corpus_docs=200, n_train=30, n_eval=20,
                                    n_shot_pool=8, n_instruct=12), tmp_path / "w")
    for name, info in world["datasets"].items():
        for split, n in info["splits"].items():
            out = tmp_path / "data" / name / f"{split}.jsonl"
            raw = tmp_path / "w" / "raw" / name / f"{split}.jsonl"
            assert prepare_split(info["schema"], info["task"], raw, out, name) == n
            ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
            assert len(set(ids)) == n, f"{name}/{split}: ids are not unique"
