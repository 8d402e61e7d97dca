"""Learning curves: what each objective has learned, step by step, from its runs' training logs.

Every `train.eval_every` steps the trainer logs (`interp.evaluate.training_log_metrics`) exact
match in the objective's own mode per subset and direction, causal decoding beside it where the
objective has a causal head but is asked otherwise (BICO), and in-document infill of each entity
for a masking objective. One panel per objective, one line per measure (mean over runs, each run
faint), with the convergence bar (`interp.evaluate.LEARNED_AT`): how many steps the backward
direction lags the forward one, and whether an objective learned its own question at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from interp.plots import Figure, Runs, finish, plt, results_of

LEARNED_AT = 0.95  # interp.evaluate.LEARNED_AT (not imported: plots stay free of torch)

# (log key prefix, label, colour, line style) in drawing order; <s> and <d> are filled in.
SERIES = (
    ("em_{s}_same", "{S} forward, own mode", "tab:blue", "-"),
    ("em_{s}_reverse", "{S} backward, own mode", "tab:red", "-"),
    ("causal_em_{s}_same", "{S} forward, causal decoding", "tab:blue", ":"),
    ("causal_em_{s}_reverse", "{S} backward, causal decoding", "tab:red", ":"),
    ("infill_{s}_same", "{S} infill, second entity", "tab:green", "--"),
    ("infill_{s}_reverse", "{S} infill, first entity", "tab:olive", "--"),
)


def training_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's train_log.jsonl, one dict per logged step ([] where there is none)."""
    path = Path(run_dir) / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curves(logs: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values [runs x steps]) of `key` over the logs, on the steps every run logged."""
    per_run = [{r["step"]: r[key] for r in log if key in r} for log in logs]
    steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    if not steps:
        return None
    return np.array(steps), np.array([[p[s] for s in steps] for p in per_run])


def plot_learning_curves(
    groups: dict[str, Runs], out: str | Path | None = None, subset: str = "n2d"
) -> Figure:
    """One panel per objective (`groups`: objective -> its runs' behaviour results or run
    directories): exact match in its own mode forward and backward on `subset`, causal decoding
    beside it where logged, and in-document infill of each entity, over training steps."""
    names = list(groups)
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.6 * len(names) + 1, 3.6), sharey=True, squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=True):
        logs = [training_log(str(r.path)) for r in results_of(groups[name], "behaviour", False)]
        drawn = 0
        for key, label, color, style in SERIES:
            got = _curves(logs, key.format(s=subset))
            if got is None:
                continue
            steps, values = got
            for row in values:
                ax.plot(steps, row, color=color, ls=style, lw=0.6, alpha=0.35)
            ax.plot(steps, values.mean(0), color=color, ls=style, lw=1.8,
                    label=label.format(S=subset.upper()))  # fmt: skip
            drawn += 1
        ax.axhline(LEARNED_AT, color="grey", lw=0.8, ls="-.")
        runs = f"{len(logs)} run" + ("s" if len(logs) != 1 else "")
        ax.set_title(f"{name} ({runs})" if drawn else f"{name}: nothing logged")
        ax.set_xlabel("training step")
        ax.set_ylim(-0.03, 1.03)
        if drawn:
            ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("exact match")
    fig.suptitle(
        f"Learning curves, {subset.upper()} (on the retrieval world: the pairs whose queries are "
        f"held out); grey: the {LEARNED_AT:.0%} convergence bar; thin lines: single runs",
        fontsize=10,
    )
    fig.tight_layout()
    return finish(fig, out)
