"""The checkpoint advisor's bits-per-byte job (`ckptsweep.evaluate.bpb`): the reference's
log-probability under the base model, in the evaluation's prompts, per UTF-8 byte."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ckptsweep.data.prompts import build_prompt
from ckptsweep.data.tasks import task_type
from ckptsweep.evaluate.bpb import bits_per_byte
from ckptsweep.files import read_jsonl
from tests.test_evaluate import CFG, _direct_logprob, model, sets, tokenizer  # noqa: F401


def test_bits_per_byte_is_the_references_log_probability(model, tokenizer, sets):  # noqa: F811
    summ = next(s for s in sets if s.name == "summ_id")
    df = bits_per_byte(model, tokenizer, [summ], dataclasses.replace(CFG, shots=(0, 2)))
    assert len(df) == 2 * summ.limit  # the records the evaluation scores (its limit)
    assert set(df["metric"]) == {"rouge_l"} and (df["bits_per_byte"] > 0).all()
    task = task_type("summarization")
    record = read_jsonl(summ.test_path)[0]
    prompt = build_prompt(task, record, "default", [], CFG.separator,
                          lambda t: len(tokenizer(t)["input_ids"]), 10_000).text
    ref = " " + record["summary"]
    expected = -_direct_logprob(model, tokenizer, prompt, ref) / math.log(2) / len(
        ref.encode())
    row = df[(df["id"] == str(record["id"])) & (df["shots"] == 0)].iloc[0]
    assert row["bits_per_byte"] == pytest.approx(expected, rel=1e-4)
    # Demonstrations change the prompt, so the value, but not the rows' keys.
    two = df[df["shots"] == 2].set_index("id")["bits_per_byte"]
    assert two.index.tolist() == df[df["shots"] == 0]["id"].tolist()
