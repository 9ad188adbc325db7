"""Seeded bootstrap statistics for the analysis tables.

Every function takes an integer ``seed`` and builds its own ``numpy.random.default_rng(seed)``,
so the same inputs and seed give bit-identical numbers, and no global random state is touched.

All intervals are percentile intervals, and every function reports the statistic on the
full sample (the mean), never the midpoint of the interval. We use the percentile method
rather than scipy's default BCa because BCa is undefined on degenerate samples (all
examples correct, a fine-tune identical to its base, a ratio of exactly -1 everywhere),
which are common here; BCa then returns NaN with a warning, percentile returns the point.

Pairing: scipy draws the resample indices from the generator alone, so two calls with the
same seed on samples of the same length resample the same example indices. Callers that
sort examples by id before bootstrapping (``scores.build_tables`` does) therefore get
intervals that are paired across models on the same eval set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import stats

from ckptsweep.analysis.settings import ALPHA, N_BOOT


def _clean(values) -> np.ndarray:
    """A 1-d float array without NaN (missing scores do not count as examples)."""
    arr = np.asarray(values, dtype=float).ravel()
    return arr[~np.isnan(arr)]


def _nan_ci(point: float) -> tuple[float, float, float]:
    return float(point), float("nan"), float("nan")


def bootstrap_ci(values, seed: int, n_boot: int = N_BOOT,
                 alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and a percentile bootstrap interval of the mean.

    NaNs are dropped. Fewer than two values give NaN bounds (no spread to resample)."""
    arr = _clean(values)
    if arr.size == 0:
        return _nan_ci(float("nan"))
    if arr.size < 2:
        return _nan_ci(arr.mean())
    res = stats.bootstrap((arr,), np.mean, n_resamples=n_boot, confidence_level=1 - alpha,
                          method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(arr.mean()), float(ci.low), float(ci.high)


def _mean_diff_paired(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def paired_bootstrap(a, b, seed: int, n_boot: int = N_BOOT,
                     alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean of a - b, low, high) resampling the same example indices for a and b.

    ``a`` and ``b`` are scores of two models on the same examples, in the same order.
    Pairs where either side is NaN are dropped."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs equal lengths, got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size == 0:
        return _nan_ci(float("nan"))
    point = float(np.mean(a - b))
    if a.size < 2:
        return _nan_ci(point)
    res = stats.bootstrap((a, b), _mean_diff_paired, paired=True, vectorized=True,
                          n_resamples=n_boot, confidence_level=1 - alpha,
                          method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return point, float(ci.low), float(ci.high)


def _mean_diff_independent(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_diff(a, b, seed: int, n_boot: int = N_BOOT,
                   alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) for two independent samples, each resampled on its own.

    Used where the two sides are different units (e.g. the fine-tuning group's and the
    pre-training group's (checkpoint, pair) gains), so no pairing exists."""
    a, b = _clean(a), _clean(b)
    if a.size == 0 or b.size == 0:
        return _nan_ci(float("nan"))
    point = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return _nan_ci(point)
    res = stats.bootstrap((a, b), _mean_diff_independent, paired=False, vectorized=True,
                          n_resamples=n_boot, confidence_level=1 - alpha,
                          method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return point, float(ci.low), float(ci.high)


def bootstrap_stat(arrays_by_key: Mapping[str, np.ndarray],
                   stat_fn: Callable[[dict[str, np.ndarray]], float], seed: int,
                   n_boot: int = N_BOOT, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(stat on the full data, low, high) for any statistic of several aligned arrays.

    Every array holds one value per example of the same eval set, in the same order (for
    example base and fine-tuned scores at several checkpoints). Each resample draws the
    example indices once and applies them to every array, so the statistic (a margin, a
    mean over checkpoints of differences) is recomputed on paired data. ``stat_fn`` gets a
    dict with the same keys and returns a float. Built on ``scipy.stats.bootstrap(paired=True)``
    with a non-vectorised statistic; the dict wrapper is the only hand-written part."""
    keys = list(arrays_by_key)
    arrays = [np.asarray(arrays_by_key[k], dtype=float).ravel() for k in keys]
    if not arrays:
        raise ValueError("bootstrap_stat needs at least one array")
    n = arrays[0].size
    if any(arr.size != n for arr in arrays):
        raise ValueError(f"bootstrap_stat needs aligned arrays, got lengths "
                         f"{[arr.size for arr in arrays]} for {keys}")

    def stat(*resampled: np.ndarray) -> float:
        return float(stat_fn(dict(zip(keys, resampled, strict=True))))

    if n == 0:
        return _nan_ci(float("nan"))
    point = stat(*arrays)
    if n < 2:
        return _nan_ci(point)
    res = stats.bootstrap(tuple(arrays), stat, paired=True, vectorized=False,
                          n_resamples=n_boot, confidence_level=1 - alpha,
                          method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return point, float(ci.low), float(ci.high)


def one_sample_p(values) -> float:
    """Two-sided p-value of ``scipy.stats.ttest_1samp(values, 0)`` (NaN with < 2 values).

    A sample with no spread has an infinite t statistic unless its mean is 0; scipy then
    returns NaN with a warning, so we return 0.0 (mean != 0) or 1.0 (mean == 0) instead."""
    arr = _clean(values)
    if arr.size < 2:
        return float("nan")
    if np.ptp(arr) == 0:
        return 1.0 if arr[0] == 0 else 0.0
    return float(stats.ttest_1samp(arr, 0.0).pvalue)
