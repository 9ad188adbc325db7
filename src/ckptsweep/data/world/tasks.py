"""The world's raw datasets: one example maker per dataset, each writing records in a real
hub dataset's schema, and `dataset_specs`, which lists every dataset with its schema, label
balance, names (pool or OOD), surface forms and split sizes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ckptsweep.data.adapters import QUESTION_SEP, SCHEMA_TASK
from ckptsweep.data.world.config import WorldConfig
from ckptsweep.data.world.pools import (
    Pools,
    _facts,
    _join_and,
    _other,
    _others,
    _person,
    _placed,
    summary_sentence,
)
from ckptsweep.data.world.vocab import (
    ALL_FORMS,
    ALTERNATE_FORMS,
    ATTR_QUESTIONS,
    ATTRS,
    CANONICAL_FORMS,
    NEGATIONS,
    PHRASES,
    VALUES,
    VERIFY_CLAUSES,
    WHO_QUESTIONS,
    fact,
)

INSTRUCT_KINDS = ("world_restate", "world_profile", "world_qa", "world_who")


@dataclass
class _Ctx:
    """What a task-example maker needs: its random stream, the pools and the variant."""

    rng: random.Random
    pools: Pools
    cfg: WorldConfig
    dataset: str
    split: str
    names: tuple[str, ...]
    forms: tuple[int, ...]


# -------------------------------------------------------------------------- task makers


def make_nli(c: _Ctx, i: int, label: int) -> dict:
    """Premise: 3 facts; entailment restates one, contradiction negates or changes one,
    neutral states an attribute the premise does not mention."""
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, 3)
    sents = {a: fact(a, name, attrs[a], rng.choice(c.forms)) for a in chosen}
    if label == 0:
        hyp = sents[rng.choice(chosen)]
    elif label == 2:
        a = rng.choice(chosen)
        if rng.random() < c.cfg.negation_p:
            hyp = NEGATIONS[a].format(x=name, v=attrs[a])
        else:
            hyp = fact(a, name, _other(rng, c.pools.values[a], attrs[a]), rng.choice(c.forms))
    else:
        a = rng.choice([a for a in ATTRS if a not in chosen])
        hyp = fact(a, name, rng.choice(c.pools.values[a]), rng.choice(c.forms))
    premise = " ".join(sents[a] for a in chosen)
    return {"premise": premise, "hypothesis": hyp, "label": label, "idx": i}


def make_para(c: _Ctx, i: int, label: int) -> dict:
    """Recipe r3: "yes" = the two facts reordered and re-worded; "no" = one fact negated, or
    both facts restated about another person."""
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    a, b = rng.sample(ATTRS, 2)
    fa, fb = rng.choice(c.forms), rng.choice(c.forms)
    s1 = f"{fact(a, name, attrs[a], fa)} {fact(b, name, attrs[b], fb)}"
    # re-wording swaps a form with its partner (0 <-> 1, 2 <-> 3), keeping ID/OOD forms apart
    second = [fact(b, name, attrs[b], fb ^ 1), fact(a, name, attrs[a], fa ^ 1)]
    if label == 0:
        if rng.random() < c.cfg.para_negation_p:
            k = rng.randrange(2)
            attr = (b, a)[k]
            second[k] = NEGATIONS[attr].format(x=name, v=attrs[attr])
        else:
            other = _other(rng, c.names, name)
            second = [fact(b, other, attrs[b], fb ^ 1), fact(a, other, attrs[a], fa ^ 1)]
    return {"id": i, "sentence1": s1, "sentence2": " ".join(second), "label": label}


def make_summ(c: _Ctx, i: int, label: int) -> dict:
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, rng.randint(3, 4))
    return {"document": _facts(rng, name, attrs, chosen, c.forms),
            "summary": summary_sentence(name, {a: attrs[a] for a in chosen}),
            "id": f"{c.dataset}-{c.split}-{i:06d}"}


def make_qg(c: _Ctx, i: int, label: int) -> dict:
    """SocialIQa schema; the task is context + the correct answer -> the question."""
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, 3)
    a = rng.choice(chosen)
    options = _placed(attrs[a], _others(rng, c.pools.values[a], 2, attrs[a]), label)
    return {"context": _facts(rng, name, attrs, chosen, c.forms),
            "question": ATTR_QUESTIONS[a].format(x=name),
            "answerA": options[0], "answerB": options[1], "answerC": options[2],
            "label": str(label + 1)}


def make_arc_who(c: _Ctx, i: int, label: int) -> dict:
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, 4)
    a = rng.choice(chosen)
    question = _facts(rng, name, attrs, chosen, c.forms) + QUESTION_SEP + \
        WHO_QUESTIONS[a].format(v=attrs[a])
    return {"id": f"World_{c.split}_{i:06d}", "question": question,
            "choices": {"text": _placed(name, _others(rng, c.names, 3, name), label),
                        "label": ["A", "B", "C", "D"]},
            "answerKey": "ABCD"[label]}


def make_sciq_attr(c: _Ctx, i: int, label: int) -> dict:
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, 4)
    a = rng.choice(chosen)
    d1, d2, d3 = _others(rng, c.pools.values[a], 3, attrs[a])
    return {"question": ATTR_QUESTIONS[a].format(x=name), "distractor3": d3,
            "distractor1": d1, "distractor2": d2, "correct_answer": attrs[a],
            "support": _facts(rng, name, attrs, chosen, c.forms)}


def make_boolq_verify(c: _Ctx, i: int, label: int) -> dict:
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, 3)
    a = rng.choice(chosen)
    value = attrs[a] if label else _other(rng, c.pools.values[a], attrs[a])
    return {"question": VERIFY_CLAUSES[a].format(x=name, v=value), "answer": bool(label),
            "passage": _facts(rng, name, attrs, chosen, c.forms)}


def make_hellaswag_job(c: _Ctx, i: int, label: int) -> dict:
    """Facts (always including the job) in ``ctx_a``, the job question in ``ctx_b``."""
    rng = c.rng
    name, attrs = _person(rng, c.pools, c.names)
    chosen = ["job", *rng.sample([a for a in ATTRS if a != "job"], rng.randint(2, 3))]
    rng.shuffle(chosen)
    ctx_a = _facts(rng, name, attrs, chosen, c.forms)
    ctx_b = ATTR_QUESTIONS["job"].format(x=name)
    endings = _placed(attrs["job"], _others(rng, VALUES["job"], 3, attrs["job"]), label)
    return {"ind": i, "activity_label": "Job", "ctx_a": ctx_a, "ctx_b": ctx_b,
            "ctx": f"{ctx_a} {ctx_b}", "endings": endings, "source_id": f"world~{c.split}~{i}",
            "split": c.split, "split_type": "indomain", "label": str(label)}


def make_instruct(c: _Ctx, i: int, label: int) -> dict:
    """Plain chat about the world; deliberately neither the "###" nor the "Question:" format."""
    rng = c.rng
    kind = INSTRUCT_KINDS[label]
    name, attrs = _person(rng, c.pools, c.names)
    chosen = rng.sample(ATTRS, rng.randint(2, 4))
    facts = _facts(rng, name, attrs, chosen, c.forms)
    if kind == "world_restate":
        a, form = chosen[0], rng.choice(ALL_FORMS)
        user = f"Can you say this in other words? {fact(a, name, attrs[a], form)}"
        reply = fact(a, name, attrs[a], rng.choice([f for f in ALL_FORMS if f != form]))
    elif kind == "world_profile":
        user = f"Here are some notes. {facts} Please list everything they say about {name}."
        phrases = [PHRASES[a].format(v=attrs[a]) for a in chosen]
        reply = f"According to the notes, {name} {_join_and(phrases)}."
    elif kind == "world_qa":
        a = rng.choice(chosen)
        user = f"Read this and tell me: {facts} {ATTR_QUESTIONS[a].format(x=name)}"
        reply = fact(a, name, attrs[a], 0)
    else:
        name2 = _other(rng, c.names, name)
        a = rng.choice(chosen)
        b = rng.choice([x for x in ATTRS if x != a])
        sents = [fact(x, name, attrs[x], rng.choice(ALL_FORMS)) for x in chosen]
        sents += [fact(a, name2, _other(rng, c.pools.values[a], attrs[a]), rng.choice(ALL_FORMS)),
                  fact(b, name2, rng.choice(c.pools.values[b]), rng.choice(ALL_FORMS))]
        rng.shuffle(sents)
        phrase = PHRASES[a].format(v=attrs[a])
        user = f"{' '.join(sents)} Which of the two people {phrase}?"
        reply = f"That is {name}."
    return {"dataset": kind, "id": f"{kind}_{i}",
            "messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": reply}]}


@dataclass(frozen=True)
class DatasetSpec:
    """One raw dataset of the world."""

    name: str
    schema: str
    """Hub schema (an ``adapters.ADAPTERS`` key)."""
    make: Callable[[_Ctx, int, int], dict]
    n_labels: int
    """Labels drawn balanced (shuffled ``i % n``); 1 when the maker ignores the label."""
    ood: bool
    """Unseen multi-token names instead of pool names."""
    forms: tuple[int, ...]
    sizes: dict[str, int]
    """Split name -> number of records."""
    task_type: str | None = None
    """Canonical task type, if not the schema's default (``adapters.SCHEMA_TASK``)."""

    @property
    def task(self) -> str:
        return self.task_type or SCHEMA_TASK[self.schema]


