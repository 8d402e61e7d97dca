"""Statistics the kit reports, in one place, with every choice stated.

The unit of replication is a run: a (world, training seed) pair. People (items) are nested in
runs, so a study-level number has two sources of variance, between runs and between the people
of a run, and its interval must carry both. The choices, and why:

- **Rates** (exact match, a fraction of k hits in n prompts) get the **Wilson score interval**
  (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the Wald interval). It stays inside
  [0, 1] by construction, is not degenerate at 0/n or n/n (0 hits in 30 gives [0, 11.4]%, not
  [0, 0]), and has close to nominal coverage at the small n of a cell. A symmetric t-interval on
  a rate can leave [0, 100]%; nothing here produces one.
- **Study-level estimates** use a **hierarchical (two-stage) bootstrap** (Davison & Hinkley 1997,
  section 3.8; Saravanan et al. 2020 for nested data): resample runs with replacement, then
  people with replacement within each resampled run, and take the mean of the run means (each
  run weighs the same, whatever its n). The percentile interval of that statistic includes item
  variance, unlike the t-interval of run means over one shared item set, and needs no normality
  of either level. On 0/1 values it is a mean of values in [0, 1], so it is bounded too; a
  study-level rate (`rate_estimate`) also contains the pooled Wilson interval, because at 0/n
  the bootstrap collapses to [0, 0]. It is
  seeded: same data and seed, same interval. With few runs (2-3) the run stage has few distinct
  resamples and the interval is rough; that is the honest width of a 3-run study, not a defect.
- **Per-run paired effects** (log p(correct) - log p(control) per person) get `paired_test`: the
  mean difference, its Student-t 95% interval and the paired t-test p. It is the one paired test
  the kit uses, so every paired p-value means the same thing.
- **p-values across runs** are never averaged: they are listed per run, or combined by
  **Fisher's method** (-2 sum log p ~ chi2 with 2k df under the joint null; `combine_pvalues`).
  Fisher answers "does any run show an effect?", which is the right question for "is there no
  effect anywhere"; Stouffer's z (`method="stouffer"`) is available when the question is a
  consistent effect.
- **A null is a bound**: `equivalence_bound` gives the largest effect the data exclude, the
  largest |end| of the (1 - 2 alpha) = 90% interval of the mean, which is the smallest margin at
  which Schuirmann's two one-sided tests (`tost`) reject non-equivalence at alpha = 0.05. "No
  difference" is then said as "excludes effects beyond +-x".
- **Item draws are seeded from the run** (`run_seed`): log-prob controls, patching prompts and
  partners, probe folds, update-test controls and splits are drawn from a seed derived from the
  run's world seed and training seed (plus an instrument's own `seed` option as an offset), so
  runs of different worlds draw different items and the between-run spread includes item
  draws. Objectives trained on the same (world, seed) draw the same items: they stay paired.
- **Multiplicity**: the headline claims form a declared family, corrected by **Holm's step-down**
  procedure (Holm 1979), which controls the family-wise error rate under any dependence and is
  uniformly more powerful than Bonferroni.
- **Every summary number has a declared range**, and its interval over runs stays in it
  (`runs_interval`). The range travels with the number: each instrument's Summary declares it
  beside the number's help (`interp.results.number`): accuracies, rates, AUROC/AUACC, probe
  accuracies in [0, 1] (`UNIT`); cosines and probe selectivities in [-1, 1]; losses, KL, norms
  and counts in [0, inf); ranks (1-based) in [1, inf); log-probabilities in (-inf, 0];
  unbounded: log-prob differences, logits and logit differences, restored fractions (patching
  can overshoot 1 or undershoot 0), alignments, projections, attributions and ratios. The
  interval over runs is then, by case:
  - 1 run: the value, no interval ("0.93 (1 run)");
  - every run the same value (e.g. every AUROC 1.0, every rank 1): the value, no interval
    ("1.000 (all 3 runs)"): there is no spread to estimate a width from, and a zero-width
    interval would claim certainty;
  - unbounded: the Student-t interval of the mean;
  - bounded, every value strictly inside the range: the Student-t interval on a scale where the
    range is the whole line, mapped back: the logit of (x - a) / (b - a) for [a, b] (the
    Fisher z for cosines, up to a factor), log(x - a) for [a, inf), log(b - x) for (-inf, b].
    The point stays the arithmetic mean of the runs; where it falls outside the mapped-back
    interval (Jensen's gap, only for very skewed runs) the interval is widened to contain it;
  - bounded, some run exactly on a bound (the transform is infinite there): the Student-t
    interval on the original scale truncated to the range, marked with a dagger. The true mean
    lies in the range, so truncating never drops it: the coverage is that of the t-interval.
  Rates with a known count of items (exact match) get Wilson and the hierarchical bootstrap
  instead (`rate_estimate`); the summaries do not store their item counts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

# Numbers as a list or a 1-D array.
Values = Sequence[float] | np.ndarray


def mean_ci(values: Values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n): Student-t interval of the mean over `values` (NaNs dropped).

    With one value the interval is the point itself (n=1 says there is no spread to report).
    Not for rates (use `wilson_interval`) nor for a study-level number over runs that share
    nothing but their design (use `hierarchical_bootstrap`).
    """
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n == 1:
        return m, m, m, 1
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


