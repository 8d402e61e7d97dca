"""The gradient-update test in one figure: what one step on "A is B" changes, and where.

Reads `analysis/update.json` and `analysis/update.npz` from one or more run directories (runs of
one config: different worlds and seeds) and draws six panels. Facts are nested in runs, never
pooled as if independent: every mean is the mean over runs of each run's mean over its facts,
every interval the 95% hierarchical bootstrap (runs, then facts within runs;
`interp.stats.hierarchical_bootstrap`), and every p-value a per-run paired t-test over that
run's facts, the runs' p-values combined by Fisher's method (`interp.stats.combine_pvalues`).
(a) Delta log p of the whole answer, forward (B | "A is the") and reverse (A | "the B is
    called"), per fact (marker: run), next to its two controls (other people's answers in the
    same prompts; the same answer in other people's prompts), with Fisher-combined p-values;
(b) the same for the answer's first token only (free of the within-name bigram);
(c, d) per layer, Delta h projected on the other entity's unembedding direction at A's last
    token (-> B's first token) and at B's last token (-> A's first token), against random-token
    directions, with the entity alone (c) and inside the prompts (d);
(e) the relative size of the change, |Delta h| / |h|, per layer at A's and B's last tokens;
(f) per parameter group: its share of |Delta theta|^2 and its first-order attribution.
`plot_alignment` draws the ten-second figure (forward vs reverse alignment per objective, with
controls and the Both-subset positive control); `plot_update_sites` where the update is written
(MLP weight update by position role x layer). Never recomputes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interp.errors import UserError
from interp.plots import Figure, Runs, finish, plt, results_of
from interp.stats import combine_pvalues, hierarchical_bootstrap_axis, paired_test

DIRECTION_LABEL = {"same": "forward\nlog p(B | A ...)", "reverse": "reverse\nlog p(A | B ...)"}
KINDS = (
    ("correct", "correct answer", "tab:blue"),
    ("control", "control: other answers,\nsame prompts", "tab:gray"),
    ("cue_control", "control: same answer,\nother prompts", "tab:orange"),
)
ENTITY_STYLE = {
    0: dict(color="tab:blue", label="at A's last token, on B's 1st-token direction"),
    1: dict(color="tab:red", label="at B's last token, on A's 1st-token direction"),
}


def load_update(runs: Runs) -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    """update.json and update.npz of every run, with a one-line fix when one is missing."""
    results, arrays = [], []
    for r in results_of(runs, "update"):
        results.append(r.data)
        arrays.append(r.arrays)
    groups = {tuple(a["groups"]) for a in arrays}
    if len(groups) != 1:
        raise UserError(
            "the runs have different parameter groups (different n_layers?): "
            "plot runs of one config together"
        )
    return results, arrays


def _p_text(p: float) -> str:
    return "p<1e-4" if p < 1e-4 else f"p={p:.2g}"


RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

# What every interval and p-value of these figures is (the titles quote it).
NESTED = "facts nested in runs: means of run means, 95% hierarchical bootstrap (runs, then facts)"
FISHER = "p: paired t-test over facts per run, Fisher-combined over runs"


def _interval(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of run means and its hierarchical bootstrap interval, elementwise over [facts, ...]."""
    return hierarchical_bootstrap_axis(groups)


def fisher_paired_p(values: list[np.ndarray], control: list[np.ndarray]) -> float:
    """Each run's paired t-test of `values` against `control` (same facts), Fisher-combined."""
    return combine_pvalues([paired_test(v, c).p for v, c in zip(values, control, strict=True)])


def _delta_panel(
    ax: plt.Axes, arrays: list[dict[str, np.ndarray]], tokens: str, title: str
) -> None:
    """Per-fact Delta log p (points, one marker per run), the mean of run means (bar) with its
    hierarchical 95% interval, for both directions; p-values per run, Fisher-combined."""
    directions = [str(d) for d in arrays[0]["directions"]]
    width = 0.26
    rng = np.random.default_rng(0)
    everything = np.concatenate(
        [a[f"score_{tokens}_{k}"].ravel() for a in arrays for k, _, _ in KINDS]
    )
    span = float(np.ptp(everything)) or 1.0
    top_all = float(everything.max())
    for di in range(len(directions)):
        vals = {k: [a[f"score_{tokens}_{k}"][:, di] for a in arrays] for k, _, _ in KINDS}
        for ki, (k, label, color) in enumerate(KINDS):
            x = di + (ki - 1) * width
            m, lo, hi = (float(v) for v in _interval(vals[k]))
            ax.bar(x, m, width * 0.9, color=color, alpha=0.35, label=label if di == 0 else None)
            ax.errorbar(x, m, yerr=[[m - lo], [hi - m]], color=color, capsize=3, lw=1.5)
            for ri, run_vals in enumerate(vals[k]):
                ax.scatter(
                    x + rng.uniform(-width / 4, width / 4, len(run_vals)),
                    run_vals,
                    s=10,
                    color=color,
                    marker=RUN_MARKERS[ri % len(RUN_MARKERS)],
                    zorder=3,
                )
        top = max(float(np.max(v)) for runs in vals.values() for v in runs)
        for ki, k in ((1, "control"), (2, "cue_control")):
            p = fisher_paired_p(vals["correct"], vals[k])
            ax.text(
                di + (ki - 1) * width,
                top + span * (0.03 + 0.07 * (ki - 1)),
                f"vs {_p_text(float(p))}",
                ha="center",
                fontsize=7,
                color=KINDS[ki][2],
            )
    ax.set_ylim(top=top_all + span * 0.8)  # headroom: the legend above the p labels
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(directions)), [DIRECTION_LABEL[d] for d in directions])
    ax.set_ylabel("Delta log p after the update (nats)")
    ax.set_title(title, fontsize=10)
    ax.legend(
        fontsize=7,
        loc="upper right",
        title="p: paired t-test over facts per run,\nFisher-combined over runs "
        f"({len(arrays)} runs; marker: run)",
        title_fontsize=7,
    )


