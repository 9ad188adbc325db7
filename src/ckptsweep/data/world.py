"""The embedded default: a synthetic world generated deterministically from a seed.

Follows the measured recipe (``notes/world-recipe.md``, run r3). A fixed pool of people,
cities and attribute values, each of which becomes a single BPE token; every document and
task example draws fresh attributes for its people, so every task is a reading task and
nothing can be memorised. The exception, on purpose, are a few *persistent* people whose
attributes never change: they are stated in several documents and surface forms, so
closed-book recall and fact tracing have a ground truth (``world.json`` maps each of their
facts to the documents stating it).

``build_world(cfg, out_dir)`` writes::

    out_dir/corpus.jsonl                 {"id": "doc-000123", "kind": "bio", "text": ...,
                                          "facts": [...]}
    out_dir/tokenizer_lines.txt          tokenizer-only training lines (markers, label words)
    out_dir/raw/{dataset}/{split}.jsonl  task data in the real hub datasets' schemas
    out_dir/world.json                   config, sizes, pools, persistent facts, collisions

What the corpus holds and never holds is the point of the design: the benchmark formats
("{facts} Question: ... Answer: ...") are in it, so the base model can learn them during
pre-training; the "###" markers, the NLI and paraphrase formats and label words, negated
sentences, the summary sentence style and the answer -> question direction never are, so
only fine-tuning teaches them.

Every test example is checked against all train splits and the corpus: if its input (or
its passage, as a sentence sequence) occurs there, it is regenerated and counted in
``world.json["rejected_collisions"]``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckptsweep.data.adapters import QUESTION_SEP, SCHEMA_TASK, convert, input_text
from ckptsweep.data.tasks import TASK_TYPES
from ckptsweep.data.tokenizer import CHAT_MARKERS
from ckptsweep.files import write_jsonl

ATTRS = ("city", "job", "pet", "hobby", "food")

FORMS: dict[str, tuple[str, ...]] = {
    # Forms 0-1 are canonical, 2-3 alternates (the OOD surface forms). The value is always
    # the last word before the period.
    "city": ("{x} lives in {v}.", "{x} is from {v}.", "{x} resides in {v}.",
             "The home of {x} is {v}."),
    "job": ("{x} works as a {v}.", "{x} is a {v}.", "{x} earns a living as a {v}.",
            "The job of {x} is {v}."),
    "pet": ("{x} has a {v}.", "{x} owns a {v}.", "{x} keeps a {v}.", "The pet of {x} is a {v}."),
    "hobby": ("{x} enjoys {v}.", "{x} likes {v}.", "{x} spends free time on {v}.",
              "The hobby of {x} is {v}."),
    "food": ("{x} eats {v}.", "{x} loves {v}.", "{x} often buys {v}.",
             "The favourite food of {x} is {v}."),
}
CANONICAL_FORMS = (0, 1)
ALTERNATE_FORMS = (2, 3)
ALL_FORMS = (0, 1, 2, 3)

NEGATIONS = {  # only ever in NLI and paraphrase data, never in the corpus
    "city": "{x} does not live in {v}.", "job": "{x} is not a {v}.",
    "pet": "{x} does not have a {v}.", "hobby": "{x} does not enjoy {v}.",
    "food": "{x} does not eat {v}.",
}
ATTR_QUESTIONS = {
    "city": "Where does {x} live?", "job": "What does {x} work as?",
    "pet": "What pet does {x} have?", "hobby": "What does {x} enjoy?", "food": "What does {x} eat?",
}
WHO_QUESTIONS = {
    "city": "Who lives in {v}?", "job": "Who works as a {v}?", "pet": "Who has a {v}?",
    "hobby": "Who enjoys {v}?", "food": "Who eats {v}?",
}
VERIFY_CLAUSES = {  # BoolQ style: lower-case, no question mark (the adapter adds both back)
    "city": "is it true that {x} lives in {v}", "job": "is it true that {x} works as a {v}",
    "pet": "is it true that {x} owns a {v}", "hobby": "is it true that {x} enjoys {v}",
    "food": "is it true that {x} eats {v}",
}
PHRASES = {  # attribute phrases for summaries and chat answers ("X is a J from C who ...")
    "city": "lives in {v}", "job": "works as a {v}", "pet": "has a {v}",
    "hobby": "enjoys {v}", "food": "eats {v}",
}

VALUES: dict[str, tuple[str, ...]] = {  # cities come from the seed; the rest is closed
    "job": ("baker", "farmer", "doctor", "teacher", "painter", "nurse", "pilot", "lawyer",
            "miner", "tailor", "butcher", "sailor", "singer", "writer", "dancer", "plumber",
            "judge", "potter", "weaver", "banker"),  # consonant first: the article is "a"
    "pet": ("dog", "cat", "parrot", "rabbit", "hamster", "turtle", "horse", "goat", "snake",
            "lizard"),
    "hobby": ("chess", "painting", "hiking", "fishing", "cooking", "knitting", "gardening",
              "swimming", "dancing", "reading", "cycling", "singing", "climbing", "sailing"),
    "food": ("apples", "rice", "bread", "cheese", "soup", "noodles", "pasta", "beans",
             "carrots", "pears", "honey", "salad"),
}

NAME_SYLLABLES = ("ka", "lo", "mi", "ra", "to", "ne", "sa", "vi", "du", "ren", "bel", "tor",
                  "mar", "lin", "zo", "fa", "gor", "pi", "sel", "dan", "ju", "ko", "wen", "ta",
                  "ber", "ri", "hal", "mo")
CITY_SYLLABLES = ("bri", "kel", "vor", "thal", "dun", "esk", "grim", "ost", "pell", "quar",
                  "stav", "tre", "ulm", "wyn", "yar", "zel", "cor", "fen")
OOD_SYLLABLES = ("pen", "dor", "lar", "vin", "tes", "nar", "bis", "por", "lum", "der")
"""Disjoint from the pool's syllables: OOD names never occur in the corpus and come out as
several tokens (3-6 with the default world's tokenizer)."""

LABEL_WORDS = ("entailment", "neutral", "contradiction", "yes", "no", "true", "false")
MARKER = "###"
NEVER_IN_CORPUS = (MARKER, "entailment", "neutral", "contradiction", "yes", "no")
"""Words the corpus must never contain (checked by the tests)."""

DOC_KINDS = ("bio", "bio_attr_q", "bio_who_q", "bio_verify", "two_people")
DEFAULT_DOC_WEIGHTS = {"bio": 0.35, "bio_attr_q": 0.125, "bio_who_q": 0.125, "bio_verify": 0.20,
                       "two_people": 0.20}
INSTRUCT_KINDS = ("world_restate", "world_profile", "world_qa", "world_who")

TOKENIZER_REPEAT = 300
"""Copies of each marker / label-word / template line in the tokenizer's training lines."""
ENTITY_REPEAT = 5
"""Copies of the entity-name lines: enough for single tokens even in a tiny test corpus."""


@dataclass
class WorldConfig:
    """Size knobs of the synthetic world. Defaults are the recipe's run r3."""

    seed: int = 0
    """Seed of everything: pools, corpus and every split (each from its own sub-stream)."""
    n_people: int = 300
    """Pool of person names (2-3 syllables), drawn per document with fresh attributes."""
    n_cities: int = 60
    """City names (two syllables each)."""
    n_ood_people: int = 200
    """Unseen names for the OOD sets; never in the corpus, several tokens each."""
    n_persistent: int = 24
    """People with fixed attributes (closed-book facts with known proponent documents)."""
    persistent_docs: int = 8
    """Corpus documents about each persistent person (part of ``corpus_docs``)."""
    corpus_docs: int = 19700
    """Pre-training documents in all."""
    doc_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DOC_WEIGHTS))
    """Share of each document kind (bio, bio_attr_q, bio_who_q, bio_verify, two_people): the
    corpus *mixture*; vary it to build a population of pre-training mixtures."""
    n_train: int = 2000
    """Train examples of each in-domain SFT task (nli, para, summ, qg)."""
    n_eval: int = 200
    """Test examples of every evaluation set."""
    n_shot_pool: int = 50
    """Train split (few-shot demonstrations only) of the OOD sets and the benchmarks."""
    n_instruct: int = 2000
    """Examples of the instruction mixture (train only)."""
    negation_p: float = 0.7
    """NLI: share of contradictions that are a negation (the lexical cue); the rest change the
    value. At 1.0 the checkpoint trend disappears, at 0 nothing is learnt (recipe §6)."""
    para_negation_p: float = 0.5
    """Paraphrase: share of "no" pairs that negate one fact; the rest move both facts to
    another person (recipe r3)."""
    max_tries: int = 1000
    """Regeneration attempts for one test example before giving up on clean separation."""

    def __post_init__(self) -> None:
        # Multiple-choice items need 3 distractor names and cities; paraphrase needs a second
        # OOD person. Fail here rather than deep inside a generator.
        minimum = {"n_people": 4, "n_cities": 4, "n_ood_people": 2, "corpus_docs": 1}
        low = {k: v for k, v in minimum.items() if getattr(self, k) < v}
        counts = ("n_persistent", "persistent_docs", "n_train", "n_eval", "n_shot_pool",
                  "n_instruct")
        low.update({k: 0 for k in counts if getattr(self, k) < 0})
        if low:
            need = ", ".join(f"{k} >= {v}" for k, v in low.items())
            raise ValueError(f"WorldConfig too small: {need} required")
        if not (0 <= self.negation_p <= 1 and 0 <= self.para_negation_p <= 1):
            raise ValueError("negation_p and para_negation_p must lie in [0, 1]")
        _check_weights(self.doc_weights)