# ---------------------------------------------------------------------------------------------
# Ranges and bounded intervals over runs


@dataclass(frozen=True)
class Range:
    """The values a summary number can take: [low, high], either end possibly infinite."""

    low: float = -math.inf
    high: float = math.inf

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) or math.isfinite(self.high)

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high

    def __str__(self) -> str:
        lo = "-inf" if self.low == -math.inf else f"{self.low:g}"
        hi = "inf" if self.high == math.inf else f"{self.high:g}"
        return f"[{lo}, {hi}]"

    def to_line(self, x: np.ndarray) -> np.ndarray:
        """Map values strictly inside the range onto the real line (logit or log)."""
        a, b = self.low, self.high
        if math.isfinite(a) and math.isfinite(b):
            u = (x - a) / (b - a)
            return np.log(u) - np.log1p(-u)
        if math.isfinite(a):
            return np.log(x - a)
        if math.isfinite(b):
            return np.log(b - x)
        return x

    def from_line(self, z: float) -> float:
        """The inverse of `to_line` (monotone increasing except for (-inf, b], decreasing)."""
        a, b = self.low, self.high
        if math.isfinite(a) and math.isfinite(b):
            return a + (b - a) * float(1 / (1 + np.exp(-z)))
        if math.isfinite(a):
            return a + float(np.exp(z))
        if math.isfinite(b):
            return b - float(np.exp(z))
        return z


REAL = Range()
UNIT = Range(0.0, 1.0)
SIGNED_UNIT = Range(-1.0, 1.0)
NONNEGATIVE = Range(0.0, math.inf)
RANK = Range(1.0, math.inf)
LOGPROB = Range(-math.inf, 0.0)


@dataclass(frozen=True)
class RunsInterval:
    """A summary number over runs: the mean, and its 95% interval inside the number's range."""

    mean: float
    low: float | None  # None: no interval (one run, or every run the same value)
    high: float | None
    n: int  # runs
    method: str  # "none", "single", "constant", "t", "t-transformed" or "t-truncated"
    range: Range = field(default=REAL)

    def fmt(self, digits: int = 3) -> str:
        """'0.930 [0.880, 0.960] (n=3)', '0.930 (1 run)', '1.000 (all 3 runs)'; a dagger marks
        an interval truncated to the range. An interval narrower than `digits` shows gets more
        digits ('1.0000 [0.9997, 1.0000]'), never a '[1.000, 1.000]' that reads as no spread."""
        if self.n == 0:
            return "n/a"
        if self.low is not None and self.high is not None:
            while f"{self.low:.{digits}f}" == f"{self.high:.{digits}f}" and digits < 8:
                digits += 1
        m = f"{self.mean:.{digits}f}"
        if self.method == "single":
            return f"{m} (1 run)"
        if self.method == "constant":
            return f"{m} (all {self.n} runs)"
        mark = "†" if self.method == "t-truncated" else ""
        return f"{m} [{self.low:.{digits}f}, {self.high:.{digits}f}]{mark} (n={self.n})"


