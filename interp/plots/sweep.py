"""Sweep figure: reverse accuracy and probe selectivity against weight decay, per objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp.plots import Figure, finish, plt

PANELS = (
    ("em_n2d_reverse_train", "reverse exact match, n2d (train templates)"),
    ("em_n2d_same_train", "same-direction exact match, n2d"),
    ("selectivity_a_to_b_n2d", "probe selectivity: B's attribute from A, n2d"),
    ("selectivity_b_to_a_d2n", "probe selectivity: A's attribute from B, d2n"),
)


def plot_sweep(rows: list[dict[str, Any]], out: str | Path | None = None) -> Figure:
    """`rows` as written to sweep.json (one per grid cell, mean/lo/hi over seeds)."""
    panels = [(k, t) for k, t in PANELS if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    xkey = "weight_decay" if any("weight_decay" in r for r in rows) else None
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        label = ", ".join(
            f"{k}={v}" for k, v in r.items() if k in ("objectives", "d_model", "n_layers")
        )
        series.setdefault(label or "all", []).append(r)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for label, rs in series.items():
            rs = sorted(rs, key=lambda r: r.get(xkey, 0) if xkey else 0)
            xs = [r.get(xkey, i) if xkey else i for i, r in enumerate(rs)]
            m = [r.get(key, float("nan")) for r in rs]
            lo = [r.get(f"{key}_lo", float("nan")) for r in rs]
            hi = [r.get(f"{key}_hi", float("nan")) for r in rs]
            ax.plot(xs, m, marker="o", label=label)
            ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xkey or "cell")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"Sweep (mean, 95% CI over seeds; n = {rows[0].get('n_seeds')} seeds per point)",
        fontsize=10,
    )
    fig.tight_layout()
    return finish(fig, out)