@dataclass(frozen=True)
class Pools:
    """The entity pools one seed yields."""

    names: tuple[str, ...]
    """Pool names: every document and in-domain example draws its people from these."""
    persistent: dict[str, dict[str, str]]
    """Persistent people: name -> fixed attribute values."""
    cities: tuple[str, ...]
    ood_names: tuple[str, ...]
    values: dict[str, tuple[str, ...]]
    """Attribute -> its closed value list (cities included)."""


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


# --------------------------------------------------------------------------------- pools


def _rng(seed: int, stream: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED; one
    # stream per purpose keeps e.g. the corpus unchanged when n_eval changes.
    return random.Random(f"{seed}/{stream}")


def _make_names(rng: random.Random, syllables: tuple[str, ...], n: int, n_syl: tuple[int, ...],
                taken: set[str], distinct_syllables: bool = False) -> list[str]:
    names: list[str] = []
    for _ in range(200 * n + 1000):
        if len(names) == n:
            return names
        k = rng.choice(n_syl)
        parts = rng.sample(syllables, k) if distinct_syllables else rng.choices(syllables, k=k)
        name = "".join(parts).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    raise ValueError(f"cannot draw {n} distinct names from {len(syllables)} syllables")


def make_pools(cfg: WorldConfig) -> Pools:
    rng = _rng(cfg.seed, "pools")
    taken = {w for vals in VALUES.values() for w in vals} | set(LABEL_WORDS)
    cities = _make_names(rng, CITY_SYLLABLES, cfg.n_cities, (2,), taken, distinct_syllables=True)
    people = _make_names(rng, NAME_SYLLABLES, cfg.n_people + cfg.n_persistent, (2, 3), taken)
    ood = _make_names(rng, OOD_SYLLABLES, cfg.n_ood_people, (2, 3), taken)
    values = {"city": tuple(cities), **VALUES}
    persistent = {name: {a: rng.choice(values[a]) for a in ATTRS}
                  for name in people[cfg.n_people:]}
    return Pools(names=tuple(people[:cfg.n_people]), persistent=persistent, cities=tuple(cities),
                 ood_names=tuple(ood), values=values)


# ------------------------------------------------------------------------------ sentences


def fact(attr: str, name: str, value: str, form: int) -> str:
    return FORMS[attr][form].format(x=name, v=value)


def fact_id(name: str, attr: str, value: str) -> str:
    return f"{name}|{attr}|{value}"


def _person(rng: random.Random, pools: Pools, names: tuple[str, ...]) -> tuple[str, dict]:
    return rng.choice(names), {a: rng.choice(pools.values[a]) for a in ATTRS}


def _other(rng: random.Random, options: tuple[str, ...], *exclude: str) -> str:
    while True:
        pick = rng.choice(options)
        if pick not in exclude:
            return pick


def _others(rng: random.Random, options: tuple[str, ...], k: int, exclude: str) -> list[str]:
    return rng.sample([o for o in options if o != exclude], k)


def _facts(rng: random.Random, name: str, attrs: dict, chosen: list[str],
           forms: tuple[int, ...]) -> str:
    return " ".join(fact(a, name, attrs[a], rng.choice(forms)) for a in chosen)


def _join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def summary_sentence(name: str, attrs: dict[str, str]) -> str:
    """The canonical summary ("X is a J from C who has a P and enjoys H."): never in the corpus."""
    text = f"{name} is a {attrs['job']}" if "job" in attrs else f"{name} is someone"
    if "city" in attrs:
        text += f" from {attrs['city']}"
    clauses = [PHRASES[a].format(v=attrs[a]) for a in ("pet", "hobby", "food") if a in attrs]
    if clauses:
        text += " who " + _join_and(clauses)
    return text + "."


def _placed(correct: str, wrong: list[str], position: int) -> list[str]:
    options = list(wrong)
    options.insert(position, correct)
    return options


# --------------------------------------------------------------------------------- corpus


def _doc(rng: random.Random, pools: Pools, kind: str, name: str, attrs: dict) -> tuple[str, list]:
    """One pre-training document of ``kind`` about ``name`` (plus a second person)."""
    chosen = rng.sample(ATTRS, rng.randint(3, 5))
    sents = [fact(a, name, attrs[a], rng.choice(ALL_FORMS)) for a in chosen]
    facts = [fact_id(name, a, attrs[a]) for a in chosen]
    tail = ""
    if kind == "bio_attr_q":
        a = rng.choice(chosen)
        tail = f"Question: {ATTR_QUESTIONS[a].format(x=name)} Answer: {attrs[a]}."
    elif kind == "bio_who_q":
        a = rng.choice(chosen)
        tail = f"Question: {WHO_QUESTIONS[a].format(v=attrs[a])} Answer: {name}."
    elif kind == "bio_verify":
        a = rng.choice(chosen)
        true = rng.random() < 0.5
        value = attrs[a] if true else _other(rng, pools.values[a], attrs[a])
        clause = VERIFY_CLAUSES[a].format(x=name, v=value)
        tail = f"Question: {clause[0].upper()}{clause[1:]}? Answer: {'true' if true else 'false'}."
    elif kind == "two_people":
        name2, attrs2 = _person(rng, pools, pools.names)
        while name2 == name:
            name2, attrs2 = _person(rng, pools, pools.names)
        chosen2 = rng.sample(ATTRS, 3)
        sents += [fact(a, name2, attrs2[a], rng.choice(ALL_FORMS)) for a in chosen2]
        facts += [fact_id(name2, a, attrs2[a]) for a in chosen2]
        rng.shuffle(sents)
        if rng.random() < 0.5:
            who, who_attrs, who_chosen = rng.choice(((name, attrs, chosen),
                                                     (name2, attrs2, chosen2)))
            a = rng.choice(who_chosen)
            tail = f"Question: {ATTR_QUESTIONS[a].format(x=who)} Answer: {who_attrs[a]}."
    return " ".join(sents + ([tail] if tail else [])), facts


def _check_weights(weights: dict[str, float]) -> None:
    unknown = set(weights) - set(DOC_KINDS)
    if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"doc_weights {weights} must map some of {DOC_KINDS} to non-negative "
                         "weights with a positive sum")


