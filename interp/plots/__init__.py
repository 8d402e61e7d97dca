"""Figures. One module per figure family; every function reads saved results (metrics.json,
analysis/*.json and .npz, through `interp.runs.read_result`) from run directories and returns a
matplotlib `Figure` (which Jupyter shows inline); given a path `out`, it also writes out.png and
out.pdf. Nothing is recomputed.

    fig = plot_lens([run_dir])                  # in a notebook: shown inline
    plot_lens([run_dir], "figures/lens")        # writes figures/lens.png and .pdf
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # scripts, tests, workers: no display; Jupyter keeps inline
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from interp.runs import atomic_path  # noqa: E402


def figure_paths(out: str | Path) -> list[Path]:
    """The files a figure saved at `out` is written to: out.png and out.pdf (any suffix on `out`
    is replaced)."""
    out = Path(out)
    return [out.with_suffix(".png"), out.with_suffix(".pdf")]


def finish(fig: Figure, out: str | Path | None = None) -> Figure:
    """Save `fig` as out.png and out.pdf when `out` is given; return it, released from pyplot (so
    a notebook shows it once, as the cell's value, and a long study holds no open figures)."""
    if out is not None:
        paths = figure_paths(out)
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for p in paths:
            with atomic_path(p) as tmp:  # a kill mid-write leaves the old figure, not half of one
                fig.savefig(tmp, format=p.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)
    return fig
