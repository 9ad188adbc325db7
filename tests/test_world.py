"""The synthetic world: determinism, sizes, hub schemas, balance, tokens, clean separation."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ckptsweep.data.adapters import convert, input_text
from ckptsweep.data.world.build import (
    build_world,
    iter_corpus_texts,
    passage,
    sentences,
    template_words,
)
from ckptsweep.data.world.config import WorldConfig
from ckptsweep.data.world.tasks import dataset_specs
from ckptsweep.data.world.vocab import LABEL_WORDS, NEVER_IN_CORPUS

SMALL = dict(n_people=40, n_cities=12, n_ood_people=20, n_persistent=4, persistent_docs=3,
             corpus_docs=600, n_train=120, n_eval=60, n_shot_pool=12, n_instruct=40)

# Field -> type of each hub schema, as the hub's datasets have them.
HUB_SCHEMAS = {
    "mnli": {"premise": str, "hypothesis": str, "label": int, "idx": int},
    "paws": {"id": int, "sentence1": str, "sentence2": str, "label": int},
    "xsum": {"document": str, "summary": str, "id": str},
    "social_iqa_qg": {"context": str, "question": str, "answerA": str, "answerB": str,
                      "answerC": str, "label": str},
    "tulu": {"dataset": str, "id": str, "messages": list},
    "arc": {"id": str, "question": str, "choices": dict, "answerKey": str},
    "sciq": {"question": str, "distractor1": str, "distractor2": str, "distractor3": str,
             "correct_answer": str, "support": str},
    "boolq": {"question": str, "answer": bool, "passage": str},
    "hellaswag": {"ind": int, "activity_label": str, "ctx_a": str, "ctx_b": str, "ctx": str,
                  "endings": list, "source_id": str, "split": str, "split_type": str,
                  "label": str},
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    return out, build_world(WorldConfig(seed=1, **SMALL), out)


@pytest.fixture(scope="module")
def canonical(world) -> dict[str, dict[str, list[dict]]]:
    """dataset -> split -> canonical records."""
    out, summary = world
    result: dict[str, dict[str, list[dict]]] = {}
    for name, info in summary["datasets"].items():
        result[name] = {}
        for split in info["splits"]:
            raw = read_jsonl(out / "raw" / name / f"{split}.jsonl")
            result[name][split] = [convert(info["schema"], r, i, name) for i, r in enumerate(raw)]
    return result


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    out, _ = world
    build_world(WorldConfig(seed=1, **SMALL), tmp_path / "again")
    assert all_files(out) == all_files(tmp_path / "again")
    build_world(WorldConfig(seed=2, **SMALL), tmp_path / "other")
    other = all_files(tmp_path / "other")
    assert other.keys() == all_files(out).keys()
    assert other["corpus.jsonl"] != all_files(out)["corpus.jsonl"]
    assert other["raw/nli/test.jsonl"] != all_files(out)["raw/nli/test.jsonl"]


def test_sizes_follow_knobs(world):
    out, summary = world
    cfg = WorldConfig(seed=1, **SMALL)
    assert len(read_jsonl(out / "corpus.jsonl")) == cfg.corpus_docs
    assert len(summary["pools"]["names"]) == cfg.n_people
    assert len(summary["pools"]["cities"]) == cfg.n_cities
    assert len(summary["pools"]["ood_names"]) == cfg.n_ood_people
    assert len(summary["persistent"]) == cfg.n_persistent
    for spec in dataset_specs(cfg):
        for split, n in spec.sizes.items():
            assert len(read_jsonl(out / "raw" / spec.name / f"{split}.jsonl")) == n, spec.name
            assert summary["datasets"][spec.name]["splits"][split] == n
    assert read_jsonl(out / "raw" / "nli" / "train.jsonl").__len__() == cfg.n_train
    assert not (out / "raw" / "instruct" / "test.jsonl").exists()


def test_records_follow_hub_schemas(world):
    out, summary = world
    for name, info in summary["datasets"].items():
        schema = HUB_SCHEMAS[info["schema"]]
        for split in info["splits"]:
            for rec in read_jsonl(out / "raw" / name / f"{split}.jsonl"):
                assert set(rec) == set(schema), (name, split, sorted(rec))
                for key, typ in schema.items():
                    assert type(rec[key]) is typ, (name, key, rec[key])


def test_hub_label_conventions(world):
    out, _ = world
    for rec in read_jsonl(out / "raw" / "qg" / "test.jsonl"):
        assert rec["label"] in {"1", "2", "3"}
    for rec in read_jsonl(out / "raw" / "hellaswag_job" / "test.jsonl"):
        assert rec["label"] in {"0", "1", "2", "3"} and len(rec["endings"]) == 4
        assert rec["ctx"] == f"{rec['ctx_a']} {rec['ctx_b']}"
    for rec in read_jsonl(out / "raw" / "arc_who" / "test.jsonl"):
        assert rec["choices"]["label"] == ["A", "B", "C", "D"]
        assert rec["answerKey"] in "ABCD" and " Question: Who " in rec["question"]


@pytest.mark.parametrize("dataset", ["nli", "nli_ood", "para", "para_ood", "arc_who",
                                     "boolq_verify", "hellaswag_job"])
def test_labels_are_balanced(canonical, dataset):
    for split, records in canonical[dataset].items():
        counts = Counter(r["label"] for r in records)
        k = len(records[0]["choices"]) if "choices" in records[0] else max(counts) + 1
        assert len(counts) == k, (dataset, split, counts)
        assert max(counts.values()) - min(counts.values()) <= 1, (dataset, split, counts)


def test_qg_and_sciq_answer_positions_vary(world, canonical):
    out, _ = world
    qg = Counter(r["label"] for r in read_jsonl(out / "raw" / "qg" / "test.jsonl"))
    assert max(qg.values()) - min(qg.values()) <= 1 and len(qg) == 3
    # SciQ positions come from the adapter's content-seeded shuffle: roughly even
    sciq = Counter(r["label"] for r in canonical["sciq_attr"]["test"])
    assert len(sciq) == 4 and max(sciq.values()) <= 0.5 * SMALL["n_eval"]


def test_gold_answers_are_readable_from_the_context(canonical):
    for rec in canonical["hellaswag_job"]["test"]:
        assert rec["choices"][rec["label"]] in rec["context"]
    for rec in canonical["sciq_attr"]["test"]:
        assert rec["choices"][rec["label"]] in rec["context"]
    for rec in canonical["arc_who"]["test"]:
        assert rec["choices"][rec["label"]] in rec["context"]
    for rec in canonical["qg"]["test"]:
        assert rec["answer"] in rec["context"]
    for rec in canonical["nli"]["test"]:
        if rec["label"] == 0:
            assert rec["hypothesis"] in rec["premise"]


def _windows(texts) -> set[str]:
    """Every run of whole sentences of every text, whitespace-normalised."""
    found = set()
    for text in texts:
        sents = sentences(text)
        for i in range(len(sents)):
            for j in range(i + 1, len(sents) + 1):
                found.add(" ".join(sents[i:j]))
    return found


def assert_clean_separation(out: Path, summary: dict) -> int:
    """No test input in any train split; no test passage inside the corpus or a train input.
    Brute force on purpose (all sentence runs), independent of the world's own index."""
    canonical = {name: {split: [convert(info["schema"], r, i, name) for i, r in
                                enumerate(read_jsonl(out / "raw" / name / f"{split}.jsonl"))]
                        for split in info["splits"]}
                 for name, info in summary["datasets"].items()}
    train_inputs = {input_text(summary["datasets"][name]["task"], rec)
                    for name, splits in canonical.items() for rec in splits["train"]}
    seen_before = _windows([*iter_corpus_texts(out), *train_inputs])
    checked = 0
    for name, splits in canonical.items():
        task = summary["datasets"][name]["task"]
        test_inputs = [input_text(task, r) for r in splits.get("test", [])]
        assert len(set(test_inputs)) == len(test_inputs), f"{name}: duplicate test inputs"
        for rec, key in zip(splits.get("test", []), test_inputs, strict=True):
            assert key not in train_inputs, (name, rec["id"])
            assert " ".join(sentences(passage(task, rec))) not in seen_before, (name, rec["id"])
            checked += 1
    return checked