def runs_interval(values: Values, rng: Range = REAL, level: float = 0.95) -> RunsInterval:
    """The mean over runs of a summary number with its interval inside `rng` (the rule in the
    module docstring). NaNs are dropped; a value outside `rng` is a bug upstream and raises."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return RunsInterval(float("nan"), None, None, 0, "none", rng)
    bad = v[(v < rng.low) | (v > rng.high)]
    if len(bad):
        raise ValueError(f"values {bad.tolist()} lie outside their declared range {rng}")
    m = float(v.mean())
    if n == 1:
        return RunsInterval(m, None, None, 1, "single", rng)
    if np.ptp(v) == 0:
        return RunsInterval(m, None, None, n, "constant", rng)
    if not rng.bounded:
        _, lo, hi, _ = mean_ci(v, level)
        return RunsInterval(m, lo, hi, n, "t", rng)
    if np.all((v > rng.low) & (v < rng.high)):
        _, zlo, zhi, _ = mean_ci(rng.to_line(v), level)
        ends = sorted((rng.from_line(zlo), rng.from_line(zhi)))
        lo, hi = min(ends[0], m), max(ends[1], m)
        # keep float round-off at extreme logits from leaving the range
        return RunsInterval(m, max(lo, rng.low), min(hi, rng.high), n, "t-transformed", rng)
    _, lo, hi, _ = mean_ci(v, level)
    return RunsInterval(m, max(lo, rng.low), min(hi, rng.high), n, "t-truncated", rng)


def bounded_mean_ci(values: Values, rng: Range) -> tuple[float, float, float]:
    """(mean, low, high) of `runs_interval` for a figure's error bar; low = high = mean where it
    gives no interval (one run, identical runs), nan for no value."""
    r = runs_interval(values, rng)
    if r.low is None or r.high is None:
        return r.mean, r.mean, r.mean
    return r.mean, r.low, r.high


def mean_ci_axis(
    values: np.ndarray, axis: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over `axis` of an array (e.g. [run, layer] curves), elementwise.

    The same Student-t interval as `mean_ci`; it collapses to the mean for one value.
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def run_seed(config: Any, offset: int = 0) -> int:
    """The seed of a run's item draws: a hash of (world.seed, train.seed, offset), in [0, 2^31).

    `config` is a RunConfig. Hashing (not summing) keeps offset 1 of one run from being offset 0
    of another. The objective is left out on purpose: objectives on one (world, seed) pair are
    compared on the same items.
    """
    key = f"{config.world.seed}:{config.train.seed}:{offset}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFF_FFFF


# ---------------------------------------------------------------------------------------------
# Rates


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(k/n, low, high): the Wilson score interval of a binomial rate, always inside [0, 1].

    low, high = (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z the normal quantile.
    n = 0 gives (nan, 0, 1): no data, no information.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact ends at 0/n and n/n; elsewhere clip float round-off only (the interval is inside)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return p, lo, hi


def fmt_rate(k: int, n: int, digits: int = 1) -> str:
    """'75.0% [46.8, 91.1] (k/n=12/16)': a rate with its Wilson interval and true n."""
    p, lo, hi = wilson_interval(k, n)
    if n == 0:
        return "n/a (n=0)"
    return f"{100 * p:.{digits}f}% [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}] ({k}/{n})"


# ---------------------------------------------------------------------------------------------
# People nested in runs


@dataclass(frozen=True)
class Estimate:
    """An estimate with its interval and the true n behind it (runs and items)."""

    estimate: float
    low: float
    high: float
    n_runs: int
    n_items: int
    runs: tuple[tuple[float, float, int], ...] = ()  # per run: its items' mean, sd, number

    def fmt(self, digits: int = 2, pct: bool = False, items: str = "items") -> str:
        """'0.12 [-0.05, 0.30] (3 runs, 300 people)', or as percentages."""
        s, u = (100.0, "%") if pct else (1.0, "")
        d = 1 if pct else digits
        return (
            f"{s * self.estimate:.{d}f}{u} [{s * self.low:.{d}f}, {s * self.high:.{d}f}] "
            f"({self.fmt_n(items)})"
        )

    def fmt_n(self, items: str = "items") -> str:
        """'3 runs, 300 people' (or '1 run, ...')."""
        return f"{self.n_runs} run{'' if self.n_runs == 1 else 's'}, {self.n_items} {items}"


def hierarchical_bootstrap(
    groups: Sequence[Values],
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean over runs of each run's `statistic` over its items, with a two-stage bootstrap CI.

    `groups[r]` holds run r's item values (e.g. one difference per person). Each replicate
    draws len(groups) runs with replacement, then, inside each drawn run, as many items as it
    has with replacement, and takes the mean over drawn runs of `statistic` over drawn items.
    The interval is the percentile interval of those replicates; the estimate is the mean of
    the observed run statistics. Runs with no items are dropped.
    """
    runs = [np.asarray(g, dtype=float) for g in groups]
    runs = [g[~np.isnan(g)] for g in runs]
    runs = [g for g in runs if len(g)]
    n_items = sum(len(g) for g in runs)
    if not runs:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    est = float(np.mean([statistic(g) for g in runs]))
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(runs), size=len(runs))
        reps[b] = np.mean(
            [statistic(runs[r][rng.integers(0, len(runs[r]), len(runs[r]))]) for r in picked]
        )
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    per_run = tuple((float(g.mean()), float(g.std(ddof=1)) if len(g) > 1 else 0.0, len(g))
                    for g in runs)  # fmt: skip
    return Estimate(est, float(lo), float(hi), len(runs), n_items, per_run)


