"""The reporting statistics on known inputs: Wilson, TOST, Holm, Fisher, the hierarchical
bootstrap (which must widen when item variance grows while run means stay put)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from interp import stats


def test_wilson_matches_hand_computed_values():
    # 5/10: centre 0.5, half = 1.96 sqrt(0.025 + 1.96^2/400) / (1 + 1.96^2/10) = 0.2634
    p, lo, hi = stats.wilson_interval(5, 10)
    assert p == 0.5 and abs(lo - 0.2366) < 1e-4 and abs(hi - 0.7634) < 1e-4, (lo, hi)
    # 0/10: low 0, high z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.2775 (not the Wald [0, 0])
    p, lo, hi = stats.wilson_interval(0, 10)
    assert lo == 0.0 and abs(hi - 0.27753) < 1e-4, (lo, hi)
    p, lo, hi = stats.wilson_interval(10, 10)
    assert hi == 1.0 and abs(lo - (1 - 0.27753)) < 1e-4, (lo, hi)


def test_wilson_always_inside_unit_interval_and_contains_the_rate():
    for n in (1, 2, 3, 7, 16, 30, 100, 1000):
        for k in range(n + 1):
            p, lo, hi = stats.wilson_interval(k, n)
            assert 0.0 <= lo <= p <= hi <= 1.0, (k, n, lo, p, hi)
    assert stats.fmt_rate(12, 16).startswith("75.0% [")
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_tost_on_known_data():
    d = np.array([0.1, -0.2, 0.3, 0.0, -0.1, 0.2, 0.1, -0.1])
    for margin in (0.1, 0.2, 0.3, 0.5):
        # independent route: the two one-sided one-sample t-tests, spelled out through scipy
        lower = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
        upper = sps.ttest_1samp(d, margin, alternative="less").pvalue
        got = stats.tost(d, margin)
        assert abs(got - max(lower, upper)) < 1e-12, (margin, got, lower, upper)
    # wide margin: equivalence shown; narrow margin: not
    assert stats.tost(d, 0.5) < 0.01 and stats.tost(d, 0.05) > 0.3
    # the equivalence bound is the margin at which TOST's p is exactly alpha = 0.05
    bound = stats.equivalence_bound(d)
    assert abs(stats.tost(d, bound) - 0.05) < 1e-9, (bound, stats.tost(d, bound))
    # a real effect is not "equivalent": its bound exceeds the effect itself
    shifted = d + 1.0
    assert stats.equivalence_bound(shifted) > 1.0 and stats.tost(shifted, 0.5) > 0.5


def test_holm_on_a_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert np.allclose(adj, [0.03, 0.06, 0.06, 0.02]), adj
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_fisher_combination_and_no_averaging():
    # -2 (ln 0.05 + ln 0.05) = 11.98 on chi2(4): p = 0.0175, far below the average 0.05
    p = stats.combine_pvalues([0.05, 0.05])
    assert abs(p - sps.chi2.sf(-2 * 2 * math.log(0.05), 4)) < 1e-12 and abs(p - 0.0175) < 1e-3
    assert stats.combine_pvalues([0.62, 0.60, 0.75]) > 0.5
    assert stats.combine_pvalues([0.3]) == 0.3
    assert (
        stats.fmt_pvalues([0.62, 0.60, 0.75]) == "0.62, 0.6, 0.75 (Fisher 0.86)"
    )  # chi2(6).sf(2.55)


def test_paired_test_agrees_with_scipy():
    rng = np.random.default_rng(1)
    a, c = rng.normal(1, 1, 40), rng.normal(0.5, 1, 40)
    r = stats.paired_test(a, c)
    t = sps.ttest_rel(a, c)
    assert r.n == 40 and abs(r.p - t.pvalue) < 1e-12 and abs(r.t_stat - t.statistic) < 1e-12
    assert r.diff_low < r.diff_mean < r.diff_high
    flat = stats.paired_test(np.ones(3), np.zeros(3))
    assert flat.p == 1.0 and flat.diff_low == flat.diff_high == 1.0


def _runs(item_sd: float, seed: int = 0) -> list[np.ndarray]:
    """Three runs with means exactly 0.10, 0.15, 0.05 and item noise of the given SD."""
    rng = np.random.default_rng(seed)
    out = []
    for m in (0.10, 0.15, 0.05):
        noise = rng.normal(0, 1, 30)
        noise = (noise - noise.mean()) / noise.std(ddof=1)
        out.append(m + item_sd * noise)
    return out


def test_hierarchical_interval_widens_with_item_variance_at_fixed_run_means():
    quiet, noisy = _runs(0.01), _runs(0.5)
    assert np.allclose([g.mean() for g in quiet], [g.mean() for g in noisy])
    # the spread of run means is the same in both: its t-interval cannot tell them apart
    t_quiet = stats.mean_ci([g.mean() for g in quiet])
    t_noisy = stats.mean_ci([g.mean() for g in noisy])
    assert np.allclose(t_quiet, t_noisy)
    hq = stats.hierarchical_bootstrap(quiet, seed=0)
    hn = stats.hierarchical_bootstrap(noisy, seed=0)
    wq, wn = hq.high - hq.low, hn.high - hn.low
    assert abs(hq.estimate - 0.10) < 1e-9 and abs(hn.estimate - 0.10) < 1e-9
    assert wn > 2 * wq, f"noisy width {wn:.3f} vs quiet {wq:.3f}"
    # with noise SD 0.5 over 30 items a run's own SE is ~0.09: the interval must cover 0
    assert hn.low < 0 < hn.high, hn
    assert (hn.n_runs, hn.n_items) == (3, 90)
    # seeded: same seed, same interval
    assert stats.hierarchical_bootstrap(noisy, seed=0) == hn


def test_hierarchical_interval_on_rates_is_bounded():
    rng = np.random.default_rng(0)
    hits = [rng.random(12) < p for p in (0.02, 0.97, 0.5)]
    est = stats.hierarchical_bootstrap([h.astype(float) for h in hits], seed=3)
    assert 0.0 <= est.low <= est.estimate <= est.high <= 1.0, est
    allzero = stats.hierarchical_bootstrap([np.zeros(10), np.zeros(5)])
    assert allzero.low == allzero.high == 0.0  # the bootstrap alone claims certainty at 0/n
    rate = stats.rate_estimate([np.zeros(24), np.zeros(24)])
    assert rate.low == 0.0 and abs(rate.high - stats.wilson_interval(0, 48)[2]) < 1e-12, rate
    assert 0.05 < rate.high < 0.09, rate  # 0 of 48: [0, 7.4]%
    mixed = stats.rate_estimate([h.astype(float) for h in hits], seed=3)
    assert mixed.low <= est.low and mixed.high >= est.high and 0 <= mixed.low <= mixed.high <= 1
