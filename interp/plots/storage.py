"""Where is a fact stored: storage probes and extraction against augmentation level.

Reads `analysis/storage.json` (`interp.analysis.storage`) from run directories of the biography
world and draws

- `plot_storage`: one panel per objective (causal, reverse_entity, mlm_u_hybrid, ...), x = the
  augmentation level (the runs' `augmentation` record), lines = Q-probe accuracy at the name
  (mean best layer over the four attributes), reverse Q-probe (work -> first-name class), and
  extraction on unseen people (forward questions, inverse question); chance, the control task's
  best layer and the permutation null's 95th percentile are marked for the Q-probe. Several runs
  (seeds) at one point are drawn as their mean with the individual runs as dots.
- `plot_pprobe`: P-probe accuracy by layer for each attribute (the position just before it), one
  panel per run.
Never recomputes a probe.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from interp.config import config_from_json
from interp.data.biography import level_name
from interp.files import read_json
from interp.plots import Runs, finish, results_of

LINES = (
    ("q_mean_best", "Q-probe: name -> attributes", "tab:blue", "o"),
    ("rq_first_class_best", "reverse Q-probe: work -> first-name class", "tab:red", "s"),
    ("extract_forward_qa_test", "extraction, unseen people: forward QA", "tab:green", "^"),
    ("extract_inverse_qa_test", "extraction, unseen people: inverse QA", "tab:purple", "v"),
)
MARKS = (
    ("chance_q_mean", "Q-probe chance (majority)", ":"),
    ("q_mean_control_best", "Q-probe control task (best layer)", "--"),
    ("q_mean_null95", "Q-probe permutation null, 95th pct.", "-."),
)


def _size(run_dir: Path | None) -> str:
    """'d_model 128, 800 steps, 200 people': the run's size, from its config."""
    if run_dir is None:
        return "size unknown"
    cfg = config_from_json(read_json(run_dir / "config.json"))
    people = 2 * cfg.world.n_people_per_subset
    return f"d_model {cfg.model.d_model}, {cfg.train.steps} steps, {people} people"


def _results(runs: Runs) -> list[dict[str, Any]]:
    return [r.data for r in results_of(runs, "storage", arrays=False)]


def plot_storage(run_dirs: Runs, out: str | Path | None = None) -> Figure:
    """Probe accuracy and extraction against augmentation level, one panel per objective."""
    results = _results(run_dirs)
    by_obj: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    levels: dict[str, tuple[int, int, int]] = {}
    for r in results:
        aug = r["augmentation"]
        name = level_name(aug)
        levels[name] = (aug["multiplicity"], aug["permute"], aug["fullname"])
        by_obj[r["objective"]][name].append(r["summary"])
    order = sorted(levels, key=lambda n: levels[n])
    width = max(7.0, 4.2 * len(by_obj))
    fig, axes = plt.subplots(1, len(by_obj), figsize=(width, 3.8), squeeze=False)
    for ax, (objective, per_level) in zip(axes[0], by_obj.items(), strict=True):
        xs = [i for i, n in enumerate(order) if n in per_level]
        for key, label, color, marker in LINES:
            vals = [[s[key] for s in per_level[order[i]]] for i in xs]
            ax.plot(xs, [np.mean(v) for v in vals], color=color, marker=marker, label=label)
            for x, v in zip(xs, vals, strict=True):
                ax.scatter([x] * len(v), v, color=color, s=10, alpha=0.5)
        for key, label, ls in MARKS:
            vals = [np.mean([s[key] for s in per_level[order[i]]]) for i in xs]
            ax.plot(xs, vals, color="gray", ls=ls, lw=1.2, label=label)
        vals = [np.mean([s["chance_rq_first_class"] for s in per_level[order[i]]]) for i in xs]
        ax.plot(xs, vals, color="tab:red", ls=":", lw=1.0, label="reverse Q chance (majority)")
        n = max(len(v) for v in per_level.values())
        ax.set_title(f"{objective} ({n} run{'s' if n > 1 else ''} per level)")
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.3, len(order) - 0.7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("augmentation (multiplicity, permuted, full name)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (best layer) / exact match")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("Where is the fact stored? Probes at the entity and extraction on unseen people")
    fig.tight_layout()
    return finish(fig, out)


def plot_pprobe(run_dirs: Runs, out: str | Path | None = None) -> Figure:
    """P-probe accuracy by layer per attribute (read just before its value): one panel per
    (objective, augmentation, size), the mean over its runs (each run a faint line), laid out in
    rows of at most four panels."""
    loaded = results_of(run_dirs, "storage", arrays=False)
    sizes = [_size(r.path) for r in loaded]
    show_size = len(set(sizes)) > 1  # runs of several sizes (storage_scale): say which is which
    panels: dict[tuple[str, str, str], list[dict]] = {}
    for r, size in zip(loaded, sizes, strict=True):
        key = (r.data["objective"], level_name(r.data["augmentation"]), size)
        panels.setdefault(key, []).append(r.data)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, sharey=True
    )
    for ax, ((objective, level, size), runs) in zip(axes.flat, panels.items(), strict=False):
        for key in [k for k in runs[0]["probes"] if k.startswith("p_")]:
            curves = np.array([r["probes"][key]["accuracy"] for r in runs], dtype=float)
            line = ax.plot(curves.mean(0), marker="o", label=key[2:])
            color = line[0].get_color()
            if len(runs) > 1:
                for c in curves:
                    ax.plot(c, color=color, lw=0.6, alpha=0.35)
            ax.axhline(runs[0]["probes"][key]["chance"], color=color, ls=":", lw=0.8)
        title = f"{objective}, {level} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
        ax.set_title(f"{title}\n{size}" if show_size else title, fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("P-probe accuracy (dotted: chance)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return finish(fig, out)
