"""Seeded bootstrap helpers: determinism, pairing, edge cases."""

import numpy as np
import pytest
from scipy import stats as sps

from ckptsweep.analysis.stats import (
    bootstrap_ci,
    bootstrap_diff,
    bootstrap_stat,
    one_sample_p,
    paired_bootstrap,
)

RNG = np.random.default_rng(123)
X = RNG.random(80)
Y = X * 0.5 + RNG.normal(0, 0.05, 80)


def test_bootstrap_ci_reports_the_mean_and_contains_it():
    mean, low, high = bootstrap_ci(X, seed=0)
    assert mean == pytest.approx(X.mean())
    assert low < mean < high


def test_same_seed_identical_different_seed_different():
    assert bootstrap_ci(X, seed=7) == bootstrap_ci(X, seed=7)
    assert paired_bootstrap(X, Y, seed=7) == paired_bootstrap(X, Y, seed=7)
    assert bootstrap_ci(X, seed=7)[1:] != bootstrap_ci(X, seed=8)[1:]
    assert paired_bootstrap(X, Y, seed=7)[1:] != paired_bootstrap(X, Y, seed=8)[1:]


def test_paired_bootstrap_on_identical_arrays_is_zero_width_at_zero():
    assert paired_bootstrap(X, X, seed=0) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_resamples_pairs():
    # Resampling the same indices for both arrays equals bootstrapping the differences,
    # and gives a narrower interval than treating the arrays as independent.
    paired = paired_bootstrap(X, Y, seed=3)
    assert paired == pytest.approx(bootstrap_ci(X - Y, seed=3))
    indep = bootstrap_diff(X, Y, seed=3)
    assert indep[0] == pytest.approx(paired[0])
    assert paired[2] - paired[1] < indep[2] - indep[1]


def test_bootstrap_stat_pairs_keys_and_matches_paired_bootstrap():
    got = bootstrap_stat({"a": X, "b": Y}, lambda d: d["a"].mean() - d["b"].mean(), seed=3)
    assert got == pytest.approx(paired_bootstrap(X, Y, seed=3))
    margin = bootstrap_stat({"a": X, "b": Y}, lambda d: d["a"].mean() - max(d["b"].mean(), 0.4),
                            seed=5)
    assert margin[0] == pytest.approx(X.mean() - max(Y.mean(), 0.4))
    assert margin[1] <= margin[0] <= margin[2]
    with pytest.raises(ValueError, match="aligned"):
        bootstrap_stat({"a": X, "b": Y[:-1]}, lambda d: 0.0, seed=0)


def test_degenerate_and_tiny_samples():
    assert bootstrap_ci(np.ones(30), seed=0) == (1.0, 1.0, 1.0)
    mean, low, high = bootstrap_ci([0.4], seed=0)
    assert mean == 0.4 and np.isnan(low) and np.isnan(high)
    assert all(np.isnan(bootstrap_ci([], seed=0)))
    assert bootstrap_ci([1.0, np.nan, 0.0], seed=0)[0] == 0.5  # NaN is not an example


def test_one_sample_p_is_scipy_ttest_and_handles_no_spread():
    d = X - 0.45
    assert one_sample_p(d) == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert one_sample_p([-1.0, -1.0, -1.0]) == 0.0
    assert one_sample_p([0.0, 0.0]) == 1.0
    assert np.isnan(one_sample_p([0.3]))
