"""The behavioural figures, in the shapes of Berglund et al. (2023): exact match per subset x
direction (their Table 1) and reversed log-probabilities, correct vs random (their Figure 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interp.plots import Figure, Runs, finish, plt, results_of
from interp.runs import read_run_config
from interp.stats import UNIT, bounded_mean_ci, fmt_pvalues

SUBSET_LABEL = {"n2d": "NameToDescription", "d2n": "DescriptionToName", "both": "Both"}
# Kitouni et al.'s retrieval world (interp.data.retrieval): n2d holds the pairs whose queries are
# held out, both the pairs whose queries are trained; "same" asks the value, "reverse" the key.
RETRIEVAL_LABEL = {"n2d": "held-out pairs' queries", "both": "trained pairs' queries"}


def plot_exact_match(run_dirs: Runs, out: str | Path | None = None, title: str = "") -> Figure:
    """Bars: exact match per subset x direction, training vs held-out templates, mean and 95% CI
    over runs inside [0, 100]% (`interp.stats.runs_interval`), each run a dot."""
    results = results_of(run_dirs, "behaviour", arrays=False)
    ms = [r.data for r in results]
    subsets = list(ms[0]["exact_match"])
    names, word = SUBSET_LABEL, {"same": "same direction as training", "reverse": "reversed"}
    if read_run_config(Path(str(results[0].path))).world.source == "retrieval":
        names, word = RETRIEVAL_LABEL, {"same": "forward (the value asked)",
                                        "reverse": "backward (the key asked)"}  # fmt: skip
    cells = [c for m in ms for by_dir in m["exact_match"].values() for c in by_dir.values()]
    # a world without held-out templates (retrieval) gets one panel
    kinds = [k for k in ("train", "heldout") if any(k in c for c in cells)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.8), sharey=True,
                             squeeze=False)  # fmt: skip
    axes = axes[0]
    for ax, kind in zip(axes, kinds, strict=True):
        x = np.arange(len(subsets))
        for j, (d, color) in enumerate((("same", "tab:blue"), ("reverse", "tab:red"))):
            vals = [[m["exact_match"][s][d].get(kind, np.nan) for m in ms] for s in subsets]
            stats = [bounded_mean_ci(v, UNIT) for v in vals]  # rates: inside [0, 1]
            means = [100 * s[0] for s in stats]
            err = np.array(
                [[100 * (s[0] - s[1]) for s in stats], [100 * (s[2] - s[0]) for s in stats]]
            )
            xs = x + (j - 0.5) * 0.38
            ax.bar(
                xs,
                means,
                0.36,
                yerr=err,
                capsize=3,
                color=color,
                alpha=0.8,
                label=word[d],
            )
            for xi, v in zip(xs, vals, strict=True):
                ax.scatter([xi] * len(v), [100 * a for a in v], s=10, color="k", zorder=3)
            for xi, mval in zip(xs, means, strict=True):
                ax.text(xi, mval + 2, f"{mval:.0f}", ha="center", fontsize=8)
        ax.set_xticks(x, [names.get(s, s) for s in subsets], fontsize=9)
        ax.set_ylim(0, 110)
        ax.set_title(f"{'training' if kind == 'train' else 'held-out'} templates"
                     if len(kinds) > 1 else "")  # fmt: skip
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("exact match (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, bbox_to_anchor=(0.5, -0.04))
    n = len(ms)
    fig.suptitle(
        title
        or f"Exact match by subset and direction (mean, 95% interval inside [0, 100]% over {n} "
        "run(s); dots = runs)"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return finish(fig, out)


def plot_logprob_hist(
    run_dirs: Runs,
    out: str | Path | None = None,
    templates: str = "train",
    title: str = "",
) -> Figure:
    """Histograms of log p(correct completion) vs log p(random same-subset completion) on
    reversed prompts, per subset, pooled over runs (the histogram only), and, where the world's
    people have roles, the role-matched control's as an outline; each run's t-test and KS
    p-values in each panel (the role-matched t-test's too), listed and Fisher-combined, never
    averaged."""
    results = results_of(run_dirs, "behaviour")
    arrays = [r.arrays for r in results]
    ms = [r.data for r in results]
    matched = all("role_matched_logprob" in a for a in arrays)
    subsets = list(ms[0]["exact_match"])
    width = max(6, 4 * len(subsets))  # one panel (the bridge's pairs) still holds the title
    fig, axes = plt.subplots(1, len(subsets), figsize=(width, 3.6 + 0.3 * matched))
    for ax, s in zip(np.atleast_1d(axes), subsets, strict=True):
        c, r, x = [], [], []
        for a in arrays:
            mask = (
                (a["subset"] == s) & (a["direction"] == "reverse") & (a["templates"] == templates)
            )
            c.append(a["correct_logprob"][mask])
            r.append(a["random_logprob"][mask])
            if matched:
                x.append(a["role_matched_logprob"][mask])
        cc, rr = np.concatenate(c), np.concatenate(r)
        xx = np.concatenate(x) if matched else np.array([])
        xx = xx[np.isfinite(xx)]
        every = np.concatenate([cc, rr, xx])
        bins = np.linspace(every.min(), every.max(), 30)
        ax.hist(rr, bins, alpha=0.55, color="tab:gray", label="random name/description")
        ax.hist(cc, bins, alpha=0.55, color="tab:green", label="correct")
        lines = [m["logprob_test"][s]["reverse"][templates] for m in ms]
        head = (
            f"{SUBSET_LABEL.get(s, s)} reversed; p per run (Fisher-combined)\n"
            f"t-test: {fmt_pvalues([p['t_pvalue'] for p in lines])}\n"
            f"KS: {fmt_pvalues([p['ks_pvalue'] for p in lines])}"
        )
        if matched:
            ax.hist(xx, bins, histtype="step", color="tab:purple", lw=1.5, label="same role")
            ps = [m["logprob_test_role_matched"][s]["reverse"][templates] for m in ms]
            head += f"\nvs same role, t-test: {fmt_pvalues([p['t_pvalue'] for p in ps])}"
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("log p(completion | reversed prompt)")
    np.atleast_1d(axes)[0].set_ylabel("prompts")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        title
        or f"Reversed prompts ({templates} templates): is the correct completion "
        f"more likely than a random one{' (or one of the same role)' if matched else ''}?",
        fontsize=10,
    )
    fig.tight_layout()
    return finish(fig, out)
