"""Berglund et al. (2023) Experiment 1 reproduced on its published data, beside the paper.

Reads `metrics.json` and `eval_logprobs.npz` of runs trained on the paper's files (the
`paper_exp1` preset, one run per seed) and draws
- our Table 1: exact match per subset x direction, on the paper's held-out test templates and on
  training templates, mean and 95% t-interval over seeds (dots: seeds), beside GPT-3-175B's
  published numbers (held-out templates, the only kind the paper tests);
- the paper's Figure 4: histograms of log p(correct completion) against log p(randomized
  completion) on reversed prompts (the `_randomized` files on held-out templates; a random other
  person of the subset on training templates), pooled over seeds, with each seed's paired t-test
  and KS p-values (per person, log-probs averaged over templates);
- the same histograms in the trained direction, as the positive control: the instrument must
  separate the two there, or its silence on reversed prompts means nothing.
Nothing is recomputed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch

from interp.errors import UserError
from interp.plots import Figure, finish, plt
from interp.stats import mean_ci

SUBSETS = ("n2d", "d2n", "both")
LABEL = {"n2d": "NameToDescription", "d2n": "DescriptionToName", "both": "Both"}
KINDS = {"heldout": "held-out templates", "train": "training templates"}
# GPT-3-175B, Table 1 of Berglund et al. (2023): exact match (%) on held-out templates. The
# reversed cells are "about 0%" in the paper; we draw them as 0.
PAPER_TABLE1: dict[tuple[str, str], float] = {
    ("d2n", "same"): 96.7,
    ("n2d", "same"): 50.0,
    ("d2n", "reverse"): 0.0,
    ("n2d", "reverse"): 0.0,
}

# Facts about the published files that the reader of the figure needs (visible in the files).
NOTES = (
    "Notes on the published test files. Both, reversed, held-out: each completion carries the "
    "rest of the sentence (' Mason Caldwell has found their calling.'), so exact match needs the "
    "unseen template's tail, not only the name.\n"
    "DescriptionToName, reversed, held-out: each _randomized completion is another line's "
    "description worded for another template ('composed ...' after 'was once'), so a wording "
    "mismatch, not knowledge of the person, can separate correct from randomized."
)


def load_metrics(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """metrics.json of every run; refuses runs not evaluated or not trained on the paper's data."""
    out = []
    for r in map(Path, run_dirs):
        path = r / "metrics.json"
        if not path.is_file():
            raise UserError(f"{path} not found: evaluate the run first (interp evaluate {r})")
        cfg = json.loads((r / "config.json").read_text()) if (r / "config.json").is_file() else {}
        if cfg.get("world", {}).get("source") != "paper":
            raise UserError(
                f"{r} was not trained on the paper's data: train it with --preset paper_exp1"
            )
        out.append(json.loads(path.read_text()))
    if not out:
        raise UserError("no run directories given: pass the paper_exp1 runs (one per seed)")
    return out


def table1(run_dirs: list[str | Path]) -> dict[str, Any]:
    """Exact match and the reversed log-prob test per cell over seeds: {cell: {...}}.

    Cells are 'subset.direction.templates'. Each holds the per-seed values, mean and 95% interval
    of exact match (fractions), n prompts, and per seed the log-prob test's p-values."""
    ms = load_metrics(run_dirs)
    out: dict[str, Any] = {}
    for s in SUBSETS:
        for d in ("same", "reverse"):
            for k in KINDS:
                vals = [m["exact_match"].get(s, {}).get(d, {}).get(k) for m in ms]
                if any(v is None for v in vals):
                    continue
                mean, lo, hi, n = mean_ci(vals)
                lp = [m["logprob_test"][s][d][k] for m in ms]
                out[f"{s}.{d}.{k}"] = {
                    "exact_match": vals,
                    "mean": mean,
                    "ci95": [lo, hi],
                    "n_seeds": n,
                    "n_prompts": ms[0]["exact_match_n"][s][d][k],
                    "logprob_mean_diff": [r["mean_diff"] for r in lp],
                    "t_pvalue": [r["t_pvalue"] for r in lp],
                    "ks_pvalue": [r["ks_pvalue"] for r in lp],
                    "n_people": lp[0]["n"],
                    "paper": PAPER_TABLE1.get((s, d)) if k == "heldout" else None,
                }
    return out


def format_table1(t: dict[str, Any]) -> str:
    """Table 1 as markdown: exact match (mean [95% CI], seeds) and the log-prob test per cell."""
    lines = [
        "| subset | direction | templates | exact match % (mean [95% CI]) | per seed | "
        "GPT-3-175B | log p diff (per seed) | t-test p | KS p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, r in t.items():
        s, d, k = cell.split(".")
        seeds = ", ".join(f"{100 * v:.1f}" for v in r["exact_match"])
        paper = "" if r["paper"] is None else f"{r['paper']:.1f}"
        diff = ", ".join(f"{v:+.2f}" for v in r["logprob_mean_diff"])
        tp = ", ".join(f"{v:.2g}" for v in r["t_pvalue"])
        ks = ", ".join(f"{v:.2g}" for v in r["ks_pvalue"])
        lines.append(
            f"| {LABEL[s]} | {d} | {KINDS[k]} | {100 * r['mean']:.1f} "
            f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] | {seeds} | {paper} | "
            f"{diff} | {tp} | {ks} |"
        )
    return "\n".join(lines)