def hierarchical_bootstrap_axis(
    groups: Sequence[np.ndarray], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) elementwise for per-run arrays `groups[r]` of shape [items, ...]
    (e.g. one curve over layers per fact): the mean over runs of each run's mean over items,
    and the percentile interval of the same two-stage bootstrap as `hierarchical_bootstrap`
    (runs with replacement, then items with replacement within each drawn run). For a figure's
    curves and bars over the items of several runs; with one run it is a bootstrap over items.
    """
    runs = [np.asarray(g, dtype=float) for g in groups]
    runs = [g for g in runs if len(g)]
    if not runs:
        raise ValueError("hierarchical_bootstrap_axis needs at least one run with items")
    est = np.mean([g.mean(0) for g in runs], axis=0)
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, *est.shape))
    for b in range(n_boot):
        picked = rng.integers(0, len(runs), size=len(runs))
        reps[b] = np.mean(
            [runs[r][rng.integers(0, len(runs[r]), len(runs[r]))].mean(0) for r in picked], axis=0
        )
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    return np.asarray(est), np.asarray(lo), np.asarray(hi)  # 0-d arrays for 1-d items


def rate_estimate(groups: Sequence[Values], *, seed: int = 0, level: float = 0.95) -> Estimate:
    """A study-level rate from per-item rates in [0, 1] nested in runs: the hierarchical
    bootstrap, widened to contain the Wilson interval of the pooled items.

    A bootstrap cannot see variance it never observes: when every item of every run is 0 (or
    1), every replicate is 0 and its interval is [0, 0], claiming certainty from finite data.
    The Wilson interval of (sum of item rates, number of items) supplies the bound there (0 of
    48 people: [0, 7.4]%). Pooling overstates n when runs differ, but at the boundaries, where
    it matters, every run is at the same value; elsewhere the bootstrap is the wider of the two.
    """
    h = hierarchical_bootstrap(groups, seed=seed, level=level)
    if h.n_items == 0:
        return h
    k = sum(float(np.nansum(np.asarray(g, dtype=float))) for g in groups)
    _, wlo, whi = wilson_interval(round(k), h.n_items, level)
    return Estimate(h.estimate, min(h.low, wlo), max(h.high, whi), h.n_runs, h.n_items, h.runs)


# ---------------------------------------------------------------------------------------------
# Paired tests, nulls, families


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison (per item: value - control) within one run."""

    n: int
    mean: float  # mean of the first sample
    control_mean: float
    diff_mean: float
    diff_low: float  # Student-t 95% interval of the mean difference
    diff_high: float
    t_stat: float
    p: float  # two-sided paired t-test


