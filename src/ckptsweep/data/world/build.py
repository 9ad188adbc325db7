"""Building the world: every test example checked against the train splits and the corpus
(`TextIndex`), the tokenizer's training lines, and `build_world`, which writes it all.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ckptsweep.data.adapters import convert, input_text
from ckptsweep.data.tasks import TASK_TYPES
from ckptsweep.data.tokenizer import CHAT_MARKERS
from ckptsweep.data.world.config import WorldConfig
from ckptsweep.data.world.corpus import make_corpus
from ckptsweep.data.world.pools import Pools, _rng, make_pools
from ckptsweep.data.world.tasks import DatasetSpec, _Ctx, dataset_specs
from ckptsweep.data.world.vocab import ATTRS, LABEL_WORDS, MARKER
from ckptsweep.files import write_jsonl

TOKENIZER_REPEAT = 300
"""Copies of each marker / label-word / template line in the tokenizer's training lines."""
ENTITY_REPEAT = 5
"""Copies of the entity-name lines: enough for single tokens even in a tiny test corpus."""

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
    """Every word of every prompt template in ``ckptsweep.data.tasks`` (fields removed)."""
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