def make_corpus(cfg: WorldConfig, pools: Pools) -> tuple[list[dict], dict[str, list[str]]]:
    """The corpus documents, and each persistent fact -> the ids of documents stating it."""
    _check_weights(cfg.doc_weights)
    rng = _rng(cfg.seed, "corpus")
    kinds = [k for k in DOC_KINDS if cfg.doc_weights.get(k, 0) > 0]
    weights = [cfg.doc_weights[k] for k in kinds]
    # Persistent people get single-person documents (of the mixture's kinds, if it has any).
    single = [k for k in kinds if k != "two_people"]
    single_w = [cfg.doc_weights[k] for k in single]
    if not single:
        single, single_w = ["bio"], [1.0]
    persistent = list(pools.persistent)
    slots: list[str | None] = [p for p in persistent for _ in range(cfg.persistent_docs)]
    slots = slots[:cfg.corpus_docs]
    slots += [None] * (cfg.corpus_docs - len(slots))
    rng.shuffle(slots)  # persistent documents scattered over the corpus

    docs, proponents = [], {}
    for i, who in enumerate(slots):
        doc_id = f"doc-{i:06d}"
        if who is None:
            kind = rng.choices(kinds, weights)[0]
            name, attrs = _person(rng, pools, pools.names)
        else:
            kind = rng.choices(single, single_w)[0]
            name, attrs = who, pools.persistent[who]
        text, facts = _doc(rng, pools, kind, name, attrs)
        docs.append({"id": doc_id, "kind": kind, "text": text, "facts": facts})
        if who is not None:
            for f in facts:
                proponents.setdefault(f, []).append(doc_id)
    return docs, dict(sorted(proponents.items()))


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


