"""Prompts: formats, demonstrations, context budget."""

import pytest

from ckptsweep.data.prompts import build_prompt, chat_segments, render, sample_demos, target
from ckptsweep.data.tasks import TASK_TYPES, check_record, gold_text, task_type

NLI = task_type("nli")
REC = {"id": "x1", "premise": "Ana lives in Rome.", "hypothesis": "Ana is from Rome.",
       "label": 0}


def test_every_text_task_has_the_papers_three_formats():
    for name, task in TASK_TYPES.items():
        if task.kind in ("classification", "generation"):
            assert task.formats == ("default", "io", "instruct"), name


def test_default_format_is_the_papers_table_4():
    assert render(NLI, REC, "default") == (
        "### Input_1: Ana lives in Rome. ### Input_2: Ana is from Rome. ### Inference:")
    assert render(NLI, REC, "io") == "Ana lives in Rome. Ana is from Rome."
    assert target(NLI, REC) == " entailment"


def test_demonstrations_are_seeded_per_example_and_exclude_nothing_random():
    pool = [{"id": f"t{i}"} for i in range(50)]
    a = sample_demos(pool, 4, seed=1, example_id="e1")
    assert a == sample_demos(pool, 4, seed=1, example_id="e1")
    assert a != sample_demos(pool, 4, seed=2, example_id="e1")
    assert len({d["id"] for d in a}) == 4
    with pytest.raises(ValueError, match="pool has 50"):
        sample_demos(pool, 51, seed=1, example_id="e1")


def count_words(text):
    return len(text.split())


def test_prompt_drops_demonstrations_first_then_truncates_input():
    demos = [dict(REC, id=f"d{i}") for i in range(3)]
    full = build_prompt(NLI, REC, "default", demos, " || ", count_words, budget=1000)
    assert full.demo_ids == ("d0", "d1", "d2") and not full.truncated
    one = build_prompt(NLI, REC, "default", demos, " || ", count_words, budget=30)
    assert one.truncated and len(one.demo_ids) < 3
    assert count_words(one.text) <= 30
    long = dict(REC, premise=" ".join(["word"] * 200))
    cut = build_prompt(NLI, long, "default", demos, " || ", count_words, budget=40)
    assert cut.truncated and cut.demo_ids == () and count_words(cut.text) <= 40
    assert cut.text.endswith("### Inference:")


def test_chat_loss_only_on_assistant_replies():
    segs = chat_segments([{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello"}], "<eos>")
    trained = [t for t, on in segs if on]
    assert trained == ["Hello<eos>"]
    assert "".join(t for t, _ in segs).startswith("<|user|>\nHi\n<|assistant|>\n")
    with pytest.raises(ValueError, match="unknown chat role"):
        chat_segments([{"role": "robot", "content": "x"}], "<eos>")


def test_record_checks_name_the_culprit():
    check_record(NLI, REC, "nli/test.jsonl:1")
    with pytest.raises(ValueError, match=r"nli/test.jsonl:3.*hypothesis"):
        check_record(NLI, {"id": "a", "premise": "p", "label": 0}, "nli/test.jsonl:3")
    with pytest.raises(ValueError, match="unlabelled"):
        check_record(NLI, dict(REC, label=-1), "qqp/test.jsonl:1")
    mc = task_type("multiple_choice")
    rec = {"id": "q", "context": "", "question": "q?", "choices": ["a", "b"], "label": 1}
    assert gold_text(mc, rec) == "b"
