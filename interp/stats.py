"""Intervals over seeds: every number the kit reports carries its n and a 95% interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n): Student-t interval of the mean over `values` (NaNs dropped).

    With one value the interval is the point itself (n=1 says there is no spread to report).
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


def fmt_ci(values: Sequence[float], pct: bool = False, digits: int = 2) -> str:
    """'0.93 [0.90, 0.96] (n=3)', or as percentages."""
    m, lo, hi, n = mean_ci(values)
    if n == 0:
        return "n/a"
    if pct:
        return f"{100 * m:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={n})"


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