# ------------------------------------------------------------------- clean separation

_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def sentences(text: str) -> list[str]:
    """Whitespace-normalised sentences (split after . ? !)."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


class TextIndex:
    """Answers "does this passage occur, as a run of whole sentences, in any indexed text?".

    Indexes every sentence's positions, so a lookup only compares the few texts that contain
    the passage's first sentence.
    """

    def __init__(self) -> None:
        self._texts: list[list[str]] = []
        self._where: dict[str, list[tuple[int, int]]] = {}

    def add(self, text: str) -> None:
        sents = sentences(text)
        t = len(self._texts)
        self._texts.append(sents)
        for pos, sent in enumerate(sents):
            self._where.setdefault(sent, []).append((t, pos))

    def contains(self, text: str) -> bool:
        sents = sentences(text)
        if not sents:
            return False
        n = len(sents)
        return any(self._texts[t][pos:pos + n] == sents for t, pos in self._where.get(sents[0], ()))


def passage(task: str, record: dict) -> str:
    """The canonical record's reading passage (premise, document, context, ...)."""
    first = TASK_TYPES[task].fields[0]
    value = record[first]
    if task == "multiple_choice" and not value:
        return record["question"]
    return value if isinstance(value, str) else ""


# ------------------------------------------------------------------------------ building


