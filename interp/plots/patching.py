"""Activation-patching heatmaps: layer x position, forward against reverse queries.

Reads `analysis/patching.json` from one or more run directories (seeds of one config) and draws,
for one subset, a grid of heatmaps: rows = resid_pre / attn_out / mlp_out, columns = forward and
reverse queries under each corruption (entity swap, embedding noise). A cell is the fraction of
the clean-vs-corrupted score gap that patching that (layer, position) restores, averaged over
prompts (and over runs). Positions are named relative to the corrupted entity (`<bos>`, `pre`,
`A1 A2` or `B1..B4`, `post`, `mid`, `final`). Where the clean run has no real preference for the
right answer (the gap is not meaningful, as for reverse queries under the reversal curse) the
normalised map would divide by noise: that column shows the raw effect (patched - corrupted, in
score units) on its own colour scale instead, and says so. The right-hand column shows that gap
itself per subset and query, and the real patch against its wrong-source control. Never
recomputes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interp import stats
from interp.errors import UserError
from interp.plots import Figure, Runs, finish, plt, results_of

ACTS = ("resid_pre", "attn_out", "mlp_out")
QUERIES = ("forward", "reverse")
CORRUPTION_LABEL = {"swap": "entity swap", "noise": "embedding noise"}
SCORE_SHORT = {
    "swap": "logit(right) - logit(corrupting answer)",
    "noise": "logit(right) - mean logit(other answers)",
}
QUERY_COLOR = {"forward": "tab:blue", "reverse": "tab:red"}


def load_patching(runs: Runs) -> list[dict[str, Any]]:
    """The patching JSON of every run, with a one-line fix when one is missing."""
    return [r.data for r in results_of(runs, "patching", arrays=False)]


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval over runs (0 for a single value)."""
    m, _, hi, _ = stats.mean_ci(list(np.asarray(values, dtype=float)))
    return m, hi - m


def _gap(groups: list[dict[str, Any]]) -> tuple[float, float]:
    """Mean clean - corrupted gap with its 95% interval: over people (one run) or runs."""
    if len(groups) == 1:
        g = groups[0]["clean_minus_corrupt"]
        lo, hi = g["ci95_over_people"]
        return g["mean_over_people"], (hi - lo) / 2
    return mean_ci(np.array([g["clean_minus_corrupt"]["mean"] for g in groups]))


