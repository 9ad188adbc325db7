"""The entity pools one seed yields, and the sentence helpers every generator shares.

The underscored helpers are the world package's internals (the corpus and the task makers
use them), not API.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ckptsweep.data.world.config import WorldConfig
from ckptsweep.data.world.vocab import (
    ATTRS,
    CITY_SYLLABLES,
    LABEL_WORDS,
    NAME_SYLLABLES,
    OOD_SYLLABLES,
    PHRASES,
    VALUES,
    fact,
)


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