def _labels(rng: random.Random, n: int, k: int) -> list[int]:
    labels = [i % k for i in range(n)]
    rng.shuffle(labels)
    return labels


def _split_records(cfg: WorldConfig, pools: Pools, spec: DatasetSpec, split: str,
                   seen: set[str] | None, index: TextIndex | None) -> tuple[list[dict], int]:
    """Records of one split; with ``index``, test records that collide are regenerated."""
    rng = _rng(cfg.seed, f"{spec.name}/{split}")
    ctx = _Ctx(rng, pools, cfg, spec.name, split,
               pools.ood_names if spec.ood else pools.names, spec.forms)
    records, rejected = [], 0
    for i, label in enumerate(_labels(rng, spec.sizes[split], spec.n_labels)):
        for _ in range(cfg.max_tries):
            rec = spec.make(ctx, i, label)
            if index is None:
                break
            canon = convert(spec.schema, rec, i, spec.name)
            key = input_text(spec.task, canon)
            if key not in seen and not index.contains(passage(spec.task, canon)):
                seen.add(key)
                break
            rejected += 1
        else:
            raise RuntimeError(f"{spec.name}/{split}: no clean example after {cfg.max_tries} "
                               "tries; the world is too small for the requested sizes")
        records.append(rec)
    return records, rejected


def template_words() -> list[str]:
    """Every word of every prompt template in ``tasks.py`` (fields removed)."""
    words: dict[str, None] = {}
    for ttype in TASK_TYPES.values():
        for _, text in ttype.templates:
            for w in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", text)):
                words[w] = None
    return list(words)


