"""BM25+ with the FTRACE reference's semantics, through the fast ``bm25s`` library.

The reference (``ekinakyurek/influence``, ``get_nns_bm25.py``) ranks abstracts with
``rank_bm25.BM25Plus`` at its defaults (k1 1.5, b 0.75, delta 1) over whitespace tokens of
the text with the answer filled in; ``bm25s`` with ``method="bm25+"`` computes the same
scores (checked against ``rank_bm25`` in the tests) in a sparse index.
"""

from __future__ import annotations

import numpy as np

K1, B, DELTA = 1.5, 0.75, 1.0


def tokenize(text: str) -> list[str]:
    """Whitespace tokens, as the reference's ``text.split(" ")`` (runs of spaces collapsed)."""
    return text.split()


class BM25Plus:
    """BM25+ over a fixed list of texts: ``scores(query)`` for every document."""

    def __init__(self, texts: list[str], k1: float = K1, b: float = B, delta: float = DELTA):
        import bm25s

        self.n = len(texts)
        self.index = bm25s.BM25(method="bm25+", k1=k1, b=b, delta=delta, dtype="float64")
        self.index.index([tokenize(t) for t in texts], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        return np.asarray(self.index.get_scores(tokenize(query)), dtype=np.float64)

    def top(self, query: str, k: int) -> np.ndarray:
        """Indices of the ``k`` best documents, best first (ties by index)."""
        s = self.scores(query)
        return np.argsort(-s, kind="stable")[:k]
