"""Probe accuracy by layer: the trained model against its two controls and chance.

Reads `analysis/probing.json` from one or more run directories (seeds of one config) and draws a
grid: rows = site x probe direction (entity alone: residual stream, MLP output; the reference
site: a question's final position; A -> B's role, B -> A's first-name class), columns = subsets
(n2d, d2n, both). With several runs each line is the
mean over runs with a 95% t-interval band. Never recomputes a probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from interp import stats
from interp.plots import Runs, finish, results_of

SUBSETS = ("n2d", "d2n", "both")
ROWS = tuple(
    (site, d) for site in ("resid", "mlp_out", "prompt_final") for d in ("a_to_b", "b_to_a")
)
ROW_LABEL = {"a_to_b": "A alone -> B's role", "b_to_a": "B alone -> A's first-name class"}
SITE_LABEL = {
    "resid": "entity alone: residual",
    "mlp_out": "entity alone: MLP output",
    "prompt_final": "reference: question's final pos.",
}
ROW_LABEL_PROMPT = {"a_to_b": "'A is the' -> B's role", "b_to_a": "'the B is called' -> A's class"}
CONDITION_STYLE = {
    "trained": dict(color="tab:blue", lw=2.2, marker="o", label="trained model"),
    "randinit": dict(
        color="tab:orange", lw=1.5, ls="--", marker="s", ms=4, label="control: random init"
    ),
    "randlabel": dict(
        color="tab:gray",
        lw=1.5,
        ls=":",
        marker="^",
        ms=4,
        label="control task: a random label per token type",
    ),
}


def mean_ci_curves(
    curves: np.ndarray, rng: stats.Range = stats.UNIT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% interval over runs (axis 0) of each point of `curves` [run, point], inside
    the values' range `rng` (accuracies by default; `interp.stats.runs_interval`)."""
    m = np.array([stats.bounded_mean_ci(col, rng) for col in np.asarray(curves, float).T])
    return m[:, 0], m[:, 1], m[:, 2]


def load_results(runs: Runs, name: str) -> list[dict[str, Any]]:
    """The JSON of every run's `name` result, with a one-line fix when one is missing."""
    return [r.data for r in results_of(runs, name, arrays=False)]


def plot_probing(run_dirs: Runs, out: str | Path | None = None) -> Figure:
    """Draw probe accuracy by layer for the runs in `run_dirs`; write out.png and out.pdf."""
    results = load_results(run_dirs, "probing")
    n_runs = len(results)
    n_people = results[0]["n_people_per_subset"]
    folds = results[0]["options"]["folds"]
    fig, axes = plt.subplots(len(ROWS), len(SUBSETS), figsize=(12, 16), sharey=True, squeeze=False)
    for r, (site, direction) in enumerate(ROWS):
        for c, subset in enumerate(SUBSETS):
            ax = axes[r, c]
            for cond, style in CONDITION_STYLE.items():
                curves = np.array(
                    [res["accuracy"][cond][site][direction][subset] for res in results]
                )  # [run, layer]
                start = 1 if site == "mlp_out" else 0
                x = np.arange(start, start + curves.shape[1])
                mean, lo, hi = mean_ci_curves(curves)
                ax.plot(x, mean, **style)
                if n_runs > 1:
                    ax.fill_between(x, lo, hi, color=style["color"], alpha=0.18, lw=0)
            chance = np.mean([res["chance"][direction][subset] for res in results])
            ax.axhline(chance, color="black", lw=1, ls="-.", label="chance (majority class)")
            n_layers = len(results[0]["accuracy"]["trained"]["resid"][direction][subset]) - 1
            ax.set_xticks(range(n_layers + 1), ["emb", *[str(i) for i in range(1, n_layers + 1)]])
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(f"subset {subset}", fontsize=12)
            if c == 0:
                row = (ROW_LABEL_PROMPT if site == "prompt_final" else ROW_LABEL)[direction]
                ax.set_ylabel(f"{SITE_LABEL[site]}\n{row}\nheld-out accuracy", fontsize=9)
            if r == len(ROWS) - 1:
                ax.set_xlabel("blocks applied (emb = embeddings)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
    seeds = f"mean and 95% interval over {n_runs} runs" if n_runs > 1 else "one run"
    fig.suptitle(
        "Linear probes for the other entity's attribute: at the entity's last token with "
        "the entity alone as input,\nand (reference) at the final position of a question "
        f"whose answer is the other entity\n{n_people} people per subset, {folds}-fold "
        f"cross-validation over people; {seeds}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return finish(fig, out)
