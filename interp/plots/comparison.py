"""Objectives side by side: does the mechanistic signature move with reverse accuracy?

One panel per instrument, one group of bars per objective (mean and 95% interval over runs
inside each number's declared range, `interp.stats.runs_interval`; runs as dots): exact match in
the trained order beside the reversed one (each objective in its own mode, BICO also by causal
decoding), the cross-entity probes (B's attribute from A alone, A's attribute from B alone, with the
random-label control), the gradient-update test, and selective prediction.
Draws the runs' saved summaries only, each number inside its declared range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp.plots import Figure, finish, plt, results_of
from interp.results import Result
from interp.stats import REAL, UNIT, Range, bounded_mean_ci

INSTRUMENTS_DRAWN = ("behaviour", "probing", "update", "selective")


def _bundle(runs: Sequence[Result[Any] | str | Path]) -> list[Result[Any]]:
    """Every result of a group: Results as given, each run directory's present results read."""
    out: list[Result[Any]] = []
    for r in runs:
        if isinstance(r, Result):
            out.append(r)
            continue
        for name in INSTRUMENTS_DRAWN:
            present = (
                (Path(r) / "metrics.json").is_file()
                if name == "behaviour"
                else (Path(r) / "analysis" / f"{name}.json").is_file()
            )
            if present:
                out += results_of([r], name, arrays=False)
    return out


def _values(results: list[Result[Any]], instrument: str, key: str) -> list[float]:
    return [
        v for r in results if r.instrument == instrument and (v := r.summary.value(key)) is not None
    ]


# Panel title -> (the range of its numbers, [(bar label, instrument, summary key)]): the ranges
# the instruments' Summaries declare for these numbers.
PANELS: dict[str, tuple[Range, list[tuple[str, str, str]]]] = {
    # Forward (trained order) beside reverse, each objective in its own mode (interp.modes), so
    # a reader sees the objectives are matched on what they were trained to do; causal decoding
    # beside its own mode exists for BICO only and is empty for the others.
    "exact match (training templates)": (
        UNIT,
        [
            ("n2d same", "behaviour", "em_n2d_same_train"),
            ("d2n same", "behaviour", "em_d2n_same_train"),
            ("n2d reversed", "behaviour", "em_n2d_reverse_train"),
            ("d2n reversed", "behaviour", "em_d2n_reverse_train"),
            ("n2d reversed, causal decoding", "behaviour", "causal_n2d_reverse_train"),
            ("d2n reversed, causal decoding", "behaviour", "causal_d2n_reverse_train"),
        ],
    ),
    "probe accuracy, best layer (resid)": (
        UNIT,
        [
            ("B's attr. from A, n2d", "probing", "probe_a_to_b_n2d_best"),
            ("A's attr. from B, n2d", "probing", "probe_b_to_a_n2d_best"),
            ("A's attr. from B, d2n", "probing", "probe_b_to_a_d2n_best"),
            ("control task, n2d A->B", "probing", "control_randlabel_a_to_b_n2d_best"),
        ],
    ),
    "gradient-update test: Δ log p after one step": (
        REAL,
        [
            ("forward Δ", "update", "delta_logp_forward_mean"),
            ("forward control", "update", "delta_logp_forward_control_mean"),
            ("reverse Δ", "update", "delta_logp_reverse_mean"),
            ("reverse control", "update", "delta_logp_reverse_control_mean"),
        ],
    ),
    "selective prediction AUROC (mixed questions)": (
        UNIT,
        [
            ("likelihood", "selective", "auroc_likelihood_mixed"),
            ("self-eval", "selective", "auroc_self_eval_mixed"),
            ("probe", "selective", "auroc_probe_mixed"),
            ("ASPIRE", "selective", "auroc_aspire_mixed"),
            ("self-eval, shuffled labels", "selective", "auroc_self_eval_shuffled_mixed"),
        ],
    ),
}


def plot_comparison(
    groups: Mapping[str, Sequence[Result[Any] | str | Path]], out: str | Path | None = None
) -> Figure:
    """`groups`: objective -> its runs (seeds): their results (any instruments), or run
    directories, whose results are read."""
    bundles = {o: _bundle(rs) for o, rs in groups.items()}
    objectives = list(bundles)
    panels = {
        t: (rng, bars)
        for t, (rng, bars) in PANELS.items()
        if any(_values(rs, src, k) for rs in bundles.values() for _, src, k in bars)
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (title, (rng, bars)) in zip(axes[0], panels.items(), strict=True):
        # only the bars some objective has (the retrieval world has no D2N, a causal-only
        # study no causal-decoding column)
        bars = [b for b in bars if any(_values(rs, b[1], b[2]) for rs in bundles.values())]
        width = 0.8 / len(bars)
        x = np.arange(len(objectives))
        for j, (label, src, key) in enumerate(bars):
            vals = [_values(bundles[o], src, key) for o in objectives]
            stats = [bounded_mean_ci(v, rng) for v in vals]
            m = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            xs = x - 0.4 + width * (j + 0.5)
            hatch = "//" if "control" in label or "random" in label else None
            ax.bar(
                xs,
                m,
                width * 0.95,
                yerr=np.nan_to_num(err),
                capsize=2,
                color=colors(j),
                alpha=0.8,
                label=label,
                hatch=hatch,
            )
            for xi, v in zip(xs, vals, strict=True):
                ax.scatter([xi] * len(v), v, s=8, color="k", zorder=3)
        ax.set_xticks(x, objectives, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "Objectives compared (mean over runs, 95% interval inside each number's range; "
        "dots = runs; hatched = controls)",
        fontsize=10,
    )
    fig.tight_layout()
    return finish(fig, out)
