"""Figures. One module per figure family; every function draws saved results and returns a
matplotlib `Figure` (which Jupyter shows inline); given a path `out`, it also writes out.png and
out.pdf. Nothing is recomputed. A plot takes `interp.results.Result` objects (what `run_analysis`
returns, `write=False` included) or, as a convenience, run directories, whose results it reads
(`results_of`):

    fig = plot_lens([result])                   # in a notebook: shown inline
    plot_lens([run_dir], "figures/lens")        # writes figures/lens.png and .pdf
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib


def _kernel_shell() -> Any:
    """The IPython shell of the Jupyter kernel this process runs in, or None (a script, the CLI,
    a test, a terminal IPython). A study worker forked from a notebook inherits it: harmless,
    since figures are drawn off-screen and saved either way."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def _show_figures_inline(shell: Any) -> None:
    """Make a `Figure` that is a cell's value display as a PNG, whatever the backend (the
    kernel's inline backend registers this itself, but not when MPLBACKEND names another one,
    e.g. Agg exported by a CI or a shell profile). A format the user chose is left alone."""
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    if not any(Figure in f.type_printers for f in formatters.values()):
        formatters["image/png"].for_type(Figure, partial(print_figure, fmt="png", base64=True))


_SHELL = _kernel_shell()
if _SHELL is None:  # scripts, the CLI, tests, workers: no display, never a GUI backend
    matplotlib.use("Agg")
else:  # Jupyter: keep the kernel's backend; a returned Figure shows inline
    _show_figures_inline(_SHELL)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from interp.files import atomic_path  # noqa: E402
from interp.results import Result, read_evaluation, read_result  # noqa: E402

Runs = Sequence[Result[Any] | str | Path]  # results, or run directories to read them from


def results_of(runs: Runs, instrument: str, arrays: bool = True) -> list[Result[Any]]:
    """Each item as a result of `instrument`: a Result as given, a run directory's read (with
    the generic Summary: a figure reads numbers by name, and importing the instruments, torch
    and TransformerLens to type them would cost a notebook seconds)."""
    out = []
    for r in runs:
        if isinstance(r, Result):
            if r.instrument != instrument:
                raise ValueError(f"a {r.instrument} result where {instrument} is drawn")
            out.append(r)
        else:
            read = read_evaluation if instrument == "behaviour" else None
            out.append(read(r, arrays) if read else read_result(r, instrument, arrays))
    return out


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