def tokenizer_lines(pools: Pools) -> list[str]:
    """Tokenizer-only training lines: they make markers, label words and prompt words single
    tokens without putting any of them into the pre-training corpus."""
    templates = [" ".join(re.sub(r"\{\w+\}", " ", text).split())
                 for ttype in TASK_TYPES.values() for _, text in ttype.templates]
    once = [
        " ".join(t for t in templates if MARKER in t),
        " " + " ".join(LABEL_WORDS),
        " " + " ".join(template_words()),
        " ".join(CHAT_MARKERS),
        " does not is not someone who from and",  # negation and summary words (task data)
    ]
    entities = [
        " " + " ".join(pools.names), " " + " ".join(pools.persistent),
        " " + " ".join(pools.cities),
        " " + " ".join(v for a in ATTRS if a != "city" for v in pools.values[a]),
    ]
    return once * TOKENIZER_REPEAT + entities * ENTITY_REPEAT


def single_token_words(pools: Pools) -> list[str]:
    """Words the trained tokenizer must keep whole (checked by ``tokenizer.train_tokenizer``)."""
    values = [v for a in ATTRS for v in pools.values[a]]
    return list(dict.fromkeys([*pools.names, *pools.persistent, *values, *LABEL_WORDS, MARKER,
                               *CHAT_MARKERS]))


def build_world(cfg: WorldConfig, out_dir: Path) -> dict:
    """Generate the whole world into ``out_dir``; return the summary also written to
    ``world.json``. Same config -> byte-identical files."""
    out_dir = Path(out_dir)
    pools = make_pools(cfg)
    docs, proponents = make_corpus(cfg, pools)
    write_jsonl(out_dir / "corpus.jsonl", docs)
    (out_dir / "tokenizer_lines.txt").write_text("\n".join(tokenizer_lines(pools)) + "\n",
                                                 encoding="utf-8")

    # Train splits first, then every test split against the corpus and all train inputs.
    specs = dataset_specs(cfg)
    index = TextIndex()
    for doc in docs:
        index.add(doc["text"])
    train_keys: set[str] = set()
    sizes: dict[str, dict[str, int]] = {}
    for spec in specs:
        records, _ = _split_records(cfg, pools, spec, "train", None, None)
        write_jsonl(out_dir / "raw" / spec.name / "train.jsonl", records)
        for i, rec in enumerate(records):
            key = input_text(spec.task, convert(spec.schema, rec, i, spec.name))
            train_keys.add(key)
            index.add(key)
        sizes[spec.name] = {"train": len(records)}
    rejected = {}
    for spec in specs:
        if "test" not in spec.sizes:
            continue
        seen = set(train_keys)  # also keeps the test split free of duplicates
        records, rejected[spec.name] = _split_records(cfg, pools, spec, "test", seen, index)
        write_jsonl(out_dir / "raw" / spec.name / "test.jsonl", records)
        sizes[spec.name]["test"] = len(records)

    summary = {
        "config": asdict(cfg),
        "datasets": {s.name: {"schema": s.schema, "task": s.task, "ood": s.ood,
                              "splits": sizes[s.name]} for s in specs},
        "corpus": {"docs": len(docs), "chars": sum(len(d["text"]) for d in docs)},
        "rejected_collisions": rejected,
        "pools": {"names": list(pools.names), "cities": list(pools.cities),
                  "ood_names": list(pools.ood_names),
                  "values": {a: list(v) for a, v in pools.values.items() if a != "city"}},
        "persistent": pools.persistent,
        "persistent_facts": proponents,
        "single_token_words": single_token_words(pools),
        "label_words": list(LABEL_WORDS),
        "marker": MARKER,
        "chat_markers": list(CHAT_MARKERS),
    }
    (out_dir / "world.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    return summary


def iter_corpus_texts(out_dir: Path) -> Iterator[str]:
    """The corpus documents' texts, in order (for tokenizer training and pre-training)."""
    with (Path(out_dir) / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["text"]