def test_test_inputs_never_in_train_splits_or_corpus(world):
    out, summary = world
    assert assert_clean_separation(out, summary) == 12 * SMALL["n_eval"]


def test_collisions_are_regenerated_in_a_crowded_world(tmp_path):
    # 4 people and 4 cities: many paraphrase test pairs collide with train pairs
    crowded = WorldConfig(n_people=4, n_cities=4, n_ood_people=4, n_persistent=0,
                          corpus_docs=1000, n_train=1000, n_eval=100, n_shot_pool=10,
                          n_instruct=10)
    summary = build_world(crowded, tmp_path)
    assert sum(summary["rejected_collisions"].values()) > 0
    assert assert_clean_separation(tmp_path, summary) == 12 * crowded.n_eval


def test_corpus_never_holds_task_formats(world):
    out, summary = world
    text = "\n".join(iter_corpus_texts(out))
    words = set(re.findall(r"[#\w]+", text))
    for word in NEVER_IN_CORPUS:
        assert word not in words, word
    for marker in ("###", " not ", " who ", "Summary", "Inference"):
        assert marker not in text, marker
    assert not set(summary["pools"]["ood_names"]) & words
    assert {"true", "false", "Question", "Answer"} <= words  # the benchmark formats are in it


def test_corpus_facts_and_persistent_facts(world):
    out, summary = world
    docs = {d["id"]: d for d in read_jsonl(out / "corpus.jsonl")}
    for doc in docs.values():
        for f in doc["facts"]:
            name, _, value = f.split("|")
            assert name in doc["text"] and value in doc["text"], (doc["id"], f)
    for name, attrs in summary["persistent"].items():
        stated = {f for d in docs.values() for f in d["facts"] if f.startswith(name + "|")}
        assert stated <= {f"{name}|{a}|{v}" for a, v in attrs.items()}
    assert summary["persistent_facts"]
    for f, doc_ids in summary["persistent_facts"].items():
        assert all(f in docs[i]["facts"] for i in doc_ids)