def paired_test(values: np.ndarray, control: np.ndarray, level: float = 0.95) -> PairedTest:
    """Paired t-test of `values` against `control` (same items, same order).

    With fewer than 2 items, or no spread in the differences, there is nothing to test: the
    interval is the point and p = 1 (reported, never hidden).
    """
    a, c = np.asarray(values, dtype=float), np.asarray(control, dtype=float)
    if a.shape != c.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {c.shape}")
    diff = a - c
    n = len(diff)
    m = float(diff.mean()) if n else float("nan")
    if n >= 2 and np.ptp(diff) > 0:
        _, lo, hi, _ = mean_ci(list(diff), level)
        t = stats.ttest_rel(a, c)
        return PairedTest(
            n, float(a.mean()), float(c.mean()), m, lo, hi, float(t.statistic), float(t.pvalue)
        )
    mean_a = float(a.mean()) if n else float("nan")
    mean_c = float(c.mean()) if n else float("nan")
    return PairedTest(n, mean_a, mean_c, m, m, m, 0.0, 1.0)


def tost(diff: Values, margin: float) -> float:
    """Schuirmann's two one-sided tests: p for "the mean of `diff` lies within +-margin".

    p = max(p of H0: mean <= -margin, p of H0: mean >= +margin), one-sided t-tests. A small p
    says the effect is smaller than `margin` in absolute value (equivalence shown).
    """
    d = np.asarray(diff, dtype=float)
    if margin <= 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    n = len(d)
    if n < 2:
        return 1.0
    se = d.std(ddof=1) / math.sqrt(n)
    if se == 0:
        return 0.0 if abs(d.mean()) < margin else 1.0
    p_lower = stats.t.sf((d.mean() + margin) / se, n - 1)
    p_upper = stats.t.cdf((d.mean() - margin) / se, n - 1)
    return float(max(p_lower, p_upper))


def equivalence_bound(diff: Values, alpha: float = 0.05) -> float:
    """The largest |effect| the data exclude: max |end| of the (1 - 2 alpha) t-interval.

    It is the smallest margin at which `tost` rejects at `alpha` (at that margin p = alpha).
    A null result is reported as "excludes effects beyond +-bound".
    """
    _, lo, hi, n = mean_ci(list(diff), 1 - 2 * alpha)
    if n < 2:
        return float("inf")
    return float(max(abs(lo), abs(hi)))


