"""Labels of classification: a label's lenient first tokens (`lenient_label_tokens`, the
paper's Appendix B.1), greedy decoding restricted to the labels (`trie_greedy`), the
first label word of a free output (`first_label`) and the combination of a label's
spellings (`logsumexp`).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

_NON_SEMANTIC = string.whitespace + string.punctuation


def lenient_label_tokens(tokenizer, labels: Sequence[str]) -> list[list[int]]:
    """Per label, the vocabulary tokens that spell it or a prefix of it up to case and
    surrounding whitespace and punctuation (paper, Appendix B.1): for ``yes``, ``"yes"``,
    ``" Yes"``, ``"YES:"``, ``" y"``... Tokens that fit two labels, and special tokens,
    are left out."""
    lowered = [label.lower() for label in labels]
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[t] for t in range(len(tokenizer))])
    found: list[list[int]] = [[] for _ in labels]
    for tid, text in enumerate(texts):
        norm = text.strip(_NON_SEMANTIC).lower()
        hits = [k for k, label in enumerate(lowered) if norm and label.startswith(norm)]
        if len(hits) == 1 and tid not in special:
            found[hits[0]].append(tid)
    return found


def trie_greedy(cands: Sequence[Sequence[list[int]]],
                logprobs: Sequence[Sequence[list[float]]]) -> int:
    """The label that greedy decoding restricted to the candidates' token sequences
    produces: ``cands[k]`` are label k's token-id variants, ``logprobs[k]`` their
    per-token log-probabilities (`logprobs.token_logprobs`). At each depth the best next token
    among the candidates still alive is taken (candidates that share a prefix share the
    next-token distribution); decoding ends when a candidate is complete."""
    alive = [(k, ids, lps) for k, (variants, values) in enumerate(zip(cands, logprobs,
                                                                      strict=True))
             for ids, lps in zip(variants, values, strict=True)]
    depth = 0
    while True:
        done = [k for k, ids, _ in alive if len(ids) == depth]
        if done:
            return done[0]
        token = max(alive, key=lambda c: c[2][depth])[1][depth]
        alive = [c for c in alive if c[1][depth] == token]
        depth += 1


def first_label(text: str, labels: Sequence[str]) -> int | None:
    """Index of the label word that occurs first in ``text`` (whole word, any case; the
    longer label on a tie), or None."""
    found = []
    for k, label in enumerate(labels):
        match = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, re.IGNORECASE)
        if match:
            found.append((match.start(), -len(label), k))
    return min(found)[2] if found else None


def logsumexp(values: Sequence[float]) -> float:
    """``log(sum(exp(values)))``, without overflow: a label's probability over its spellings."""
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(v - top) for v in values))