def _projection_panel(
    ax: plt.Axes,
    arrays: list[dict[str, np.ndarray]],
    context: int,
    title: str,
    metric: str = "proj",
) -> None:
    layers = [str(x) for x in arrays[0]["layers"]]
    x = np.arange(len(layers))
    for e, style in ENTITY_STYLE.items():
        real = [a[metric][:, context, e] for a in arrays]  # per run [facts, layer]
        ctrl = [a[f"{metric}_control"][:, context, e] for a in arrays]
        m, lo, hi = _interval(real)
        ax.plot(x, m, marker="o", lw=2, **style)  # type: ignore[arg-type]
        ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15)
        m, lo, hi = _interval(ctrl)
        ax.plot(
            x,
            m,
            ls="--",
            lw=1.2,
            color=style["color"],
            label="  control: other roles (at A) / other first names (at B)",
        )
        ax.fill_between(x, lo, hi, color=style["color"], alpha=0.07)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, layers)
    ax.set_xlabel("residual stream depth (embed = before block 0; Ll = after block l)")
    ax.set_ylabel("Delta h . u(other entity's 1st token)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _norm_panel(ax: plt.Axes, arrays: list[dict[str, np.ndarray]]) -> None:
    layers = [str(x) for x in arrays[0]["layers"]]
    x = np.arange(len(layers))
    names = {0: "A's last token", 1: "B's last token"}
    for c, (ctx, ls) in enumerate((("alone", "-"), ("in prompts", ":"))):
        for e in (0, 1):
            m, lo, hi = _interval([a["dh_rel"][:, c, e] for a in arrays])
            ax.plot(
                x, m, ls=ls, marker="o", color=ENTITY_STYLE[e]["color"], label=f"{names[e]}, {ctx}"
            )
            ax.fill_between(x, lo, hi, color=ENTITY_STYLE[e]["color"], alpha=0.1)
    ax.set_xticks(x, layers)
    ax.set_xlabel("residual stream depth")
    ax.set_ylabel("|Delta h| / |h|")
    ax.set_ylim(bottom=0)
    ax.set_title("(e) size of the change in the residual stream", fontsize=10)
    ax.legend(fontsize=7)


def _group_panel(ax: plt.Axes, arrays: list[dict[str, np.ndarray]]) -> None:
    """Per group: share of |Delta theta|^2 and the first-order attribution grad f . Delta theta
    as a fraction of the total (forward, reverse); the fractions sum exactly to 1."""
    groups = [str(g) for g in arrays[0]["groups"]]
    share = np.mean(
        [(a["group_norm"] ** 2).sum(0) / (a["group_norm"] ** 2).sum() for a in arrays], axis=0
    )
    fractions = {
        di: np.mean(
            [
                a["attribution"][:, di].mean(0) / a["attribution"][:, di].sum(-1).mean()
                for a in arrays
            ],
            axis=0,
        )
        for di in (0, 1)
    }
    y = np.arange(len(groups))
    h = 0.27
    ax.barh(y - h, share, h, color="tab:gray", label="share of |Delta theta|^2")
    ax.barh(y, fractions[0], h, color="tab:blue", label="forward: grad f . Delta theta / total")
    ax.barh(y + h, fractions[1], h, color="tab:red", label="reverse: grad f . Delta theta / total")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, groups)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of the total (first-order attribution sums exactly to 1)")
    ax.set_title("(f) which parameters carry the update (first order)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")


