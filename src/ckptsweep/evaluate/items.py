"""The examples of one (eval set, format, shots) block, ready for the model: `_Lm` (the
model, its tokenizer and the tokenisation convention) and `_build_items` (each
example's prompt, its prompt columns and its candidates' token ids).

Few-shot demonstrations come from the training pool (``prompts.sample_demos``, drawn per
example by `run.evaluate_model`), never from the scored file, and prompts that do not
fit the context go through ``prompts.build_prompt`` (demonstrations dropped first, then
the input cut), with room kept for the answer (`_answer_room`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ckptsweep.data.prompts import Prompt, build_prompt, prompt_hash, target
from ckptsweep.data.tasks import TaskType, gold_text
from ckptsweep.evaluate.batching import Batching
from ckptsweep.evaluate.cache import _hash
from ckptsweep.evaluate.config import EvalConfig, EvalSet
from ckptsweep.evaluate.labels import lenient_label_tokens


@dataclass
class _Lm:
    """The model, its tokenizer and the job's config, with the tokenisation convention:
    prompts are encoded as the tokenizer does by default (special tokens included), and
    continuations without special tokens, then concatenated, so the boundary is exact."""

    model: object
    tokenizer: object
    cfg: EvalConfig
    max_length: int
    pad_id: int
    model_key: str | None = None
    scoring_model: object = None
    """The model for scoring forwards: ``model`` or its ``torch.compile``."""
    batching: Batching = None
    """The batching of every model call (``cfg.batch_size``), shared so that what auto
    chose, and lowered after running out of memory, holds for the whole evaluation."""
    _lenient: dict = field(default_factory=dict)
    _continuations: dict = field(default_factory=dict)
    """Token ids per continuation text: label words repeat in every example."""
    _last_prompt: tuple[tuple[int, str], list[int]] | None = None
    """The last prompt encoded: `build` encodes the prompt that ``build_prompt`` has just
    counted (a 1-entry memo: three in four tokenizer calls of a job were repeats)."""

    def __post_init__(self):
        if self.scoring_model is None:
            self.scoring_model = torch.compile(self.model) if self.cfg.compile else self.model
        if self.batching is None:
            self.batching = Batching(self.cfg.batch_size)

    def prompt_ids(self, text: str) -> list[int]:
        key = (id(self.tokenizer), text)  # the memos hold for one tokenizer
        if self._last_prompt is None or self._last_prompt[0] != key:
            self._last_prompt = (key, self.tokenizer(text)["input_ids"])
        return list(self._last_prompt[1])

    def continuation_ids(self, text: str) -> list[int]:
        key = (id(self.tokenizer), text)
        if key not in self._continuations:
            self._continuations[key] = self.tokenizer(text, add_special_tokens=False)[
                "input_ids"]
        return list(self._continuations[key])

    def count_tokens(self, text: str) -> int:
        return len(self.prompt_ids(text))

    def label_variants(self, spaced: str) -> list[list[int]]:
        """Token ids of an answer as ``prompts.target`` spells it (leading space) and
        without the leading space; once where both tokenise alike."""
        variants: list[list[int]] = []
        spellings = [spaced, spaced.removeprefix(" ")] if self.cfg.space_variants else [spaced]
        for text in dict.fromkeys(spellings):
            ids = self.continuation_ids(text)
            if ids and ids not in variants:
                variants.append(ids)
        return variants

    def lenient(self, labels: Sequence[str]) -> list[list[int]]:
        key = tuple(labels)
        if key not in self._lenient:
            self._lenient[key] = lenient_label_tokens(self.tokenizer, labels)
        return self._lenient[key]

    def build(self, task: TaskType, record: dict, fmt: str, demos: list[dict],
              budget: int) -> tuple[Prompt, list[int]]:
        """The prompt (within ``budget`` tokens) and its token ids."""
        prompt = build_prompt(task, record, fmt, demos, self.cfg.separator,
                              self.count_tokens, budget)
        ids = self.prompt_ids(prompt.text)
        if len(ids) > budget:
            # The template alone (or a field build_prompt does not cut) is over budget:
            # keep the prompt's end, where the answer cue is. Rare; flagged as truncated.
            ids = ids[len(ids) - budget:]
            prompt = Prompt(prompt.text, prompt.demo_ids, True)
        return prompt, ids


@dataclass
class _Item:
    """One example to score: its output row's prompt columns and what the model needs."""

    row: dict
    ids: list[int]
    """The prompt's token ids."""
    labels: list[str]
    """Label words or choices; empty for generation."""
    cands: list[list[list[int]]]
    """Per label, the token ids of its spelling variants (`_Lm.label_variants`)."""
    gold_index: int | None
    answer_hash: str
    """Hash of the gold answer and the labels: with ``prompt_hash``, a cache row's check."""


def _base_row(es: EvalSet, fmt: str, shots: int, record: dict, prompt: Prompt,
              ids: list[int], gold: str) -> dict:
    return {
        "eval_set": es.name, "task": es.task, "format": fmt, "shots": shots,
        "id": str(record["id"]), "prompt_hash": prompt_hash(prompt.text),
        "demo_ids": list(prompt.demo_ids), "truncated": prompt.truncated,
        "n_prompt_tokens": len(ids), "gold": gold,
    }


def _choice_texts(task: TaskType, record: dict) -> list[str]:
    return list(task.labels) if task.kind == "classification" else list(record["choices"])


def _method(task: TaskType, cfg: EvalConfig) -> str:
    if task.kind == "generation":
        return "greedy"
    return cfg.method if task.kind == "classification" else "loglik"


def _answer_room(cfg: EvalConfig, method: str, cands: list[list[list[int]]]) -> int:
    """Tokens kept free after the prompt for the answer."""
    if method == "greedy":
        return cfg.max_new_tokens
    if method == "free":
        return cfg.label_max_new_tokens
    return max(len(ids) for variants in cands for ids in variants)


def _build_items(lm: _Lm, es: EvalSet, task: TaskType, fmt: str, shots: int, method: str,
                 records: list[dict], demos: list[list[dict]]) -> list[_Item]:
    items = []
    for record, record_demos in zip(records, demos, strict=True):
        labels = [] if task.kind == "generation" else _choice_texts(task, record)
        if es.answer_words:
            # Each label scored as the sum over its answer words (and their spellings).
            cands = [[ids for word in es.answer_words[label] for ids in lm.label_variants(
                " " + word)] for label in labels]
        else:
            # prompts.target gives the answer's text convention (leading space) for a label.
            cands = [lm.label_variants(target(task, {**record, "label": k}))
                     for k in range(len(labels))]
        budget = lm.max_length - _answer_room(lm.cfg, method, cands)
        prompt, ids = lm.build(task, record, fmt, record_demos, budget)
        gold = gold_text(task, record)
        gold_index = None if task.kind == "generation" else int(record["label"])
        items.append(_Item(_base_row(es, fmt, shots, record, prompt, ids, gold), ids, labels,
                           cands, gold_index, _hash([gold, labels])))
    return items
