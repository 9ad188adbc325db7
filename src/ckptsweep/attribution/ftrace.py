"""FTRACE-TREx (hub ``ekinakyurek/ftrace``) -> the fact-tracing records of ``attribution_data``.

The hub dataset has two configs, each one ``train`` split:

- ``abstracts``: TREx sentences as masked cloze pairs, e.g.
  ``{"inputs_pretokenized": "... hence \\"<extra_id_0>\\".", "targets_pretokenized":
  "<extra_id_0> South Asia", "facts": "P361,Q48,Q771405;P30,Q48,Q771405",
  "sentence_uris": ..., "page_uri", "masked_uri", "masked_type", "example_uris", "id"}``.
  One sentence appears once per masked entity; ``sentence_uris`` names the sentence.
- ``queries``: LAMA cloze queries, e.g. ``{"inputs_pretokenized": "Paul Ehrlich used to
  work in <extra_id_0> .", "targets_pretokenized": "<extra_id_0> Frankfurt", "uuid",
  "predicate_id": "P937", "obj_uri": "Q1794", "sub_uri": "Q57089", "obj_surface",
  "sub_surface"}``.

A fact is the triple ``predicate,object,subject`` (the order of the abstracts' ``facts``
entries); a query's true proponents are the abstracts whose ``facts`` contain its triple.
Training examples are identified by ``sentence_uris``, as in the reference's
``check_correct`` (``src/metric_utils.py``): the masked variants of one sentence are one
training example (the reference's "collapse" evaluation), whose text is the sentence with
its mask filled in (``get_sentence``) and whose answers are all of its masked targets.

Queries become causal-LM cloze prompts: the text before ``<extra_id_0>`` is the prompt,
the target the answer (LAMA's TREx templates put the object last; a query whose mask is
not at the end keeps only its prefix as the prompt).
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "<extra_id_0>"
HUB = "ekinakyurek/ftrace"


def target(row: dict) -> str:
    return row["targets_pretokenized"].replace(MASK, "").strip()


def sentence(row: dict) -> str:
    """The abstract with its mask filled in (the reference's ``get_sentence``)."""
    return row["inputs_pretokenized"].replace(MASK, target(row))


def fact_key(predicate: str, obj: str, sub: str) -> str:
    return f"{predicate},{obj},{sub}"


def parse_facts(field: str | None) -> list[str]:
    return [f.strip() for f in (field or "").split(";") if f.strip()]


def training_set(abstracts: Iterable[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """(training examples, fact -> ids of the examples stating it), one example per
    ``sentence_uris``, in order of first appearance."""
    by_sentence: dict[str, dict] = {}
    for row in abstracts:
        sid = str(row["sentence_uris"])
        rec = by_sentence.setdefault(sid, {"id": sid, "text": sentence(row), "facts": [],
                                           "answers": []})
        for f in parse_facts(row.get("facts")):
            if f not in rec["facts"]:
                rec["facts"].append(f)
        if target(row) not in rec["answers"]:
            rec["answers"].append(target(row))
    records = list(by_sentence.values())
    proponents: dict[str, list[str]] = {}
    for rec in records:
        for f in rec["facts"]:
            proponents.setdefault(f, []).append(rec["id"])
    return records, proponents


def query(row: dict) -> dict:
    """A hub query row as an ``attribution_data`` query."""
    text = row["inputs_pretokenized"]
    prompt = text.split(MASK)[0].rstrip()
    answer = target(row)
    return {"id": str(row["uuid"]), "fact": fact_key(row["predicate_id"], row["obj_uri"],
                                                     row["sub_uri"]),
            "prompt": prompt, "answer": answer,
            "text": " ".join(text.replace(MASK, answer).split())}


def queries(rows: Iterable[dict], proponents: dict[str, list[str]]) -> list[dict]:
    """The queries whose fact has at least one proponent (the others cannot be traced)."""
    out = [query(r) for r in rows]
    return [q for q in out if proponents.get(q["fact"])]


def load_hub(config: str, revision: str | None = None):
    """One config (``abstracts`` or ``queries``) of the hub dataset, as a ``datasets``
    split (cluster use; needs network or a populated cache)."""
    from datasets import load_dataset

    return load_dataset(HUB, config, split="train", revision=revision)
