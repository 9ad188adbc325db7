"""Convert records in the real hub datasets' schemas to the canonical records of ``tasks.py``.

One adapter per hub schema, ``adapter(record, line) -> canonical record``. ``line`` is the
record's 0-based line in its file and is only used in error messages. The canonical ``id``
is the dataset's own id field where the schema has one (MNLI ``idx``, PAWS ``id``, ...);
otherwise the adapter leaves ``id`` as ``None`` and ``prepare_split`` assigns
``f"{dataset}-{line}"``, which is stable because raw files are never reordered.

Real-hub facts the adapters respect:

- MNLI, PAWS, QQP and SuperGLUE BoolQ mark unlabelled test items with label -1, HellaSwag
  with an empty string: such a split is refused with an error naming dataset and split.
- SocialIQa (``"1"``..``"3"``) and HellaSwag (``"0"``..``"3"``) store labels as strings.
- ARC ``answerKey`` is a letter for most items but ``"1"``..``"4"`` for some: it is mapped
  through the item's own ``choices.label`` list.
- BoolQ's ``answer`` is a bool; the canonical record is a two-way multiple choice over
  ``["false", "true"]``, and the question is written as a sentence ("Is it ...?").
- SciQ stores the correct answer apart from three distractors: the choices are shuffled with
  a seed derived from the record's content, so the order does not depend on file position.
- ARC has no context field. A question containing ``" Question: "`` is split at its last
  occurrence into context (before) and question (after); the synthetic world's ``arc_who``
  stores its facts that way. Other ARC questions get an empty context.
- HellaSwag converts to two task types. ``completion`` (real HellaSwag, whose ``ctx_b`` is
  the start of the sentence the endings finish) scores each ending after the passage built
  as lm-evaluation-harness does: ``activity_label: ctx_a Ctx_b`` and the endings cleaned
  of WikiHow's bracket artifacts. ``multiple_choice`` (the synthetic world, which stores
  its facts in ``ctx_a`` and a question in ``ctx_b``) asks ``ctx_b`` as the question.
- RTE (GLUE ``rte``: 0 entailment, 1 not_entailment) is two-way: task type ``nli_binary``.
- STS-B (GLUE ``stsb``) is a 0-5 similarity score, -1 on the test split: a pair is a
  paraphrase ("yes") when its score is at least ``threshold`` (an option set in the config;
  `STSB_THRESHOLD` documents the default).
- TweetQA hides the answers of its test split (``Answer`` is an empty list): refused as
  unlabelled. It keeps the first answer.
- GPT3NLI (``pietrolesci/gpt3_nli``) stores ``text_a``, ``text_b`` and a three-way label in
  MNLI's order; OpenBookQA's ``question_stem`` and ``answerKey`` work like ARC's, with the
  ``additional`` config's ``fact1`` as context when present.

Whole splits (validation, ids, sub-samples) are converted by `ckptsweep.data.prepare`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable

from ckptsweep.data.tasks import task_type
from ckptsweep.errors import ConfigError

Adapter = Callable[[dict, int], dict]

QUESTION_SEP = " Question: "
"""Separator between facts and question inside an ARC ``question`` (see module docstring)."""


class UnlabelledError(ValueError):
    """A record carries the hub's "no gold label" marker (-1 or empty)."""


def _own_id(record: dict, field: str) -> str | None:
    return str(record[field]) if field in record and record[field] is not None else None


def _int_label(value: object, line: int, n: int) -> int:
    """Parse an int-or-string label; -1 / "" / None mean "unlabelled" on the hub."""
    if value is None or value == "" or value == -1 or value == "-1":
        raise UnlabelledError(f"line {line}: label {value!r} means unlabelled")
    if isinstance(value, bool):  # bool is an int subclass: refuse it where an index is meant
        raise ValueError(f"line {line}: label {value!r} is a bool, expected an index")
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"line {line}: label {value!r} is not an integer") from None
    if not 0 <= label < n:
        raise ValueError(f"line {line}: label {value!r} is outside 0..{n - 1}")
    return label


def mnli(record: dict, line: int) -> dict:
    return {"id": _own_id(record, "idx"), "premise": record["premise"],
            "hypothesis": record["hypothesis"], "label": _int_label(record["label"], line, 3)}


def paws(record: dict, line: int) -> dict:
    return {"id": _own_id(record, "id"), "sentence1": record["sentence1"],
            "sentence2": record["sentence2"], "label": _int_label(record["label"], line, 2)}


def qqp(record: dict, line: int) -> dict:
    """GLUE QQP (question1, question2, label 0/1/-1) as a paraphrase task."""
    return {"id": _own_id(record, "idx"), "sentence1": record["question1"],
            "sentence2": record["question2"], "label": _int_label(record["label"], line, 2)}


def xsum(record: dict, line: int) -> dict:
    return {"id": _own_id(record, "id"), "document": record["document"],
            "summary": record["summary"]}


