"""The pre-training corpus: documents about pool people with fresh attributes, and about the
persistent people, whose facts are recorded with the documents that state them.
"""

from __future__ import annotations

import random

from ckptsweep.data.world.config import DOC_KINDS, WorldConfig, _check_weights
from ckptsweep.data.world.pools import Pools, _other, _person, _rng
from ckptsweep.data.world.vocab import (
    ALL_FORMS,
    ATTR_QUESTIONS,
    ATTRS,
    VERIFY_CLAUSES,
    WHO_QUESTIONS,
    fact,
    fact_id,
)


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
