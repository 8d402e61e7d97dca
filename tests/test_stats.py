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


# ---------------------------------------------------------------------------------------------
# Declared ranges and bounded intervals over runs

# Written by hand from what each number is, not from the declarations: they must agree.
KNOWN_RANGES = {
    "accuracy_mixed": (0, 1),
    "auroc_likelihood_mixed": (0, 1),
    "positive_control_auroc_test": (0, 1),
    "em_n2d_reverse_final": (0, 1),
    "probe_a_to_b_n2d_best": (0, 1),
    "control_randlabel_b_to_a_both_best": (0, 1),
    "chance_a_to_b": (0, 1),
    "delta_logp_forward_p": (0, 1),
    "em_n2d_reverse_train": (0, 1),
    "q_mean_null95": (0, 1),
    "align_forward_first_cos_mean": (-1, 1),
    "q_role_selectivity": (-1, 1),
    "positive_control_val_loss_best": (0, math.inf),
    "self_eval_val_loss_best": (0, math.inf),
    "update_loss_before_mean": (0, math.inf),
    "kl_tuned_heldout_mean": (0, math.inf),
    "reverse_first_bound_pct_of_forward": (0, math.inf),
    "n_checkpoints": (0, math.inf),
    "forward_best_layer": (0, math.inf),
    "forward_entity_last_mlp_out_max_layer": (0, math.inf),
    "final_pos_rank_last_layer_all_same": (1, math.inf),
    "control_random_init_final_pos_rank_last_layer_all_reverse": (1, math.inf),
    # unbounded: log-prob differences, logits, restored fractions, alignments, ratios
    "self_eval_val_loss_minus_ln2": (-math.inf, math.inf),
    "delta_logp_reverse_mean": (-math.inf, math.inf),
    "specific_forward_minus_reverse_mean": (-math.inf, math.inf),
    "forward_clean_minus_corrupt": (-math.inf, math.inf),
    "forward_corrupted": (-math.inf, math.inf),
    "forward_best_restoration": (-math.inf, math.inf),
    "forward_control_best_restoration": (-math.inf, math.inf),
    "forward_entity_last_mlp_out_max": (-math.inf, math.inf),
    "forward_entity_last_mlp_out_max_low": (-math.inf, math.inf),
    "forward_severed_mlp_max": (-math.inf, math.inf),
    "align_reverse_first_mean": (-math.inf, math.inf),
    "proj_a_to_b_mean": (-math.inf, math.inf),
    "top_group_attribution_fraction_forward": (-math.inf, math.inf),
    "first_order_over_measured_forward": (-math.inf, math.inf),
}
PVALUES = ("delta_logp_forward_p", "proj_b_to_a_p", "q_role_p", "both_align_reverse_first_p")


def test_declared_ranges_of_known_numbers():
    """Each instrument's Summary declares its numbers' ranges (and p-values); the declarations
    agree with a table written from what each number is."""
    from interp.analysis import INSTRUMENTS

    declared = {d.key: d for i in INSTRUMENTS.values() for d in i.summary_type.declared()}
    wrong = {
        k: (str(declared[k].range) if k in declared else "undeclared", want)
        for k, want in KNOWN_RANGES.items()
        if k not in declared or (declared[k].range.low, declared[k].range.high) != want
    }
    assert not wrong, f"key: (declared, expected): {wrong}"
    assert all(declared[k].pvalue for k in PVALUES), [k for k in PVALUES if not declared[k].pvalue]
    assert not declared["delta_logp_forward_mean"].pvalue


def _t(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return sps.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sps.sem(v))


