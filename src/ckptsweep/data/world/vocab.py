"""The synthetic world's words: attributes, their surface forms, questions and value lists,
the syllables names are made of, label words and the marker. `fact` and `fact_id` turn an
attribute value into a sentence and an id (fact tracing uses both).
"""

from __future__ import annotations

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


def fact(attr: str, name: str, value: str, form: int) -> str:
    return FORMS[attr][form].format(x=name, v=value)


def fact_id(name: str, attr: str, value: str) -> str:
    return f"{name}|{attr}|{value}"
