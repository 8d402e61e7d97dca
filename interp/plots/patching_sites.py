"""Which sites carry the forward fact: restored fraction per layer at the entity's last token and
at the final position, per activation; every token of the entity patched together beside the
same tokens patched from a third person (the same-site control); and ROME's severed path at
the entity's last token.

Reads `analysis/patching.json` (`sites`, `severed` of the forward entity-swap group); never
recomputes. One run: the band is the 95% interval over people; several runs: the line is the
mean over runs and the band the 95% interval over runs (each run's own interval is in its JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from interp.errors import UserError
from interp.plots import Runs, finish, results_of
from interp.stats import mean_ci_axis

SITE_STYLE = {"entity_last": ("-", "entity's last token"), "final": ("--", "final position")}
SEVER_COLOR = {"none": "black", "mlp": "tab:orange", "attn": "tab:blue"}
ACT_COLOR = {"resid_pre": "black", "attn_out": "tab:blue", "mlp_out": "tab:orange"}


def _band(ax: plt.Axes, curves: list[dict[str, Any]], color: str, ls: str, label: str) -> None:
    """Draw the mean (one run: its people's mean and interval; several: over runs)."""
    if len(curves) == 1:
        m, lo, hi = (np.array(curves[0][k], dtype=float) for k in ("mean", "low", "high"))
    else:
        m, lo, hi = mean_ci_axis(np.array([c["mean"] for c in curves], dtype=float))
    x = np.arange(len(m))
    ax.plot(x, m, ls=ls, color=color, marker="o", ms=3, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.15)
    ax.set_xticks(x)


def plot_patching_sites(
    run_dirs: Runs, out: str | Path | None = None, subset: str = "n2d"
) -> Figure:
    """Restored fraction per layer at the two sites per activation, and the severed path."""
    groups: list[dict[str, Any]] = []
    acts: tuple[str, ...] = ()
    for r in results_of(run_dirs, "patching", arrays=False):
        acts = tuple(r["acts"])  # the activations patched, as the result names them
        g = r["groups"].get(subset, {})
        g = g.get("forward", {}).get("swap")
        if g is not None and "sites" in g:
            groups.append(g)
    if not groups:
        raise UserError(
            f"no forward entity-swap sites for {subset!r} in the runs' analysis/patching.json: "
            "rerun `interp patching RUN_DIR` with the current kit"
        )
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    for site, (ls, name) in SITE_STYLE.items():
        for act in acts:
            curves = [g["sites"][site][act] for g in groups if site in g["sites"]]
            if curves:
                _band(ax, curves, ACT_COLOR[act], ls, f"{act}, {name}")
    ax.set_xlabel("layer (block input for resid_pre, block output otherwise)", fontsize=8)
    ax.set_ylabel("restored fraction (0 = corrupted, 1 = clean)", fontsize=8)
    ax.set_title(f"{subset} forward, entity swap: where the fact is carried", fontsize=9)
    ax.axhline(0, color="gray", lw=0.6)
    ax.legend(fontsize=6, frameon=False)
    ax = axes[1]
    for act in acts:
        for source, ls, who in (("sites", "-", "clean source"), ("control", ":", "third person")):
            curves = [_entity_all(g, source, act) for g in groups]
            found = [c for c in curves if c is not None]
            if found:
                _band(ax, found, ACT_COLOR[act], ls, f"{act}, {who}")
    ax.set_xlabel("layer (block input for resid_pre, block output otherwise)", fontsize=8)
    ax.set_title("every token of the entity together vs the same-site control", fontsize=9)
    ax.axhline(0, color="gray", lw=0.6)
    ax.legend(fontsize=6, frameon=False)
    ax = axes[2]
    severed = [g["severed"] for g in groups if "severed" in g]
    for sever, color in SEVER_COLOR.items():
        if severed:
            label = "nothing frozen" if sever == "none" else f"{sever} frozen (corrupted)"
            _band(ax, [s[sever] for s in severed], color, "-", label)
    ax.set_xlabel("layer of the patched resid_pre (entity's last token)", fontsize=8)
    ax.set_title("ROME's severed path: downstream MLPs or attention frozen", fontsize=9)
    ax.axhline(0, color="gray", lw=0.6)
    ax.legend(fontsize=6, frameon=False)
    n = len(groups)
    bands = "one run; bands: 95% interval over people" if n == 1 else f"{n} runs; bands: 95% "
    bands += "" if n == 1 else "interval over runs"
    fig.suptitle(f"Patching sites ({bands})", fontsize=10)
    fig.tight_layout()
    return finish(fig, out)


def _entity_all(g: dict[str, Any], source: str, act: str) -> dict[str, Any] | None:
    """The entity-span curve of one act, from the real patch (`sites`) or the control's."""
    sites = g.get("sites", {}) if source == "sites" else (g.get("control") or {}).get("sites")
    found = (sites or {}).get("entity_all")
    return None if found is None else found[act]
