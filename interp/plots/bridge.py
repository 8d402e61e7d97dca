"""The identity bridge (Ma et al. 2026, `interp.data.bridge`) at a glance: per model size, each
training condition's forward exact match, reversed exact match (the reversal question in the
bridge's frame) and echo rate (the same question answered with B's own name: the shortcut),
mean and 95% interval over runs inside [0, 100]%, runs as dots. Draws the runs' saved
evaluations only (Ma et al.'s numbers are in the findings' table beside the kit's)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from interp.plots import Figure, Runs, finish, plt, results_of
from interp.stats import UNIT, bounded_mean_ci


def _em(m: dict[str, Any], direction: str) -> float:
    (by_direction,) = m["exact_match"].values()  # the bridge world has one subset, its pairs
    return float(by_direction[direction]["train"])


BARS = (  # (label, colour, the run's rate from its metrics.json)
    ("forward", "tab:blue", lambda m: _em(m, "same")),
    ("reversed", "tab:red", lambda m: _em(m, "reverse")),
    ("echo (shortcut)", "tab:gray", lambda m: float(m["bridge"]["shortcut"]["rate"])),
)


def plot_bridge(by_group: Mapping[str, Runs], out: str | Path | None = None) -> Figure:
    """One panel per model size (the group's first label), one group of bars per condition
    (its second label), from groups named '<size>/<condition>/<objective>'."""
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for group, runs in by_group.items():
        size, condition = group.split("/")[:2]
        ms = [r.data for r in results_of(runs, "behaviour", arrays=False)]
        cells.setdefault(size, {})[condition] = ms
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 3.8), sharey=True)
    for ax, (size, by_condition) in zip(np.atleast_1d(axes), cells.items(), strict=True):
        conditions = list(by_condition)
        x = np.arange(len(conditions))
        for j, (label, color, rate) in enumerate(BARS):
            vals = [[rate(m) for m in by_condition[c]] for c in conditions]
            stats = [bounded_mean_ci(v, UNIT) for v in vals]
            means = np.array([100 * s[0] for s in stats])
            err = np.array([[100 * (s[0] - s[1]) for s in stats],
                            [100 * (s[2] - s[0]) for s in stats]])  # fmt: skip
            xs = x + (j - 1) * 0.27
            ax.bar(xs, means, 0.25, yerr=err, capsize=3, color=color, alpha=0.8, label=label)
            for xi, v in zip(xs, vals, strict=True):
                ax.scatter([xi] * len(v), [100 * a for a in v], s=10, color="k", zorder=3)
        ax.set_xticks(x, conditions)
        ax.set_ylim(0, 108)
        ax.set_title(size)
        ax.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("% of pairs")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(
        "Identity bridge: forward, reversed (in the bridge's frame) and echo, mean and 95% "
        "interval over runs (dots)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return finish(fig, out)