def _heatmap(ax: plt.Axes, grid: np.ndarray, labels: list[str], normalised: bool) -> Any:
    if normalised:
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", origin="lower")
    else:
        lim = max(1e-6, float(np.nanmax(np.abs(grid))))
        im = ax.imshow(grid, cmap="PuOr_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    n_layers, n_pos = grid.shape
    if n_layers * n_pos <= 160:
        for layer in range(n_layers):
            for j in range(n_pos):
                v = grid[layer, j]
                if abs(v) < 0.005:  # exact no-ops (e.g. positions before the entity): no clutter
                    continue
                strong = abs(v) > (0.6 if normalised else 0.6 * np.nanmax(np.abs(grid)))
                ax.text(
                    j,
                    layer,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if strong else "black",
                )
    ax.set_xticks(range(n_pos), labels, rotation=60, fontsize=7)
    ax.set_yticks(range(n_layers), [str(i) for i in range(n_layers)], fontsize=7)
    return im


def plot_patching(run_dirs: Runs, out: str | Path | None = None, subset: str = "n2d") -> Figure:
    """Draw the patching heatmaps of `subset` for the runs in `run_dirs`; write out.png/.pdf."""
    results = load_patching(run_dirs)
    first = results[0]
    if subset not in first["groups"]:
        raise UserError(
            f"subset {subset!r} not in the first run's patching result: "
            f"use one of {sorted(first['groups'])}"
        )
    corruptions = [c for c in ("swap", "noise") if c in first["options"]["corruptions"]]
    columns = [
        (c, q)
        for c in corruptions
        for q in QUERIES
        if q in first["groups"][subset] and c in first["groups"][subset][q]
    ]
    n_runs = len(results)
    fig = plt.figure(figsize=(3.1 * len(columns) + 4.2, 9.6))
    gs = fig.add_gridspec(
        len(ACTS) + 1,
        len(columns) + 1,
        height_ratios=[1, 1, 1, 0.07],
        width_ratios=[1] * len(columns) + [1.15],
        hspace=0.55,
        wspace=0.3,
    )
    for col, (corruption, query) in enumerate(columns):
        groups = [r["groups"][subset][query][corruption] for r in results]
        labels = groups[0]["labels"]
        if any(g["labels"] != labels for g in groups):
            raise UserError(
                "the runs name different positions (different worlds or templates):"
                " plot runs of one config together"
            )
        meaningful = all(g["meaningful"] for g in groups)
        key = "normalised" if meaningful else "effect_raw"
        im = None
        for row, act in enumerate(ACTS):
            ax = fig.add_subplot(gs[row, col])
            grid = np.mean([np.array(g[key][act], dtype=float) for g in groups], axis=0)
            im = _heatmap(ax, grid, labels, meaningful)
            if col == 0:
                ax.set_ylabel(f"{act}\nlayer", fontsize=9)
            if row == 0:
                gap, half = _gap(groups)
                note = "" if meaningful else "\nno reliable clean preference: RAW effect shown"
                ax.set_title(
                    f"{query} query, {CORRUPTION_LABEL[corruption]}\n"
                    f'"{groups[0]["example_prompt"]} ..."\n'
                    f"clean - corrupted = {gap:.2f} ± {half:.2f}{note}",
                    fontsize=8,
                    color="black" if meaningful else "darkred",
                )
        cax = fig.add_subplot(gs[len(ACTS), col])
        cb = fig.colorbar(im, cax=cax, orientation="horizontal")  # type: ignore[arg-type]
        cb.set_label(
            "restored fraction (0 = corrupted, 1 = clean)"
            if meaningful
            else "patched - corrupted (score units)",
            fontsize=7,
        )
        cb.ax.tick_params(labelsize=6)

    # Right column: the raw gap per subset x query, per corruption; then real patch vs control.
    subsets = list(first["groups"])
    for row, corruption in enumerate(corruptions):
        ax = fig.add_subplot(gs[row, len(columns)])
        width = 0.38
        for k, query in enumerate(QUERIES):
            vals = [
                _gap([r["groups"][s][query][corruption] for r in results])
                if query in first["groups"][s]
                else (np.nan, 0.0)
                for s in subsets
            ]
            x = np.arange(len(subsets)) + (k - 0.5) * width
            ax.bar(
                x,
                [v[0] for v in vals],
                width,
                yerr=[v[1] for v in vals],
                capsize=3,
                color=QUERY_COLOR[query],
                label=f"{query} query",
            )
        min_gap = first["options"]["min_gap"]
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(min_gap, color="gray", lw=0.8, ls="--", label=f"min gap ({min_gap:g})")
        ax.set_xticks(range(len(subsets)), subsets, fontsize=8)
        ax.set_ylabel("clean - corrupted score", fontsize=8)
        ax.set_title(
            f"raw clean - corrupted gap, {CORRUPTION_LABEL[corruption]}\n"
            f"score = {SCORE_SHORT[corruption]}",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=True, framealpha=0.8, loc="best")
    ax = fig.add_subplot(gs[len(corruptions), len(columns)])
    bars, names = [], []
    for corruption in corruptions:
        for query in QUERIES:
            groups = [r["groups"][subset][query][corruption] for r in results]
            if not all(
                g["meaningful"] and g.get("control") and g["control"]["best"] for g in groups
            ):
                continue
            real = mean_ci(np.array([g["best"]["resid_pre"]["value"] for g in groups]))
            ctrl = mean_ci(np.array([g["control"]["best"]["value"] for g in groups]))
            bars.append((real, ctrl))
            names.append(f"{query}\n{corruption}")
    if bars:
        x = np.arange(len(bars)).astype(float)
        err = (lambda k: [b[k][1] for b in bars]) if n_runs > 1 else (lambda k: None)
        ax.bar(
            x - 0.2,
            [b[0][0] for b in bars],
            0.4,
            yerr=err(0),
            capsize=3,
            color="tab:green",
            label="clean source (real)",
        )
        ax.bar(
            x + 0.2,
            [b[1][0] for b in bars],
            0.4,
            yerr=err(1),
            capsize=3,
            color="tab:gray",
            label="third person's clean run (control)",
        )
        ax.set_xticks(x, names, fontsize=7)
    ax.axhline(1, color="black", lw=0.8, ls=":")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.5)
    ax.set_ylabel("best resid_pre restoration", fontsize=8)
    ax.set_title(
        f"{subset}: best cell vs wrong-source control\n(meaningful groups only)", fontsize=8
    )
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, frameon=False, loc="upper left")

    opts = first["options"]
    runs = (
        f"mean over {n_runs} runs; ± = 95% interval over runs"
        if n_runs > 1
        else "one run; ± = 95% interval over people"
    )
    fig.suptitle(
        f"Activation patching, subset {subset}: which (layer, position) restores the "
        f"clean answer?\n{opts['templates']}-template prompts, up to "
        f"{opts['max_prompts'] or 'all'} per query; {runs}",
        fontsize=11,
    )
    return finish(fig, out)