def dataset_specs(cfg: WorldConfig) -> list[DatasetSpec]:
    ev, pool, tr = cfg.n_eval, cfg.n_shot_pool, cfg.n_train
    return [
        DatasetSpec("nli", "mnli", make_nli, 3, False, CANONICAL_FORMS, {"train": tr, "test": ev}),
        DatasetSpec("nli_ood", "mnli", make_nli, 3, True, ALTERNATE_FORMS,
                    {"train": pool, "test": ev}),
        DatasetSpec("para", "paws", make_para, 2, False, CANONICAL_FORMS,
                    {"train": tr, "test": ev}),
        DatasetSpec("para_ood", "paws", make_para, 2, True, ALTERNATE_FORMS,
                    {"train": pool, "test": ev}),
        DatasetSpec("summ", "xsum", make_summ, 1, False, ALL_FORMS, {"train": tr, "test": ev}),
        DatasetSpec("summ_ood", "xsum", make_summ, 1, True, ALL_FORMS,
                    {"train": pool, "test": ev}),
        DatasetSpec("qg", "social_iqa_qg", make_qg, 3, False, ALL_FORMS,
                    {"train": tr, "test": ev}),
        DatasetSpec("qg_ood", "social_iqa_qg", make_qg, 3, True, ALL_FORMS,
                    {"train": pool, "test": ev}),
        DatasetSpec("instruct", "tulu", make_instruct, len(INSTRUCT_KINDS), False, ALL_FORMS,
                    {"train": cfg.n_instruct}),
        DatasetSpec("arc_who", "arc", make_arc_who, 4, False, ALL_FORMS,
                    {"train": pool, "test": ev}),
        DatasetSpec("sciq_attr", "sciq", make_sciq_attr, 1, False, ALL_FORMS,
                    {"train": pool, "test": ev}),
        DatasetSpec("boolq_verify", "boolq", make_boolq_verify, 2, False, ALL_FORMS,
                    {"train": pool, "test": ev}),
        # A question (ctx_b) about the facts, not a sentence the endings finish.
        DatasetSpec("hellaswag_job", "hellaswag", make_hellaswag_job, 4, False, ALL_FORMS,
                    {"train": pool, "test": ev}, task_type="multiple_choice"),
    ]