def _bars(ax: plt.Axes, t: dict[str, Any], n_runs: int) -> None:
    groups = [(s, d) for s in SUBSETS for d in ("same", "reverse")]
    x = np.arange(len(groups))
    series = [
        ("train", "ours, training templates", "tab:green"),
        ("heldout", "ours, held-out templates (paper's test)", "tab:blue"),
        ("paper", "GPT-3-175B (paper), held-out templates", "0.45"),
    ]
    w = 0.27
    handles = []
    for j, (k, label, color) in enumerate(series):
        xs = x + (j - 1) * w
        for xi, (s, d) in zip(xs, groups, strict=True):
            if k == "paper":
                v = PAPER_TABLE1.get((s, d))
                if v is None:
                    ax.text(xi, 2, "n/a", ha="center", fontsize=7, color="0.4", rotation=90)
                    continue
                ax.bar(xi, max(v, 0.6), w * 0.95, color=color, hatch="//", edgecolor="white")
                ax.text(xi, v + 2, f"{v:.1f}" if v else "≈0", ha="center", fontsize=7)
                continue
            r = t.get(f"{s}.{d}.{k}")
            if r is None:
                continue
            m, lo, hi = (100 * r["mean"], 100 * r["ci95"][0], 100 * r["ci95"][1])
            ax.bar(
                xi,
                max(m, 0.6),
                w * 0.95,
                color=color,
                alpha=0.85,
                yerr=[[m - lo], [hi - m]] if n_runs > 1 else None,
                capsize=3,
            )
            ax.scatter(
                [xi] * len(r["exact_match"]),
                [100 * v for v in r["exact_match"]],
                s=9,
                color="k",
                zorder=3,
            )
            ax.text(xi, max(hi, m) + 2, f"{m:.1f}", ha="center", fontsize=7)
        handles.append(
            Patch(
                facecolor=color,
                label=label,
                hatch="//" if k == "paper" else None,
                edgecolor="white",
            )
        )
    ax.set_xticks(
        x,
        [f"{LABEL[s]}\n{'same direction' if d == 'same' else 'REVERSED'}" for s, d in groups],
        fontsize=8,
    )
    ax.set_ylim(0, 128)
    ax.set_ylabel("exact match (%)")
    ax.axvline(3.5, color="0.8", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper center", ncol=3, frameon=False)
    ax.set_title(
        f"Table 1: greedy exact match, paper's rule (mean, 95% CI over {n_runs} seed(s); "
        "dots = seeds). Both: 'same' = name first",
        fontsize=10,
    )


def _hist(
    ax: plt.Axes, arrays: list[dict[str, np.ndarray]], t: dict[str, Any], s: str, d: str, k: str
) -> None:
    correct, rand = [], []
    for a in arrays:
        m = (a["subset"] == s) & (a["direction"] == d) & (a["templates"] == k)
        correct.append(a["correct_logprob"][m])
        rand.append(a["random_logprob"][m])
    c, r = np.concatenate(correct), np.concatenate(rand)
    bins = np.linspace(min(c.min(), r.min()), max(c.max(), r.max()), 30).tolist()
    ax.hist(
        r,
        bins=bins,
        alpha=0.55,
        color="tab:gray",
        label="randomized" if (k == "heldout" and d == "reverse") else "random other person",
    )
    ax.hist(c, bins=bins, alpha=0.55, color="tab:orange", label="correct")
    cell = t[f"{s}.{d}.{k}"]
    ps = "\n".join(
        f"seed {i}: t p={tp:.2g}, KS p={kp:.2g}"
        for i, (tp, kp) in enumerate(zip(cell["t_pvalue"], cell["ks_pvalue"], strict=True))
    )
    ax.text(
        0.02,
        0.97,
        f"Δ={np.mean(c - r):+.2f} nats\n{ps}",
        transform=ax.transAxes,
        va="top",
        fontsize=6.5,
        family="monospace",
    )
    ax.set_title(
        f"{LABEL[s]}, {'REVERSED' if d == 'reverse' else 'same direction'}\n"
        f"{KINDS[k]} (n={len(c)} prompts)",
        fontsize=8.5,
    )
    ax.set_xlabel("log p(completion | prompt), summed (nats)", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_paper_exp1(run_dirs: list[str | Path], out: str | Path | None = None) -> Figure:
    """The Table 1 bars beside the paper's, reversed log-prob histograms and the same-direction
    control histograms; writes out.png and out.pdf and returns their paths."""
    t = table1(run_dirs)
    arrays = [dict(np.load(Path(r) / "eval_logprobs.npz")) for r in run_dirs]
    fig = plt.figure(figsize=(15, 11))
    grid = fig.add_gridspec(3, 4, height_ratios=[1.25, 1, 1], hspace=0.6, wspace=0.25)
    _bars(fig.add_subplot(grid[0, :]), t, len(arrays))
    for row, d in ((1, "reverse"), (2, "same")):
        for col, (s, k) in enumerate(
            [("n2d", "heldout"), ("d2n", "heldout"), ("n2d", "train"), ("d2n", "train")]
        ):
            ax = fig.add_subplot(grid[row, col])
            _hist(ax, arrays, t, s, d, k)
            if col == 0:
                ax.set_ylabel(
                    "REVERSED prompts\ncount"
                    if d == "reverse"
                    else "same direction (control)\ncount",
                    fontsize=8,
                )
            if row == 1 and col == 0:
                ax.legend(fontsize=7, loc="center left")
            if row == 2 and col == 0:
                ax.legend(fontsize=7, loc="center left")
    fig.text(0.01, 0.055, NOTES, fontsize=7.5, va="top", color="0.25")
    fig.suptitle(
        "Reversal curse, Experiment 1 (Berglund et al. 2023) on the published data: "
        "small GPT trained from scratch vs GPT-3-175B fine-tuned",
        fontsize=12,
    )
    return finish(fig, out)
