"""Figures. One module per figure family; every function reads saved results (metrics.json,
analysis/*.json, *.npz) from run directories and writes PNG and PDF. Nothing is recomputed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interp.runs import atomic_path  # noqa: E402


def save(fig: plt.Figure, out: str | Path) -> list[Path]:
    """Save `fig` as out.png and out.pdf (any suffix on `out` is replaced); close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for p in paths:
        with atomic_path(p) as tmp:  # a kill mid-write leaves the old figure, not half of one
            fig.savefig(tmp, format=p.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths
