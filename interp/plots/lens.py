"""Logit-lens (and tuned-lens) rank of the answer's first token by layer.

Reads `analysis/lens.json` and `analysis/lens.npz` of one or more run directories (seeds of one
config) and draws a grid: rows = direction (same = the trained order, reverse), columns = subsets
(n2d, d2n, both). In each panel, one line per position kind (A's last token, B's last token, the
final prompt position; only the entity in the prompt has a line), solid for the logit lens and
dashed for the tuned lens when it was run; the controls at the final position (a random other
same-subset entity's first token, grey, under each lens; the randomly initialised model); and
chance, (d_vocab + 1) / 2. The y value is the geometric-mean rank (exp of the mean log-rank) on a
log axis; with several runs, the mean over runs of the mean log-rank with a 95% t-interval band.
Never recomputes the lens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interp.errors import UserError
from interp.plots import Figure, Runs, finish, plt, results_of
from interp.stats import mean_ci_axis as mean_ci

POSITION_STYLE: dict[str, dict[str, Any]] = {
    "a_last": dict(color="tab:blue", label="A's last token"),
    "b_last": dict(color="tab:orange", label="B's last token"),
    "final": dict(color="tab:green", label="final prompt position"),
}
LENS_STYLE: dict[str, dict[str, Any]] = {
    "logit": dict(ls="-", marker="o", lw=2.0),
    "tuned": dict(ls="--", marker="s", lw=1.6),
}
DIRECTION_LABEL = {"same": "same (trained order)", "reverse": "reverse"}


def load_lens_results(runs: Runs) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """(lens.json, lens.npz arrays) of every run; one-line fix when missing or mismatched."""
    results = results_of(runs, "lens")
    out = [(r.data, r.arrays) for r in results]
    first = out[0][0]
    for (res, _), r in zip(out, results, strict=True):
        same_templates = res["options"]["templates"] == first["options"]["templates"]
        if res["axes"] != first["axes"] or not same_templates:
            raise UserError(
                f"{r.path} has a lens result of another shape or template set than "
                f"{results[0].path}: plot runs of one config, analysed the same way"
            )
    return out


def plot_lens(run_dirs: Runs, out: str | Path | None = None) -> Figure:
    """Draw the lens rank curves for the runs in `run_dirs`; write out.png and out.pdf."""
    results = load_lens_results(run_dirs)
    meta = results[0][0]
    axes_meta = meta["axes"]
    subsets, directions = axes_meta["subset"], axes_meta["direction"]
    positions, layer_names = axes_meta["position"], axes_meta["layer"]
    lenses = [x for x in ("logit", "tuned") if x in axes_meta["lens"]]
    ans, ctl = axes_meta["target"].index("answer"), axes_meta["target"].index("random_entity")
    final = positions.index("final")
    x = np.arange(len(layer_names))
    n_runs = len(results)

    def curve(lens: str, i: int, j: int, t: int, k: int) -> np.ndarray:
        # [run, layer]
        return np.stack([a[f"{lens}_mean_log_rank"][i, j, t, k] for _, a in results])

    def draw(ax: plt.Axes, values: np.ndarray, **style: Any) -> None:
        mean, lo, hi = mean_ci(values)
        ax.plot(x, np.exp(mean), **style)
        if n_runs > 1:
            ax.fill_between(x, np.exp(lo), np.exp(hi), color=style.get("color"), alpha=0.15, lw=0)

    fig, grid = plt.subplots(
        len(directions), len(subsets), figsize=(4.2 * len(subsets), 7.5), sharey=True, squeeze=False
    )
    for j, d in enumerate(directions):
        for i, s in enumerate(subsets):
            ax = grid[j, i]
            for k, p in enumerate(positions):
                if np.isnan(results[0][1]["logit_mean_log_rank"][i, j, ans, k, 0]):
                    continue  # this entity is not in the prompt
                for lens in lenses:
                    draw(
                        ax,
                        curve(lens, i, j, ans, k),
                        color=POSITION_STYLE[p]["color"],
                        **LENS_STYLE[lens],
                    )
            for lens in lenses:
                draw(
                    ax,
                    curve(lens, i, j, ctl, final),
                    color="tab:gray",
                    lw=1.3,
                    ls=LENS_STYLE[lens]["ls"],
                )
            draw(ax, curve("random_init", i, j, ans, final), color="tab:red", ls=":", lw=1.4)
            ax.axhline(meta["chance_rank"], color="black", ls=":", lw=1)
            n = int(results[0][1]["n"][i, j, ans, final])
            ax.set_title(f"{s}, {DIRECTION_LABEL[d]}  (n={n} prompts)", fontsize=10)
            ax.set_yscale("log")
            ax.set_xticks(x, ["emb", *[str(b + 1) for b in range(len(x) - 1)]])
            ax.grid(alpha=0.3, which="both")
            if i == 0:
                ax.set_ylabel("rank of answer's first token\n(geometric mean; 1 = top)")
            if j == len(directions) - 1:
                ax.set_xlabel("blocks applied (emb = embeddings)")
    grid[0, 0].set_ylim(0.8, meta["d_vocab"] * 1.2)
    handles = [
        plt.Line2D([], [], color=st["color"], lw=2, label=st["label"])
        for st in POSITION_STYLE.values()
    ]
    handles += [
        plt.Line2D([], [], color="black", label=f"{lens} lens", **LENS_STYLE[lens])
        for lens in lenses
    ]
    handles += [
        plt.Line2D(
            [],
            [],
            color="tab:gray",
            label="control: random same-subset entity's token\n(final pos., line style = lens)",
        ),
        plt.Line2D(
            [], [], color="tab:red", ls=":", label="control: random-init model (final pos.)"
        ),
        plt.Line2D(
            [],
            [],
            color="black",
            ls=":",
            lw=1,
            label=f"chance ((d_vocab+1)/2 = {meta['chance_rank']:.0f})",
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    seeds = f"mean and 95% interval over {n_runs} runs" if n_runs > 1 else "one run"
    fig.suptitle(
        "Lens: rank of the answer's first token read from the residual stream, by depth\n"
        f"{meta['options']['templates']}-template prompts; {seeds}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return finish(fig, out)
