"""Training dynamics: behaviour, probes and the logit lens against training step.

Reads `analysis/dynamics.json` from one or more run directories (seeds of one config, with the
same checkpoint steps) and draws four panels: exact match per subset x direction; best-depth
accuracy of the entity-alone probes (A -> B's role, B -> A's first-name class) per subset, with
the random-label control and chance; the logit-lens median rank of the answer's first token at
the final prompt position (the model's output) and at the in-prompt entity's last token (best
depth), each with the random-other-entity control. Several runs: mean and 95% t-interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from interp.errors import UserError
from interp.plots import finish
from interp.plots.probing import load_results, mean_ci_curves
from interp.stats import RANK, UNIT, Range

SUBSETS = ("n2d", "d2n", "both")
COLOR = {"n2d": "tab:blue", "d2n": "tab:red", "both": "tab:green"}
DIR_STYLE = {"same": "-", "reverse": "--", "a_to_b": "-", "b_to_a": "--"}
MARKER = {"n2d": "o", "d2n": "s", "both": "^"}  # lines that coincide stay tellable apart


def _band(
    ax: plt.Axes,
    x: np.ndarray,
    curves: np.ndarray,
    n_runs: int,
    rng: Range = UNIT,
    **style: object,
) -> None:
    """Mean over runs with its 95% interval inside `rng` (rates and accuracies by default)."""
    mean, lo, hi = mean_ci_curves(curves, rng)
    ax.plot(x, mean, **style)  # type: ignore[arg-type]
    if n_runs > 1:
        ax.fill_between(x, lo, hi, color=style.get("color"), alpha=0.15, lw=0)  # type: ignore[arg-type]


def plot_dynamics(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Figure:
    """Draw the dynamics of the runs in `run_dirs`; write out.png and out.pdf."""
    results = load_results(run_dirs, "dynamics")
    steps = results[0]["steps"]
    if any(r["steps"] != steps for r in results):
        raise UserError("the runs were checkpointed at different steps: plot runs of one config")
    x = np.array(steps)
    n = len(results)

    def stack(kind: str, key: str) -> np.ndarray:
        return np.array([r["curves"][kind][key] for r in results])  # [run, step]

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    ax = axes[0, 0]
    for s in SUBSETS:
        for d in ("same", "reverse"):
            _band(
                ax,
                x,
                stack("exact_match", f"{s}_{d}"),
                n,
                color=COLOR[s],
                ls=DIR_STYLE[d],
                marker=MARKER[s],
                ms=4,
                label=f"{s} {d}",
            )
    ax.set(
        title="Exact match (greedy, training templates)", ylabel="exact match", ylim=(-0.03, 1.03)
    )
    ax.legend(fontsize=8, ncol=3, loc="center right", handlelength=3)

    ax = axes[0, 1]
    for s in SUBSETS:
        for d, name in (("a_to_b", "A -> B's role"), ("b_to_a", "B -> A's class")):
            _band(
                ax,
                x,
                stack("probe_best", f"{d}_{s}"),
                n,
                color=COLOR[s],
                ls=DIR_STYLE[d],
                marker=MARKER[s],
                ms=4,
                label=f"{s}: {name}",
            )
    for d, name in (("a_to_b", "A -> role"), ("b_to_a", "B -> class")):
        ctl = np.array(
            [[r["curves"]["probe_control_best"][f"{d}_{s}"] for s in SUBSETS] for r in results]
        ).mean(1)  # [run, step]: mean over subsets
        _band(
            ax,
            x,
            ctl,
            n,
            color="tab:gray",
            ls=DIR_STYLE[d],
            lw=1.2,
            label=f"control task (label per token type): {name}",
        )
        chance = np.mean([r["chance"][d][s] for r in results for s in SUBSETS])
        ax.axhline(chance, color="black", ls=DIR_STYLE[d], lw=0.8, label=f"chance: {name}")
    ax.set(
        title="Entity-alone probes (best depth of the residual stream)",
        ylabel="held-out accuracy",
        ylim=(-0.03, 1.03),
    )
    ax.legend(fontsize=7, ncol=2, loc="upper left", handlelength=3)

    chance_rank = results[0]["chance_rank"]
    for ax, kind, title, where in (
        (
            axes[1, 0],
            "lens_final_rank",
            "Logit lens at the final prompt position, last layer",
            "upper right",
        ),
        (
            axes[1, 1],
            "lens_entity_best_rank",
            "Logit lens at the in-prompt entity's last token, best depth",
            "lower left",
        ),
    ):
        for s in SUBSETS:
            for d in ("same", "reverse"):
                _band(
                    ax,
                    x,
                    stack(kind, f"{s}_{d}"),
                    n,
                    RANK,
                    color=COLOR[s],
                    ls=DIR_STYLE[d],
                    marker=MARKER[s],
                    ms=4,
                    label=f"{s} {d}",
                )
        ctl = np.array([list(r["curves"][f"{kind}_control"].values()) for r in results]).mean(1)
        _band(
            ax,
            x,
            ctl,
            n,
            RANK,
            color="tab:gray",
            ls=":",
            lw=1.5,
            label="control: random other entity (mean)",
        )
        ax.axhline(chance_rank, color="black", ls="-.", lw=1, label="chance rank")
        ax.set_yscale("log")
        ax.set_ylim(0.8, chance_rank * 2.5)
        ax.set(title=title, ylabel="median rank of the answer's first token (1 = top)")
        ax.legend(fontsize=7, ncol=3, loc=where, handlelength=3)
    for ax in axes.flat:
        ax.set_xlabel("training step (0 = initialisation)")
        ax.grid(alpha=0.3)
    seeds = f"mean and 95% interval over {n} runs" if n > 1 else "one run"
    fig.suptitle(
        f"Training dynamics over {len(steps)} checkpoints; "
        f"{results[0]['n_people_per_subset']} people per subset; {seeds}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return finish(fig, out)