def social_iqa_qg(record: dict, line: int) -> dict:
    """SocialIQa turned around: context + the correct answer -> the question."""
    label = _int_label(record["label"], line, 4)
    if label == 0:  # the hub's labels are 1-based strings
        raise ValueError(f"line {line}: SocialIQa label {record['label']!r} is not 1..3")
    answer = record["answer" + "ABC"[label - 1]]
    return {"id": None, "context": record["context"], "answer": answer,
            "question": record["question"]}


def tulu(record: dict, line: int) -> dict:
    messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    roles = {m["role"] for m in messages}
    if not roles <= {"system", "user", "assistant"} or "assistant" not in roles:
        raise ValueError(f"line {line}: unusable chat roles {sorted(roles)}")
    return {"id": _own_id(record, "id"), "messages": messages}


def arc(record: dict, line: int) -> dict:
    context, sep, question = record["question"].rpartition(QUESTION_SEP)
    if not sep:
        context, question = "", record["question"]
    labels = list(record["choices"]["label"])
    key = record["answerKey"]
    if key not in labels:
        raise ValueError(f"line {line}: answerKey {key!r} is not among choice labels {labels}")
    return {"id": _own_id(record, "id"), "context": context, "question": question,
            "choices": list(record["choices"]["text"]), "label": labels.index(key)}


def _content_seed(record: dict) -> int:
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def sciq(record: dict, line: int) -> dict:
    choices = [record["correct_answer"], record["distractor1"], record["distractor2"],
               record["distractor3"]]
    order = list(range(4))
    random.Random(_content_seed(record)).shuffle(order)
    return {"id": None, "context": record.get("support") or "", "question": record["question"],
            "choices": [choices[i] for i in order], "label": order.index(0)}


def boolq(record: dict, line: int) -> dict:
    """google/boolq (``answer``: bool) or SuperGLUE BoolQ (``label``: 0/1, -1 on test)."""
    if "answer" in record:
        if not isinstance(record["answer"], bool):
            raise ValueError(f"line {line}: BoolQ answer {record['answer']!r} is not a bool")
        label = int(record["answer"])
    else:
        label = _int_label(record.get("label"), line, 2)
    question = record["question"].strip()
    question = question[:1].upper() + question[1:]
    if not question.endswith("?"):
        question += "?"
    return {"id": _own_id(record, "idx"), "context": record["passage"], "question": question,
            "choices": ["false", "true"], "label": label}


def _hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's HellaSwag text clean-up (WikiHow items carry ``[title]``-
    style markers and double spaces)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag(record: dict, line: int) -> dict:
    """Fields of both task types (see the module notes): ``passage`` for ``completion``,
    ``context`` and ``question`` for ``multiple_choice``."""
    passage = f"{record['activity_label']}: {record['ctx_a']} {record['ctx_b'].capitalize()}"
    return {"id": _own_id(record, "ind"), "passage": _hellaswag_clean(passage),
            "context": record["ctx_a"], "question": record["ctx_b"],
            "choices": [_hellaswag_clean(e) for e in record["endings"]],
            "label": _int_label(record["label"], line, len(record["endings"]))}


def xlsum(record: dict, line: int) -> dict:
    """csebuetnlp/xlsum (english): ``text`` is the article."""
    return {"id": _own_id(record, "id"), "document": record["text"],
            "summary": record["summary"]}


def cnn_dailymail(record: dict, line: int) -> dict:
    """abisee/cnn_dailymail 3.0.0: ``article`` and its ``highlights``."""
    return {"id": _own_id(record, "id"), "document": record["article"],
            "summary": record["highlights"]}


def sciq_qg(record: dict, line: int) -> dict:
    """SciQ as question generation: the support paragraph + the correct answer -> the
    question (SciQ as a multiple-choice benchmark is the ``sciq`` schema)."""
    return {"id": None, "context": record.get("support") or "",
            "answer": record["correct_answer"], "question": record["question"]}


def tweet_qa_qg(record: dict, line: int) -> dict:
    """ucsbnlp/tweet_qa turned around: tweet + answer -> question."""
    answers = [a for a in (record.get("Answer") or []) if a and a.strip()]
    if not answers:
        raise UnlabelledError(f"line {line}: no answer (TweetQA hides its test answers)")
    return {"id": _own_id(record, "qid"), "context": record["Tweet"], "answer": answers[0],
            "question": record["Question"]}


def rte(record: dict, line: int) -> dict:
    """GLUE RTE: 0 entailment, 1 not_entailment (-1 on test)."""
    return {"id": _own_id(record, "idx"), "premise": record["sentence1"],
            "hypothesis": record["sentence2"], "label": _int_label(record["label"], line, 2)}


def gpt3_nli(record: dict, line: int) -> dict:
    """pietrolesci/gpt3_nli: text_a, text_b, label in MNLI's order, guid."""
    return {"id": _own_id(record, "guid"), "premise": record["text_a"],
            "hypothesis": record["text_b"], "label": _int_label(record["label"], line, 3)}


