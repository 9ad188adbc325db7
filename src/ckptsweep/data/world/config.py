"""`WorldConfig`: the size knobs of the synthetic world, and the corpus mixture's kinds.

Standard library only, on purpose: the parse-time study layer is to import `WorldConfig`
(to check a config's ``world`` block) and must not pay for the generators, the adapters or
the tokenizer library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ckptsweep.errors import ConfigError

DOC_KINDS = ("bio", "bio_attr_q", "bio_who_q", "bio_verify", "two_people")
DEFAULT_DOC_WEIGHTS = {"bio": 0.35, "bio_attr_q": 0.125, "bio_who_q": 0.125, "bio_verify": 0.20,
                       "two_people": 0.20}


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
            key, need = next(iter(low.items()))
            raise ConfigError(f"world.{key}", f"{getattr(self, key)} is too small: the world "
                              f"needs {key} >= {need}")
        for key in ("negation_p", "para_negation_p"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"world.{key}", f"{getattr(self, key)} must lie in [0, 1]")
        _check_weights(self.doc_weights)


def _check_weights(weights: dict[str, float]) -> None:
    unknown = set(weights) - set(DOC_KINDS)
    if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError("world.doc_weights", f"{weights} must map some of {DOC_KINDS} to "
                          "non-negative weights with a positive sum")
