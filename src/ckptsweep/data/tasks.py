"""Task types, their canonical record fields, and the prompt formats of the paper's Table 4.

Every dataset (hub or synthetic) is converted to a *canonical record* of one task type
(see `adapters.py`). Prompts, fine-tuning targets and scoring only ever see canonical
records, so the hub study and the embedded default share every code path after loading.

Canonical records (one JSON object per line in ``resources/data/{dataset}/{split}.jsonl``):

- ``nli``, ``nli_binary``: id, premise, hypothesis, label (int index into ``labels``)
- ``paraphrase``:          id, sentence1, sentence2, label (int index into ``labels``)
- ``summarization``:       id, document, summary
- ``question_generation``: id, context, answer, question
- ``multiple_choice``:     id, context, question, choices (list[str]), label (int)
- ``completion``:          id, passage, choices (list[str]), label (int): the choices
                           continue the passage (HellaSwag), no question frame
- ``chat``:                id, messages (list of {role, content}); training only
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("default", "io", "instruct")
"""The paper's three prompt formats (Table 4): the training format, bare input-output, and a
human-readable instruction."""


@dataclass(frozen=True)
class TaskType:
    """How one kind of task is prompted and scored."""

    name: str
    """Task type id, the value of a dataset's ``task`` key in the config."""
    kind: str
    """``classification`` (label log-likelihood), ``generation`` (greedy + ROUGE-L),
    ``multiple_choice`` (choice log-likelihood) or ``chat`` (training only)."""
    fields: tuple[str, ...]
    """Canonical input fields a record must carry."""
    target: str
    """Canonical field holding the gold answer: ``label`` (an index) or a text field."""
    labels: tuple[str, ...] = ()
    """Label words of a classification task, in label-index order."""
    templates: tuple[tuple[str, str], ...] = ()
    """(format, template) pairs; templates use ``str.format`` fields of the record."""

    def template(self, fmt: str) -> str:
        for name, text in self.templates:
            if name == fmt:
                return text
        raise KeyError(f"task type {self.name!r} has no prompt format {fmt!r}; "
                       f"it has {[n for n, _ in self.templates]}")

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.templates)


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (
        TaskType(
            "nli", "classification", ("premise", "hypothesis"), "label",
            labels=("entailment", "neutral", "contradiction"),
            templates=(
                ("default", "### Input_1: {premise} ### Input_2: {hypothesis} ### Inference:"),
                ("io", "{premise} {hypothesis}"),
                ("instruct", "Consider the following texts: Text 1: {premise} "
                             "Text 2: {hypothesis} The relation is"),
            ),
        ),
        TaskType(  # two-way NLI (RTE): same prompts, RTE's own label words
            "nli_binary", "classification", ("premise", "hypothesis"), "label",
            labels=("entailment", "not_entailment"),
            templates=(
                ("default", "### Input_1: {premise} ### Input_2: {hypothesis} ### Inference:"),
                ("io", "{premise} {hypothesis}"),
                ("instruct", "Consider the following texts: Text 1: {premise} "
                             "Text 2: {hypothesis} The relation is"),
            ),
        ),
        TaskType(
            "paraphrase", "classification", ("sentence1", "sentence2"), "label",
            labels=("no", "yes"),
            templates=(
                ("default", "### Input_1: {sentence1} ### Input_2: {sentence2} "
                            "### Paraphrase Classification:"),
                ("io", "{sentence1} {sentence2}"),
                ("instruct", "Let's compare the two sentences: Sentence_1: {sentence1} "
                             "Sentence_2: {sentence2} Are they paraphrasing?:"),
            ),
        ),
        TaskType(
            "summarization", "generation", ("document",), "summary",
            templates=(
                ("default", "### Input: {document} ### Summary:"),
                ("io", "{document}"),
                ("instruct", "Please read the following text: {document} Provide a summary:"),
            ),
        ),
        TaskType(
            "question_generation", "generation", ("context", "answer"), "question",
            templates=(
                ("default", "### Input: {context} ### Answer: {answer} ### Question:"),
                ("io", "{context} {answer}"),
                ("instruct", "Given the context: {context} And the answer: {answer} "
                             "Generate a suitable question:"),
            ),
        ),
        TaskType(
            "multiple_choice", "multiple_choice", ("context", "question", "choices"), "label",
            templates=(("default", "{context} Question: {question} Answer:"),),
        ),
        # lm-evaluation-harness's HellaSwag: the passage, then " " + each ending.
        TaskType("completion", "multiple_choice", ("passage", "choices"), "label",
                 templates=(("default", "{passage}"),)),
        TaskType("chat", "chat", ("messages",), "messages"),
    )
}


def task_type(name: str) -> TaskType:
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown task type {name!r}; known: {sorted(TASK_TYPES)}") from None


def gold_text(task: TaskType, record: dict) -> str:
    """The gold answer as text: the label word, the chosen choice, or the target field."""
    if task.kind == "classification":
        return task.labels[int(record["label"])]
    if task.kind == "multiple_choice":
        return record["choices"][int(record["label"])]
    return record[task.target]


def check_record(task: TaskType, record: dict, where: str) -> None:
    """Raise a ValueError naming ``where`` (dataset, file, line) if a record is unusable."""
    missing = [f for f in ("id", *task.fields, task.target) if f not in record]
    if missing:
        raise ValueError(f"{where}: record lacks field(s) {missing} required by task "
                         f"type {task.name!r}")
    if task.target == "label":
        n = len(task.labels) if task.kind == "classification" else len(record["choices"])
        label = record["label"]
        if not isinstance(label, int) or not 0 <= label < n:
            raise ValueError(f"{where}: gold label {label!r} is not one of 0..{n - 1} "
                             "(unlabelled split? name a labelled split in the config)")
