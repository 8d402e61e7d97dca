"""Objectives side by side: does the mechanistic signature move with reverse accuracy?

One panel per instrument, one group of bars per objective (mean and 95% interval over runs
inside each number's declared range, `interp.stats.runs_interval`; runs as dots): exact match in
the trained order beside the reversed one (causal decoding, and native mode for BICO and MLM-U),
the cross-entity probes (B's attribute from A alone, A's attribute from B alone, with the
random-label control), the gradient-update test, and selective prediction.
Reads metrics.json and analysis/*.json only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from interp.plots import Figure, finish, plt
from interp.results import read_result
from interp.stats import UNIT, bounded_mean_ci, value_range


def _get(d: dict[str, Any], path: str) -> float | None:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return float(d) if isinstance(d, int | float) else None


def _values(runs: list[Path], source: str, key: str) -> list[float]:
    out = []
    for r in runs:
        p = r / source
        if p.is_file():
            v = (
                _get(json.loads(p.read_text()), key)
                if source == "metrics.json"
                else read_result(r, p.stem, arrays=False).summary.get(key)
            )
            if isinstance(v, int | float):
                out.append(float(v))
    return out


# Panel title -> list of (bar label, source file, key).
PANELS: dict[str, list[tuple[str, str, str]]] = {
    # Forward (trained order) beside reverse, so a reader sees the objectives are matched on
    # what they were trained to do; native mode (answer masked, bidirectional: interp.native)
    # exists for the masking objectives only and is empty for the others.
    "exact match (training templates)": [
        ("n2d same", "metrics.json", "exact_match.n2d.same.train"),
        ("d2n same", "metrics.json", "exact_match.d2n.same.train"),
        ("n2d reversed", "metrics.json", "exact_match.n2d.reverse.train"),
        ("d2n reversed", "metrics.json", "exact_match.d2n.reverse.train"),
        ("n2d reversed, native", "metrics.json", "native.exact_match.n2d.reverse.train"),
        ("d2n reversed, native", "metrics.json", "native.exact_match.d2n.reverse.train"),
    ],
    "probe accuracy, best layer (resid)": [
        ("B's attr. from A, n2d", "analysis/probing.json", "probe_a_to_b_n2d_best"),
        ("A's attr. from B, n2d", "analysis/probing.json", "probe_b_to_a_n2d_best"),
        ("A's attr. from B, d2n", "analysis/probing.json", "probe_b_to_a_d2n_best"),
        ("random labels, n2d A->B", "analysis/probing.json", "control_randlabel_a_to_b_n2d_best"),
    ],
    "gradient-update test: Δ log p after one step": [
        ("forward Δ", "analysis/update.json", "delta_logp_forward_mean"),
        ("forward control", "analysis/update.json", "delta_logp_forward_control_mean"),
        ("reverse Δ", "analysis/update.json", "delta_logp_reverse_mean"),
        ("reverse control", "analysis/update.json", "delta_logp_reverse_control_mean"),
    ],
    "selective prediction AUROC (mixed questions)": [
        ("likelihood", "analysis/selective.json", "auroc_likelihood_mixed"),
        ("self-eval", "analysis/selective.json", "auroc_self_eval_mixed"),
        ("probe", "analysis/selective.json", "auroc_probe_mixed"),
        ("ASPIRE", "analysis/selective.json", "auroc_aspire_mixed"),
        ("self-eval, shuffled labels", "analysis/selective.json", "auroc_self_eval_shuffled_mixed"),
    ],
}


def plot_comparison(groups: dict[str, list[Path]], out: str | Path | None = None) -> Figure:
    """`groups`: objective -> its run directories (seeds)."""
    objectives = list(groups)
    panels = {
        t: bars
        for t, bars in PANELS.items()
        if any(_values(rs, src, k) for rs in groups.values() for _, src, k in bars)
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (title, bars) in zip(axes[0], panels.items(), strict=True):
        width = 0.8 / len(bars)
        x = np.arange(len(objectives))
        for j, (label, src, key) in enumerate(bars):
            vals = [_values(groups[o], src, key) for o in objectives]
            rng = UNIT if src == "metrics.json" else value_range(key)  # exact match: a rate
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
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "Objectives compared (mean over runs, 95% interval inside each number's range; "
        "dots = runs; hatched = controls)",
        fontsize=10,
    )
    fig.tight_layout()
    return finish(fig, out)
