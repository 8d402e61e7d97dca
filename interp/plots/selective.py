"""Figure of the selective-prediction analysis: accuracy-coverage curves and the AUROC/AUACC table.

Reads `analysis/selective.json` and `.npz` of one or several runs (seeds) and never recomputes.
Top: accuracy of the kept answers against the fraction kept, one line per score, on all test
questions (mixed) and on reversed questions (every subset: Both's are answerable, so a cursed
model is right on about a third of them); the chance selector is the flat line at plain
accuracy, the oracle the best any score could do. Bottom: AUROC and AUACC per score and question
set (mean over runs, +- standard deviation when there are several).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interp.errors import UserError
from interp.plots import Figure, finish, plt, results_of

# Widths decrease in drawing order so that coinciding curves stay visible.
STYLE: dict[str, dict[str, Any]] = {
    "likelihood": dict(color="tab:blue", lw=10, alpha=0.35),
    "entropy": dict(color="tab:orange", lw=6.5, alpha=0.7),
    "probe": dict(color="tab:green", lw=2),
    "probe_question": dict(color="tab:olive", lw=1.5, ls="-."),
    "probe_first_answer": dict(color="tab:cyan", lw=1.5, ls="--"),
    "self_eval": dict(color="tab:red", lw=2),
    "aspire": dict(color="tab:purple", lw=3.5),
    "oracle": dict(color="black", lw=1.2, ls="--"),
    "probe_shuffled": dict(color="tab:green", lw=1, ls=":"),
    "self_eval_shuffled": dict(color="tab:red", lw=1, ls=":"),
    "probe_question_logprobs": dict(color="tab:brown", lw=1.5, ls=(0, (3, 1, 1, 1))),
}
LABEL = {
    "likelihood": "likelihood",
    "entropy": "-entropy (beams)",
    "probe": "linear probe, last answer token",
    "probe_question": "linear probe, question's end",
    "probe_first_answer": "linear probe, first answer token",
    "self_eval": "self-eval log P(correct)",
    "aspire": "ASPIRE",
    "oracle": "oracle",
    "probe_shuffled": "probe, shuffled labels",
    "self_eval_shuffled": "self-eval, shuffled labels",
    "probe_question_logprobs": "control: log-prob learner",
}
GRID = np.linspace(0, 1, 201)[1:]


def _fmt(vals: list[float | None]) -> str:  # None: undefined (null in the JSON)
    v = np.array(vals, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.3f}" + (f" ±{v.std(ddof=1):.3f}" if len(v) > 1 else "")


VAL_LOSS = {
    "self_eval": ("real label (correct?)", "tab:red", "-"),
    "self_eval_shuffled": ("shuffled label", "tab:red", ":"),
    "self_eval_positive_control": ("positive control (name?)", "tab:brown", "--"),
}


def _plot_val_loss(ax: Any, results: list[dict]) -> None:
    """The soft-prompt learner's validation loss per epoch against ln 2, the loss of a constant
    predictor: below the line the learner knows something about its label, above it nothing."""
    for key, (label, color, ls) in VAL_LOSS.items():
        for i, r in enumerate(results):
            fit = r.get("self_eval", {}).get(key)
            if fit is None:
                continue
            ax.plot(fit["val_loss"], color=color, ls=ls, lw=1.3, label=label if i == 0 else None)
    ax.axhline(np.log(2), color="black", lw=1, label="ln 2 (constant predictor)")
    ax.set_xlabel("epoch (0 = before training)", fontsize=8)
    ax.set_ylabel("validation loss\n(class-balanced)", fontsize=8)
    ax.set_title("self-evaluation learner", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)


def plot_selective(run_dirs: list[str | Path], out: str | Path | None = None) -> Figure:
    """The selective-prediction figure of the runs in `run_dirs`; with `out`, also written to
    out.png and out.pdf."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    loaded = [(r.data, r.arrays) for r in results_of(run_dirs, "selective")]
    results = [r for r, _ in loaded]
    names = [*results[0]["scores"], *results[0]["controls"]]
    fig = plt.figure(figsize=(15, 10))
    gs = fig.add_gridspec(
        2, 3, height_ratios=[3, 2.2], width_ratios=[1, 1, 0.62], hspace=0.28, wspace=0.22
    )
    for col, set_name in enumerate(("mixed", "reverse")):
        ax = fig.add_subplot(gs[0, col])
        acc = [r["summary"][f"accuracy_{set_name}"] for r in results]
        n = [int(r["summary"][f"n_{set_name}"]) for r in results]
        for name in names:
            key = f"accuracy_{set_name}_{name}"
            curves = [
                np.interp(GRID, a[f"coverage_{set_name}"], a[key]) for _, a in loaded if key in a
            ]
            if not curves:
                continue
            c = np.array(curves)
            ax.plot(GRID, c.mean(0), label=f"{LABEL.get(name, name)}", **STYLE.get(name, {}))
            if len(c) > 1:
                ax.fill_between(
                    GRID,
                    c.mean(0) - c.std(0),
                    c.mean(0) + c.std(0),
                    color=STYLE.get(name, {}).get("color", "grey"),
                    alpha=0.12,
                )
        ax.axhline(
            float(np.mean(acc)),
            color="grey",
            ls="-.",
            lw=1,
            label="chance selector (= plain accuracy)",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("coverage (fraction answered, most confident first)")
        ax.set_ylabel("accuracy of the answered questions")
        what = (
            "all test questions (forward + reversed)"
            if set_name == "mixed"
            else "reversed questions: N2D and D2N (never trained reversed)\n"
            "and Both (trained both ways, answerable)"
        )
        sizes = "/".join(map(str, sorted(set(n))))
        ax.set_title(f"{what}\nn = {sizes} questions per run, {len(results)} run(s)")
        ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    side = gs[0, 2].subgridspec(2, 1, height_ratios=[1.5, 1], hspace=0.35)
    legend_ax = fig.add_subplot(side[0])
    legend_ax.axis("off")
    legend_ax.legend(
        handles,
        labels,
        loc="center left",
        fontsize=9,
        frameon=False,
        title="score (higher = more confident);\ncoinciding curves are drawn nested",
    )
    _plot_val_loss(fig.add_subplot(side[1]), results)
    ax = fig.add_subplot(gs[1, :])
    ax.axis("off")
    sets = ("mixed", "forward", "reverse")
    header = ["score"] + [f"{s} {m}" for s in sets for m in ("AUROC", "AUACC")]
    rows = [
        ["accuracy (coverage 1)"]
        + [x for s in sets for x in ("", _fmt([r["summary"][f"accuracy_{s}"] for r in results]))]
    ]
    for name in names:
        rows.append(
            [LABEL.get(name, name)]
            + [
                _fmt([r["summary"].get(f"{m}_{name}_{s}", np.nan) for r in results])
                for s in sets
                for m in ("auroc", "auacc")
            ]
        )
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.35)
    alphas = _fmt([r["summary"]["alpha"] for r in results])
    reasons = sorted(
        {
            why
            for r in results
            for k, why in r["undefined"].items()
            if k.startswith("auroc_") or k == "alpha"
        }
    )
    note = (
        f"AUROC chance = 0.5, AUACC chance = accuracy; n/a = undefined (one class only). "
        f"ASPIRE alpha (validation) = {alphas}; beams = {results[0]['options']['beams']}, "
        f"templates = {results[0]['options']['templates']}."
    )
    if "self_eval_val_loss_best" in results[0]["summary"]:
        best = _fmt([r["summary"]["self_eval_val_loss_best"] for r in results])
        note += f"\nSelf-evaluation best validation loss {best} vs ln 2 = {np.log(2):.3f}"
        if "positive_control_val_loss_best" in results[0]["summary"]:
            pc = _fmt([r["summary"]["positive_control_val_loss_best"] for r in results])
            auc = _fmt([r["summary"]["positive_control_auroc_test"] for r in results])
            note += f"; positive control {pc} (test AUROC {auc})."
    for why in reasons[:4]:
        note += f"\nn/a because {why}"
    ax.set_title(note, fontsize=9, loc="left")
    fig.suptitle(
        "Selective prediction (ASPIRE): does the model know when its answer is wrong?", fontsize=13
    )
    return finish(fig, out)