STSB_THRESHOLD = 4.0
"""Default STS-B score from which a pair counts as a paraphrase: 4 is "mostly equivalent,
unimportant details differ" in the STS annotation scale, 3 already "roughly equivalent, some
important information differs". The config sets it (``datasets.stsb.options.threshold``)."""


def stsb(record: dict, line: int, threshold: float = STSB_THRESHOLD) -> dict:
    """GLUE STS-B as paraphrase detection: score >= threshold -> "yes"."""
    score = record["label"]
    if score is None or isinstance(score, bool) or float(score) < 0:
        raise UnlabelledError(f"line {line}: score {score!r} means unlabelled")
    if float(score) > 5:
        raise ValueError(f"line {line}: STS-B score {score!r} is outside 0..5")
    return {"id": _own_id(record, "idx"), "sentence1": record["sentence1"],
            "sentence2": record["sentence2"], "label": int(float(score) >= threshold)}


def openbookqa(record: dict, line: int) -> dict:
    """allenai/openbookqa (main or additional): question_stem, choices, answerKey."""
    labels = list(record["choices"]["label"])
    key = record["answerKey"]
    if key not in labels:
        raise ValueError(f"line {line}: answerKey {key!r} is not among choice labels {labels}")
    return {"id": _own_id(record, "id"), "context": record.get("fact1") or "",
            "question": record["question_stem"], "choices": list(record["choices"]["text"]),
            "label": labels.index(key)}


ADAPTERS: dict[str, Adapter] = {
    "mnli": mnli,
    "paws": paws,
    "qqp": qqp,
    "xsum": xsum,
    "social_iqa_qg": social_iqa_qg,
    "tulu": tulu,
    "arc": arc,
    "sciq": sciq,
    "boolq": boolq,
    "hellaswag": hellaswag,
    "xlsum": xlsum,
    "cnn_dailymail": cnn_dailymail,
    "sciq_qg": sciq_qg,
    "tweet_qa_qg": tweet_qa_qg,
    "rte": rte,
    "gpt3_nli": gpt3_nli,
    "stsb": stsb,
    "openbookqa": openbookqa,
}

SCHEMA_TASK: dict[str, str] = {
    "mnli": "nli",
    "paws": "paraphrase",
    "qqp": "paraphrase",
    "xsum": "summarization",
    "social_iqa_qg": "question_generation",
    "tulu": "chat",
    "arc": "multiple_choice",
    "sciq": "multiple_choice",
    "boolq": "multiple_choice",
    "hellaswag": "completion",
    "xlsum": "summarization",
    "cnn_dailymail": "summarization",
    "sciq_qg": "question_generation",
    "tweet_qa_qg": "question_generation",
    "rte": "nli_binary",
    "gpt3_nli": "nli",
    "stsb": "paraphrase",
    "openbookqa": "multiple_choice",
}
"""The canonical task type each schema converts to by default."""
SCHEMA_ALSO: dict[str, tuple[str, ...]] = {"hellaswag": ("multiple_choice",)}
"""Other task types a schema's records also carry the fields of (the module notes)."""


def adapter(schema: str) -> Adapter:
    try:
        return ADAPTERS[schema]
    except KeyError:
        raise KeyError(f"unknown dataset schema {schema!r}; known: {sorted(ADAPTERS)}") from None


def convert(schema: str, record: dict, line: int, dataset: str,
            options: dict | None = None) -> dict:
    """One raw record -> its canonical record, with the fallback id filled in. ``options``
    are the adapter's keyword options (``datasets.<id>.options``: STS-B's threshold)."""
    rec = adapter(schema)(record, line, **(options or {}))
    if rec["id"] is None:
        rec["id"] = f"{dataset}-{line}"
    return rec


def input_text(task: str, record: dict) -> str:
    """The canonical input fields of a record joined: what a model reads, gold excluded.

    Used to check that no evaluation input also occurs in training data or the corpus.
    """
    t = task_type(task)
    if t.kind == "chat":
        return "\n".join(m["content"] for m in record["messages"] if m["role"] != "assistant")
    parts = []
    for field in t.fields:
        value = record[field]
        parts.append(" | ".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def check_dataset(dataset: str, schema: str, task: str, options: dict | None) -> None:
    """A dataset block's schema, task type and adapter options fit together: the study
    layer checks it at parse time, the prepare job again before converting a record."""
    import inspect

    params = inspect.signature(adapter(schema)).parameters
    unknown = sorted(set(options or {}) - set(list(params)[2:]))
    if unknown:
        raise ConfigError(f"datasets.{dataset}.options", f"schema {schema!r} takes no "
                          f"option(s) {unknown}; it takes {list(params)[2:]}")
    expected = (SCHEMA_TASK[schema], *SCHEMA_ALSO.get(schema, ()))
    if task not in expected:
        raise ConfigError(f"datasets.{dataset}.task", f"schema {schema!r} converts to task "
                          f"type {' or '.join(map(repr, expected))}, not {task!r}")
