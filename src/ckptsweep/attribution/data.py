"""Training sets and fact queries for fact tracing (FTRACE), from the synthetic world.

Fact tracing needs, for every query fact, the training examples that state it. Two slices:

- **pretrain**: the pre-training corpus; queries are the persistent people's facts
  (``world.json["persistent_facts"]`` maps each to the documents stating it).
- **finetune** (FTRACE's "fine-tune-learned" slice): a closed-book fact fine-tune. A few
  pool people get fixed attributes that the corpus never gave them; short "abstracts"
  state 2-3 of those facts each, mixed with distractor abstracts about other pool people
  with fresh attributes (which no model can memorise) and lexical decoys (a fine-tune
  person's fact beside another person who has that person's answer to another question).
  The fine-tune on these abstracts is what teaches the facts, so the abstracts stating a
  fact are its true proponents.

Both slices share one record shape. A training example is
``{"id", "text", "facts": [fact ids], "answers": [values]}`` and a query is
``{"id", "fact", "prompt", "answer", "text"}``: ``prompt`` is the closed-book cloze
("Kalo lives in"), ``answer`` the value ("Yarcor"), ``text`` the prompt with the answer
filled in (what BM25 and the embeddings see, as in the reference's
``get_tokenized_query``). This module imports no torch.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ckptsweep.data.world.vocab import ALL_FORMS, ATTRS, FORMS, fact, fact_id
from ckptsweep.errors import ConfigError

QUERY_FORM = 0
"""The surface form of closed-book queries (form 0: "X lives in V.")."""


@dataclass
class FactFinetuneConfig:
    """The closed-book fact fine-tune of the ``finetune`` slice (attribution.finetune)."""

    people: int = 20
    """Pool people who get fixed attributes (5 facts each) taught only by the fine-tune."""
    docs_per_person: int = 8
    """Abstracts about each of them."""
    facts_per_doc: int = 3
    """Facts stated in each abstract (at most 5)."""
    distractors: int = 50
    """Abstracts about other pool people with fresh attributes (hard negatives)."""
    mixed: int = 100
    """Lexical decoys: abstracts stating one fact of a fine-tune person next to another
    pool person who shares that fine-tune person's value of a *different* attribute
    ("Kalo is a baker. Mira lives in Yarcor." for Kalo's fact "Kalo lives in Yarcor"), so
    the query's name and answer co-occur in an example that does not state its fact."""
    epochs: int = 12
    """Passes over the abstracts."""
    batch_size: int = 8
    """Abstracts per optimizer step."""
    lr: float = 2e-3
    """Constant AdamW learning rate (so every saved state carries the same weight)."""
    states: int = 3
    """Saved states for TracIn, evenly spaced over the optimizer steps (the last is the end)."""
    seed: int = 0
    """Seed of the facts, the abstracts and the example order."""


def split_fact(fid: str) -> tuple[str, str, str]:
    name, attr, value = fid.split("|")
    return name, attr, value


def query_for(fid: str, qid: str | None = None) -> dict:
    """The closed-book query of a synthetic fact id ``name|attr|value``."""
    name, attr, value = split_fact(fid)
    prompt = FORMS[attr][QUERY_FORM].split("{v}")[0].format(x=name).rstrip()
    return {"id": qid or fid, "fact": fid, "prompt": prompt, "answer": value,
            "text": fact(attr, name, value, QUERY_FORM)}


def _values(world: dict) -> dict[str, list[str]]:
    return {"city": list(world["pools"]["cities"]), **world["pools"]["values"]}


def make_finetune_set(world: dict, cfg: FactFinetuneConfig) -> tuple[list[dict], dict]:
    """(abstracts, {fact id: [abstract ids]}) of the closed-book fact fine-tune."""
    if not 1 <= cfg.facts_per_doc <= len(ATTRS):
        raise ConfigError("attribution.finetune.facts_per_doc", f"must lie in 1..{len(ATTRS)}")
    rng = random.Random(f"{world['config']['seed']}/attribution/{cfg.seed}")
    values = _values(world)
    names = list(world["pools"]["names"])
    if cfg.people >= len(names):
        raise ConfigError("attribution.finetune.people", f"{cfg.people} must be below the "
                          f"world's pool of people ({len(names)}, world.n_people)")
    people = rng.sample(names, cfg.people)
    others = [n for n in names if n not in set(people)]
    fixed = {p: {a: rng.choice(values[a]) for a in ATTRS} for p in people}

    docs: list[tuple[str, dict, list[str]]] = []
    for p in people:
        # Cycle through the attributes so every fact is stated in about the same number
        # of abstracts (docs_per_person * facts_per_doc / 5).
        order: list[str] = []
        while len(order) < cfg.docs_per_person * cfg.facts_per_doc:
            order += rng.sample(ATTRS, len(ATTRS))
        for d in range(cfg.docs_per_person):
            chosen = list(dict.fromkeys(order[d * cfg.facts_per_doc:(d + 1) * cfg.facts_per_doc]))
            docs.append((p, fixed[p], chosen))
    for _ in range(cfg.distractors):
        p = rng.choice(others)
        docs.append((p, {a: rng.choice(values[a]) for a in ATTRS},
                     rng.sample(ATTRS, cfg.facts_per_doc)))
    for _ in range(cfg.mixed):
        p, o = rng.choice(people), rng.choice(others)
        a, b = rng.sample(ATTRS, 2)
        docs.append((p, fixed[p], [a], o, {b: fixed[p][b]}))
    rng.shuffle(docs)

    records, proponents = [], {}
    for i, (p, attrs, chosen, *decoy) in enumerate(docs):
        rid = f"ft-{i:05d}"
        sents = [fact(a, p, attrs[a], rng.choice(ALL_FORMS)) for a in chosen]
        facts = [fact_id(p, a, attrs[a]) for a in chosen]
        answers = [attrs[a] for a in chosen]
        if decoy:  # the other person's fact, sharing a value with p's other attribute
            o, oattrs = decoy
            sents += [fact(b, o, v, rng.choice(ALL_FORMS)) for b, v in oattrs.items()]
            facts += [fact_id(o, b, v) for b, v in oattrs.items()]
            answers += list(oattrs.values())
        text = " ".join(sents)
        records.append({"id": rid, "text": text, "facts": facts, "answers": answers})
        if p in fixed:
            for f in facts[:len(chosen)]:
                proponents.setdefault(f, []).append(rid)
    return records, dict(sorted(proponents.items()))


def corpus_set(corpus_path: Path, world: dict) -> tuple[list[dict], dict]:
    """(corpus documents, persistent fact -> document ids) of the ``pretrain`` slice."""
    records = []
    with open(corpus_path, encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            records.append({"id": doc["id"], "text": doc["text"], "facts": doc["facts"],
                            "answers": [split_fact(f)[2] for f in doc["facts"]]})
    return records, dict(world["persistent_facts"])