def ratio_of_means(
    num: Values, den: Values, level: float = 0.95
) -> tuple[float, float, float, int]:
    """(mean(num) / mean(den), low, high, n): a ratio of pooled means with Fieller's interval,
    from paired values (one pair per run, say: the reverse and the forward effect).

    Fieller's interval is the set of ratios q for which mean(num) - q mean(den) is within the
    t-quantile of its standard error (the covariance of the pair included); it is exact for
    normal means and, unlike the delta method or an average of per-run ratios, it is honest
    when the denominator is uncertain: where mean(den) is not distinguishable from 0 at `level`
    the interval is unbounded, (-inf, inf). Needs n >= 2 pairs."""
    a, b = np.asarray(num, float), np.asarray(den, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"ratio_of_means needs paired 1-D values, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 2:
        raise ValueError(f"ratio_of_means needs 2 or more pairs, got {n}")
    ma, mb = float(a.mean()), float(b.mean())
    cov = np.cov(a, b, ddof=1) / n  # covariance of the two means
    v11, v22, v12 = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    q = ma / mb if mb != 0 else math.copysign(math.inf, ma) if ma else math.nan
    g = t * t * v22 / (mb * mb) if mb != 0 else math.inf
    if g >= 1:
        return q, -math.inf, math.inf, n
    disc = v11 - 2 * q * v12 + q * q * v22 - g * (v11 - v12 * v12 / v22 if v22 > 0 else 0.0)
    half = t / abs(mb) * math.sqrt(max(disc, 0.0))
    centre = q - g * v12 / v22 if v22 > 0 else q
    lo, hi = (centre - half) / (1 - g), (centre + half) / (1 - g)
    return q, lo, hi, n


def bound_of_interval(low: float, high: float) -> float:
    """The same bound from any interval (e.g. a hierarchical bootstrap's): max(|low|, |high|)."""
    return float(max(abs(low), abs(high)))


def holm(pvalues: Values) -> list[float]:
    """Holm-adjusted p-values, in the input order: reject claim i at alpha iff adjusted <= alpha.

    Sorted ascending, p_(i) is multiplied by (m - i) (i from 0), made monotone non-decreasing
    by a running maximum, and capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return [float(x) for x in adj]


ALPHA = 0.05  # every claim's level: one-sided where the claim is directional, Holm in a family
POWER = 0.8  # the power at which a claim's minimal detectable effect is stated


def one_sided_p(t: PairedTest) -> float:
    """p of the one-sided paired t-test whose alternative is a mean difference above 0."""
    if math.isnan(t.p):
        return float("nan")
    return t.p / 2 if t.diff_mean > 0 else 1 - t.p / 2


@dataclass(frozen=True)
class Decision:
    """One directional claim of a family decided by the kit's one rule: the claim's one-sided
    p (Fisher-combined over runs), Holm-adjusted over its declared family of m claims, shows an
    effect at `ALPHA`; `mde` is the smallest effect the test detects with `POWER`."""

    p: float  # one-sided, combined over runs
    p_holm: float
    effect: bool
    m: int  # claims in the family
    mde: float


def decide_family(
    pvalues: Sequence[float], ses: Sequence[float], df: int | None = None
) -> list[Decision]:
    """The one rule, for a declared family: Holm over the one-sided `pvalues` at `ALPHA`; each
    claim's minimal detectable effect from its standard error `ses[i]` at the strictest Holm
    step alpha / m: (q_{1 - alpha / m} + q_power) x se, q the normal quantile, or Student's t
    with `df` degrees of freedom where the test is a t-test over `df + 1` runs."""
    m = len(pvalues)
    adjusted = holm(pvalues) if m else []
    dist = stats.norm if df is None else stats.t(df)
    z = float(dist.ppf(1 - ALPHA / max(m, 1)) + dist.ppf(POWER))
    return [
        Decision(float(p), float(q), bool(q < ALPHA), m, z * float(se))
        for p, q, se in zip(pvalues, adjusted, ses, strict=True)
    ]


def decide_over_runs(values: Values) -> Decision | None:
    """The one rule for a claim whose evidence is one number per run (each run's difference
    from its control): the one-sided t-test over runs that the mean is above 0, a family of
    one; None with fewer than 2 runs or no spread."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) < 2 or float(v.std(ddof=1)) == 0.0:
        return None
    se = float(v.std(ddof=1) / math.sqrt(len(v)))
    p = float(stats.t(len(v) - 1).sf(v.mean() / se))
    return decide_family([p], [se], df=len(v) - 1)[0]


def combine_pvalues(pvalues: Values, method: str = "fisher") -> float:
    """One p-value for independent per-run tests of the same null: Fisher's method by default.

    Fisher: -2 sum log p_i ~ chi2(2k) under the joint null ("no run has an effect").
    Stouffer: sum Phi^-1(1 - p_i) / sqrt(k), for a consistent one-sided effect.
    """
    p = [float(x) for x in pvalues if x is not None and not math.isnan(x)]
    if not p:
        return float("nan")
    if method not in ("fisher", "stouffer"):
        raise ValueError(f"unknown method {method!r}: use 'fisher' or 'stouffer'")
    if len(p) == 1:
        return p[0]
    # p = 0 would make Fisher's statistic infinite; the smallest double keeps it finite
    p = [min(1.0, max(x, np.finfo(float).tiny)) for x in p]
    return float(stats.combine_pvalues(p, method=method).pvalue)


def fmt_pvalues(pvalues: Values, method: str = "fisher") -> str:
    """Per-run p-values listed, then combined: '0.62, 0.6, 0.75 (Fisher 0.83)'. Never a mean."""
    p = [float(x) for x in pvalues if x is not None and not math.isnan(x)]
    if not p:
        return "n/a"
    listed = ", ".join(f"{x:.2g}" for x in p)
    if len(p) == 1:
        return listed
    return f"{listed} ({method.capitalize()} {combine_pvalues(p, method):.2g})"
