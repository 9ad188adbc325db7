"""How well a predictor orders checkpoints the way their fine-tuned scores order them:
rank correlations, pairwise decision accuracy, top-1 regret and top-k hit rate, each on
the last axis so that rows of a 2-d input are bootstrap draws.

Ties, explicitly (``truth_tol`` makes near-equal fine-tuned scores ties too):

- **a tie in the truth**: the pair does not count (it leaves the denominator of the
  decision accuracy). Either choice is right, so no decision is tested; counting it half
  would pull every predictor toward 0.5 by the share of tied pairs, a property of the
  grid, not of the predictor. With no untied pair the accuracy is NaN.
- **a tie in the predictor** (truth untied): it counts half, the expected score of
  breaking the tie by a coin flip. A constant predictor thus scores 0.5, chance.
- top-1 regret and top-k hit rate break predictor ties the same way, at random, and
  report the expectation (the mean regret over the tied top checkpoints; the exact
  probability that the top-k holds a best checkpoint). Any checkpoint tied with the
  truth's best counts as a best.
- Spearman (average ranks) and Kendall's tau-b correct for ties on both sides, as
  scipy does; a constant side has no ranking and gives NaN.

``spearman``/``kendall`` of ``transfer_population`` are vectorised over draws (scipy's
``spearmanr``/``kendalltau`` take one pair of samples per call, thousands of calls per
table); `correlations` uses scipy itself for the point estimates, and a test checks that
both agree.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from scipy.special import comb

from ckptsweep.analysis.transfer_population import kendall, spearman


def pair_signs(x: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """sign(x_i - x_j) for every pair i < j along the last axis; |x_i - x_j| <= tol -> 0."""
    x = np.asarray(x, dtype=float)
    i, j = np.triu_indices(x.shape[-1], 1)
    d = x[..., i] - x[..., j]
    return np.where(np.abs(d) <= tol, 0.0, np.sign(d))


def decision_counts(truth, pred, truth_tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(credit, counted) along the last axis: counted = pairs untied in the truth; credit =
    those the predictor orders alike, plus half of those it ties (see the module's doc)."""
    st = pair_signs(truth, truth_tol)
    sp = pair_signs(pred)
    st, sp = np.broadcast_arrays(st, sp)
    counted = st != 0
    credit = np.where(counted, (st * sp > 0) + 0.5 * (sp == 0), 0.0)
    return credit.sum(axis=-1), counted.sum(axis=-1).astype(float)


def decision_accuracy(truth, pred, truth_tol: float = 0.0) -> np.ndarray | float:
    """Share of the checkpoint pairs (untied in the truth) the predictor orders as the
    fine-tuned scores do; NaN without an untied pair."""
    credit, counted = decision_counts(truth, pred, truth_tol)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counted > 0, credit / np.maximum(counted, 1), np.nan)
    return float(acc) if acc.ndim == 0 else acc


def top1_regret(truth, pred) -> np.ndarray | float:
    """Best fine-tuned score minus that of the predictor's top checkpoint (the mean over
    its tied top checkpoints)."""
    truth, pred = np.broadcast_arrays(np.asarray(truth, float), np.asarray(pred, float))
    top = pred == pred.max(axis=-1, keepdims=True)
    picked = (truth * top).sum(axis=-1) / top.sum(axis=-1)
    out = truth.max(axis=-1) - picked
    return float(out) if out.ndim == 0 else out


def topk_hit(truth, pred, k: int, truth_tol: float = 0.0) -> np.ndarray | float:
    """Probability that the predictor's k highest checkpoints hold a best one (ties of the
    predictor at the k-th place broken at random: 1 - C(m - t, r) / C(m, r) with m tied
    candidates for r places, t of them best)."""
    truth, pred = np.broadcast_arrays(np.asarray(truth, float), np.asarray(pred, float))
    c = pred.shape[-1]
    if k >= c:
        out = np.ones(pred.shape[:-1])
        return float(out) if out.ndim == 0 else out
    best = truth >= truth.max(axis=-1, keepdims=True) - truth_tol
    kth = -np.sort(-pred, axis=-1)[..., k - 1:k]
    above, at = pred > kth, pred == kth
    sure = (best & above).any(axis=-1)
    r = k - above.sum(axis=-1)
    m, t = at.sum(axis=-1), (best & at).sum(axis=-1)
    out = np.where(sure, 1.0, 1.0 - comb(m - t, r) / comb(m, r))
    return float(out) if out.ndim == 0 else out


def correlations(truth, pred) -> tuple[float, float]:
    """(Spearman, Kendall tau-b) of one predictor and truth (scipy; NaN if constant)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant side: scipy warns and returns NaN
        rho = stats.spearmanr(truth, pred).statistic
        tau = stats.kendalltau(truth, pred).statistic
    return float(rho), float(tau)


def metrics(truth, pred, k: int, truth_tol: float = 0.0) -> dict[str, np.ndarray | float]:
    """Every metric along the last axis (rows: draws). Correlations of 1-d inputs come from
    scipy, of 2-d inputs from the vectorised `spearman`/`kendall`."""
    truth = np.asarray(truth, dtype=float)
    pred = np.asarray(pred, dtype=float)
    if truth.ndim == 1 and pred.ndim == 1:
        rho, tau = correlations(truth, pred)
    else:
        truth_b, pred_b = np.broadcast_arrays(truth, pred)
        rho, tau = spearman(truth_b, pred_b), kendall(truth_b, pred_b)
    return {"spearman": rho, "kendall": tau,
            "decision_accuracy": decision_accuracy(truth, pred, truth_tol),
            "top1_regret": top1_regret(truth, pred),
            "topk_hit": topk_hit(truth, pred, k, truth_tol)}


METRICS = ("spearman", "kendall", "decision_accuracy", "top1_regret", "topk_hit")