def plot_update(run_dirs: Runs, out: str | Path | None = None) -> Figure:
    """Draw the figure for `run_dirs` (seeds of one config); write out.png and out.pdf."""
    results, arrays = load_update(run_dirs)
    o = results[0]["options"]
    n_facts = sum(len(a["facts"]) for a in arrays)
    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    _delta_panel(axes[0, 0], arrays, "full", "(a) Delta log p of the whole answer")
    _delta_panel(
        axes[0, 1],
        arrays,
        "first",
        "(b) Delta log p of the answer's first token\n(role word forward, first name in reverse)",
    )
    _projection_panel(
        axes[0, 2], arrays, 0, "(c) where the change points: entity alone ('<bos> A' / '<bos> B')"
    )
    _projection_panel(
        axes[1, 0],
        arrays,
        1,
        "(d) the same inside the prompts\n(A in forward prompts, B in reverse ones)",
    )
    _norm_panel(axes[1, 1], arrays)
    _group_panel(axes[1, 2], arrays)
    lr = ", ".join(sorted({str(r["options"]["lr"]) for r in results}))
    fig.suptitle(
        f"Gradient-update test: {o['steps']} {o['optimizer']} step(s) (lr {lr}) on each "
        f"new fact 'A is B' from the trained weights; {n_facts} facts, "
        f"{len(arrays)} run(s)\n{NESTED}; {FISHER}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return finish(fig, out)


ALIGN_BARS = (
    ("forward", 0, "", "tab:blue"),
    ("forward control", 0, "_control", "lightsteelblue"),
    ("reverse", 1, "", "tab:red"),
    ("reverse control", 1, "_control", "mistyrose"),
)


def _cos_values(
    arrays: list[dict[str, np.ndarray]], prefix: str, di: int, ctl: str
) -> list[np.ndarray]:
    """Per-fact cosines of the step with an answer gradient, one array per run."""
    if prefix == "align_first":
        key = f"align_first_cos{ctl}"
    else:  # the Both positive controls: "both_first" / "both_all_first"
        key = f"{prefix}_cos{ctl}"
    return [a[key][:, di] for a in arrays if key in a]


def plot_alignment(runs: dict[str, Runs], out: str | Path | None = None) -> Figure:
    """Forward vs reverse alignment (cosine of the step with grad log p of the answer's first
    token) per objective, each with its control (other people's prompts), and the positive
    control on the Both subset of the first objective's runs. `runs`: objective -> run dirs."""
    if not runs:
        raise UserError("plot_alignment needs at least one objective's runs")
    both = {name: load_update(dirs) for name, dirs in runs.items()}
    loaded = {name: arrays for name, (_, arrays) in both.items()}
    conditions = sorted(
        {str(r["options"].get("condition", "?")) for results, _ in both.values() for r in results}
    )
    first = next(iter(loaded.values()))
    columns: list[tuple[str, list[dict[str, np.ndarray]], str]] = [
        (name, arrays, "align_first") for name, arrays in loaded.items()
    ]
    if all("both_first_cos" in a for a in first):
        columns.append((f"Both subset\n({next(iter(loaded))}), + control", first, "both_first"))
    if all("both_all_first_cos" in a for a in first):
        columns.append(("Both, step on\nboth orders", first, "both_all_first"))
    fig, ax = plt.subplots(figsize=(2.2 * len(columns) + 3, 4.8))
    width = 0.2
    for ci, (_, arrays, prefix) in enumerate(columns):
        for bi, (label, di, ctl, color) in enumerate(ALIGN_BARS):
            m, lo, hi = (float(v) for v in _interval(_cos_values(arrays, prefix, di, ctl)))
            x = ci + (bi - 1.5) * width
            ax.bar(x, m, width * 0.9, color=color, label=label if ci == 0 else None)
            ax.errorbar(x, m, yerr=[[m - lo], [hi - m]], color="black", capsize=2, lw=1)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(columns)), [c[0] for c in columns], fontsize=8)
    ax.set_ylabel("cos(step, grad log p(first answer token))")
    ax.set_title(
        "Does a step on 'A is B' point toward B|A (forward) and A|B (reverse)?\n"
        f"one step per new fact (condition: {', '.join(conditions)}); controls: other people's "
        f"prompts\n{NESTED}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return finish(fig, out)


def plot_update_sites(run_dirs: Runs, out: str | Path | None = None) -> Figure:
    """Where the update is written: per layer x position role, the share of the MLP weight
    update and its first-order effect per unit step on the answer's first token, forward
    (B's role word | A ...) and reverse (A's first name | B ...): first tokens, so the
    within-name bigram the document teaches does not pass for reversal."""
    _, arrays = load_update(run_dirs)
    roles = [str(r) for r in arrays[0]["roles"]]
    panels = (
        ("share of the MLP weight update", np.concatenate([a["role_norm_share"] for a in arrays])),
        ("effect on log p(B's 1st token | A ...)\nper unit step",
         np.concatenate([a["role_effect_first"][:, 0] for a in arrays])),
        ("effect on log p(A's 1st token | B ...)\nper unit step",
         np.concatenate([a["role_effect_first"][:, 1] for a in arrays])),
    )  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 3 + 0.5 * panels[0][1].shape[1]))
    for ax, (title, vals) in zip(axes, panels, strict=True):
        m = vals.mean(0)  # [layer, role]
        lim = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        for (li, ri), v in np.ndenumerate(m):
            ax.text(ri, li, f"{v:.2g}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(roles)), ["A's tokens", "B's tokens", "before B", "template"])
        ax.set_yticks(range(m.shape[0]), [f"L{l} MLP" for l in range(m.shape[0])])
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(
        "Where one step on 'A is B' writes: MLP weight gradients split exactly by the position "
        "of each term (mean over facts)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return finish(fig, out)