def test_runs_interval_on_known_inputs():
    from scipy.special import expit, logit

    # [0, 1], inside: the t-interval of the logits, mapped back; the point is the plain mean
    v = [0.2, 0.3, 0.4]
    r = stats.runs_interval(v, stats.UNIT)
    lo, hi = _t(list(logit(v)))
    assert r.method == "t-transformed" and r.mean == pytest.approx(0.3), r
    assert (r.low, r.high) == pytest.approx((expit(lo), expit(hi))), (r, expit(lo), expit(hi))
    # [-1, 1]: the same on (x + 1) / 2 (Fisher's z up to a factor)
    r = stats.runs_interval([0.5, 0.6, 0.55], stats.SIGNED_UNIT)
    lo, hi = _t(list(np.arctanh([0.5, 0.6, 0.55])))
    assert (r.low, r.high) == pytest.approx((np.tanh(lo), np.tanh(hi))), r
    # [0, inf): the t-interval of the logs: 1, 2, 4 -> exp(log 2 +- t(2) * log 2 / sqrt 3)
    r = stats.runs_interval([1.0, 2.0, 4.0], stats.NONNEGATIVE)
    half = sps.t.ppf(0.975, 2) * math.log(2) / math.sqrt(3)
    assert (r.low, r.high) == pytest.approx((2 * math.exp(-half), 2 * math.exp(half))), r
    # a loss near 0: the plain t-interval goes below 0, this one cannot
    loss = [0.0036, 0.0001, 0.009]
    assert _t(loss)[0] < 0 and stats.runs_interval(loss, stats.NONNEGATIVE).low > 0
    # ranks from 1, log-probs up to 0
    r = stats.runs_interval([2.0, 3.0, 5.0], stats.RANK)  # log(rank - 1) = log 1, 2, 4
    assert (r.low, r.high) == pytest.approx((1 + 2 * math.exp(-half), 1 + 2 * math.exp(half))), r
    r = stats.runs_interval([1.0, 2.0, 3.0], stats.RANK)
    assert r.method == "t-truncated" and r.low == 1.0, r  # a run at rank 1 sits on the bound
    r = stats.runs_interval([-0.006, -0.008, -0.001], stats.LOGPROB)
    assert r.method == "t-transformed" and r.low < r.mean < r.high < 0, r
    # a run exactly on a bound: the t-interval truncated to the range, marked
    r = stats.runs_interval([0.0, 0.01, 0.02], stats.UNIT)
    assert r.method == "t-truncated" and r.low == 0.0, r
    assert r.high == pytest.approx(_t([0.0, 0.01, 0.02])[1]), r
    assert r.fmt() == f"0.010 [0.000, {r.high:.3f}]\u2020 (n=3)", r.fmt()
    # an interval narrower than the digits shows gets more digits, never "[1.000, 1.000]"
    r = stats.runs_interval([1.0, 0.99985, 1.0], stats.UNIT)
    assert r.fmt() == "1.0000 [0.9997, 1.0000]\u2020 (n=3)", r.fmt()
    # no spread, one run, no run: no interval
    assert stats.runs_interval([1.0, 1.0, 1.0], stats.UNIT).fmt() == "1.000 (all 3 runs)"
    assert stats.runs_interval([0.667] * 3, stats.UNIT).fmt(2) == "0.67 (all 3 runs)"
    assert stats.runs_interval([0.5], stats.UNIT).fmt() == "0.500 (1 run)"
    assert stats.runs_interval([float("nan")], stats.UNIT).fmt() == "n/a"
    # unbounded: the plain t-interval (restored fractions may pass 1)
    r = stats.runs_interval([0.9, 1.05, 0.95], stats.REAL)
    assert r.method == "t" and (r.low, r.high) == pytest.approx(_t([0.9, 1.05, 0.95])), r
    assert r.high > 1
    with pytest.raises(ValueError, match="outside their declared range"):
        stats.runs_interval([0.5, 1.2], stats.UNIT)
    assert (
        stats.runs_interval([0.0036, 0.0001, 0.009], stats.NONNEGATIVE)
        .fmt()
        .startswith("0.004 [0.000, ")
    )


def test_runs_intervals_stay_in_range_and_contain_the_mean():
    rng = np.random.default_rng(0)
    bad = []
    for r in (stats.UNIT, stats.SIGNED_UNIT, stats.NONNEGATIVE, stats.RANK, stats.LOGPROB):
        a = r.low if math.isfinite(r.low) else r.high - 50
        b = r.high if math.isfinite(r.high) else r.low + 50
        for _ in range(300):
            n = int(rng.integers(2, 6))
            # near a bound (on it, a hair inside) or anywhere inside
            kind = rng.integers(3)
            if kind == 0:
                v = a + (b - a) * rng.uniform(0, 1, n)
            else:
                edge = a if (kind == 1) == math.isfinite(r.low) else b
                v = edge + np.sign((a + b) / 2 - edge) * rng.choice([0.0, 1e-9, 1e-3, 0.05], n)
            v = np.clip(v, r.low, r.high)
            got = stats.runs_interval(v, r)
            if got.low is None:
                continue
            if not (r.low <= got.low <= got.mean <= got.high <= r.high):
                bad.append((str(r), v.tolist(), got))
    assert not bad, bad[:5]


def test_ratio_of_means_is_fiellers_interval():
    """Each end q of the interval solves (mean(a) - q mean(b))^2 = t^2 var(mean(a) - q mean(b)),
    the estimate is the ratio of the pooled means (not the mean of ratios), and a denominator
    indistinguishable from 0 leaves the interval unbounded."""
    rng = np.random.default_rng(0)
    b = rng.normal(10, 1, 6)
    a = 0.3 * b + rng.normal(0, 0.5, 6)
    q, lo, hi, n = stats.ratio_of_means(a, b)
    assert n == 6 and q == pytest.approx(a.mean() / b.mean()), (q, a.mean() / b.mean())
    assert q != pytest.approx(np.mean(a / b), abs=1e-12)
    t = sps.t.ppf(0.975, n - 1)
    for end in (lo, hi):
        d = a - end * b
        assert d.mean() ** 2 == pytest.approx(t**2 * d.var(ddof=1) / n, rel=1e-9), (end, lo, hi)
    assert lo < q < hi, (lo, q, hi)
    q, lo, hi, _ = stats.ratio_of_means([1.0, 2.0, 1.5], [1.0, -1.0, 0.2])
    assert (lo, hi) == (-math.inf, math.inf), (lo, hi)
    with pytest.raises(ValueError, match="2 or more"):
        stats.ratio_of_means([1.0], [2.0])
