"""The prediction-method ablation table (the paper's Table 2): accuracy per method from
the ablation's per-example predictions (``ckptsweep ablation``)."""

from __future__ import annotations

import pandas as pd

from ckptsweep.analysis import stats
from ckptsweep.analysis.names import ABLATION_METHODS

ABLATION_KEYS = ["model", "step", "variant", "eval_set", "shots", "method"]
ABLATION_COLUMNS = [*ABLATION_KEYS, "accuracy", "ci_low", "ci_high", "n"]
ABLATION_ORDER = ABLATION_METHODS
"""Method order of the ablation table (the paper's Table 2, then our default)."""


def ablation_table(predictions: pd.DataFrame, seed: int = 0, n_boot: int = stats.N_BOOT,
                   alpha: float = stats.ALPHA) -> pd.DataFrame:
    """The paper's Table 2: accuracy per (model, step, variant, eval set, shots, method)
    from the ablation's per-example predictions (``ckptsweep ablation``), with a seeded
    percentile bootstrap interval over the examples (sorted by id, so the intervals of
    the methods are paired). Base rows come first, methods in ``ABLATION_ORDER``."""
    ex = predictions[predictions["metric"] == "accuracy"]
    rows = []
    for key, g in ex.sort_values("id", kind="stable").groupby(ABLATION_KEYS, sort=False):
        mean, low, high = stats.bootstrap_ci(g["score"].to_numpy(dtype=float), seed, n_boot,
                                             alpha)
        rows.append({**dict(zip(ABLATION_KEYS, key, strict=True)), "accuracy": mean,
                     "ci_low": low, "ci_high": high, "n": len(g)})
    out = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    rank = {m: i for i, m in enumerate(ABLATION_ORDER)}
    out = out.assign(_ft=out["variant"] != "base",
                     _rank=out["method"].map(lambda m: rank.get(m, len(rank))))
    out = out.sort_values(["model", "step", "_ft", "variant", "eval_set", "shots", "_rank",
                           "method"], kind="stable")
    return out.drop(columns=["_ft", "_rank"]).reset_index(drop=True)