def test_instruct_mixture_is_plain_chat(canonical):
    records = canonical["instruct"]["train"]
    assert len(records) == SMALL["n_instruct"]
    for rec in records:
        assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
        for m in rec["messages"]:
            assert "###" not in m["content"] and "Question:" not in m["content"]
            assert "Answer:" not in m["content"]


def test_tokenizer_lines_hold_markers_and_label_words(world):
    out, _ = world
    lines = (out / "tokenizer_lines.txt").read_text(encoding="utf-8")
    for word in [*LABEL_WORDS, "###", "<|user|>", "<|assistant|>", *template_words()]:
        assert word in lines, word
    for word in ("Inference", "Summary", "Paraphrase", "Classification", "Consider"):
        assert word in template_words()


def test_required_words_are_single_tokens(world, tmp_path):
    from ckptsweep.data.tokenizer import check_single_tokens, train_tokenizer

    out, summary = world
    lines = (out / "tokenizer_lines.txt").read_text(encoding="utf-8").splitlines()
    tok = train_tokenizer(iter_corpus_texts(out), lines, 2048, tmp_path / "tok",
                          required_single=summary["single_token_words"])
    assert check_single_tokens(tok, summary["single_token_words"]) == []
    assert check_single_tokens(tok, template_words()) == []
    assert tok.eos_token_id == 0 and tok.bos_token_id == 0 and tok.pad_token_id == 1
    # unseen names must stay several tokens, or OOD would not be out of distribution
    ood = summary["pools"]["ood_names"]
    assert set(check_single_tokens(tok, ood)) == set(ood)
    with pytest.raises(ValueError, match="Kx7qzwv"):
        train_tokenizer(iter_corpus_texts(out), lines, 2048, tmp_path / "bad",
                        required_single=["Kx7qzwv"])
