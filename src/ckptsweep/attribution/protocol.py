"""Fact tracing (FTRACE, Akyürek et al., Findings of EMNLP 2022): the evaluation protocol.

The reference's re-ranking protocol (``ekinakyurek/influence``, ``eval/evaluate.py`` and
``eval/reranker_post.py``): every query gets a candidate set made of its true proponents,
BM25's top 100 training examples, 100 examples with the same answer and 100 random ones
(duplicates removed, order shuffled with a seed); each method scores the candidates and
is judged on its ranking by the reciprocal rank of the first true proponent and by
precision and recall at k = 1, 3, 5, 10, 25. Means over queries carry seeded bootstrap
intervals (``stats.bootstrap_ci``). A ``random`` method (seeded uniform scores) is the
floor every method must beat.

Ties (BM25 gives many candidates the same score) are broken by the shuffled candidate
order, through a stable sort, as the reference's shuffle does. numpy only: the methods
that need torch live in ``tracin``, the pipeline in ``attribution_run``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ckptsweep.analysis.stats import bootstrap_ci
from ckptsweep.attribution.config import METHODS  # noqa: F401  (the table's order)

KS = (1, 3, 5, 10, 25)


def reciprocal_rank(ranked: Sequence, correct: set) -> float:
    for i, x in enumerate(ranked):
        if x in correct:
            return 1.0 / (i + 1)
    return 0.0


def precision_recall(ranked: Sequence, correct: set, ks=KS) -> tuple[dict, dict]:
    """Precision and recall at each k: the share of the top k that is correct, and the
    share of the correct examples found in the top k."""
    p, r = {}, {}
    for k in ks:
        hits = sum(1 for x in ranked[:k] if x in correct)
        p[k] = hits / k
        r[k] = hits / len(correct) if correct else float("nan")
    return p, r


def query_metrics(ranked: Sequence, correct: set, ks=KS) -> dict[str, float]:
    """{"rr", "p@k", "r@k"} of one ranking."""
    p, r = precision_recall(ranked, correct, ks)
    out = {"rr": reciprocal_rank(ranked, correct)}
    out.update({f"p@{k}": p[k] for k in ks})
    out.update({f"r@{k}": r[k] for k in ks})
    return out


def rank(candidates: Sequence[int], scores: np.ndarray) -> list[int]:
    """Candidates ordered by descending score; ties keep the candidate order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [candidates[i] for i in order]


def candidate_set(proponents: Sequence[int], bm25_top: Sequence[int],
                  same_answer: Sequence[int], n_train: int, rng: np.random.Generator,
                  n_same: int = 100, n_random: int = 100) -> list[int]:
    """Training-example indices to re-rank for one query: the true proponents, BM25's top
    hits, up to ``n_same`` examples with the query's answer and ``n_random`` random ones,
    without duplicates, in a seeded random order."""
    same = list(same_answer)
    if len(same) > n_same:
        same = rng.choice(same, n_same, replace=False).tolist()
    rand = rng.choice(n_train, min(n_random, n_train), replace=False).tolist()
    pool = list(dict.fromkeys([*proponents, *bm25_top, *same, *rand]))
    return [pool[i] for i in rng.permutation(len(pool))]


def summarize(rows: list[dict], seed: int, n_boot: int, group=("model", "slice", "method"),
              ks=KS) -> list[dict]:
    """Per (model, slice, method): the mean of every metric over queries, with a
    bootstrap interval (the same seed for every method, so the resampled queries match)."""
    keys: dict[tuple, list[dict]] = {}
    for row in rows:
        keys.setdefault(tuple(row[g] for g in group), []).append(row)
    metrics = ["rr"] + [f"p@{k}" for k in ks] + [f"r@{k}" for k in ks]
    out = []
    for key, items in keys.items():
        items = sorted(items, key=lambda r: r["query"])
        for m in metrics:
            mean, low, high = bootstrap_ci([r[m] for r in items], seed=seed, n_boot=n_boot)
            out.append({**dict(zip(group, key, strict=True)),
                        "metric": "mrr" if m == "rr" else m, "value": mean,
                        "ci_low": low, "ci_high": high, "n": len(items)})
    return out
