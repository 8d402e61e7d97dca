"""The walkthrough notebook runs top to bottom on the tiny preset (reusing the session's run)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_notebook_runs(tiny_run_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    monkeypatch.setenv("INTERP_NOTEBOOK_RUN", str(run))
    monkeypatch.setenv("INTERP_NOTEBOOK_PRESET", "tiny")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's default (inline) backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "strip outputs before committing"
    )
    nb.cells.append(nbformat.v4.new_code_cell("import matplotlib; print(matplotlib.get_backend())"))
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        env=dict(os.environ),
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    # done when (issue 27): no warning in any cell's output (stderr carries warnings; progress
    # bars are turned off in the notebook's cells)
    warned = [
        (i, o["text"][-300:])
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.get("name") == "stderr" and "Warning" in o["text"]
    ]
    assert not warned, warned
    for name in ("lens", "patching", "probing", "update", "dynamics", "selective"):
        assert (run / "analysis" / f"{name}.json").is_file(), f"notebook did not run {name}"
    # Section 8, one prompt by hand: the trained fact is top-1 under the lens at the output, and
    # the patching figure comes back as the cell's value (shown inline), not through a file.
    lens_cell, patch_cell, backend_cell = nb.cells[-3:]
    printed = "".join(o.get("text", "") for o in lens_cell.outputs if o.output_type == "stream")
    last_line = printed.strip().splitlines()[-1]
    assert "ranked 1," in last_line, printed
    # with the kernel's default backend (test_plot_function_figure_displays_inline_without_magic
    # asks the same under MPLBACKEND=Agg): shown once, as the value, not again by the inline
    # backend's end-of-cell flush
    seen = "".join(o.get("text", "") for o in backend_cell.outputs).strip()
    assert seen == "module://matplotlib_inline.backend_inline", seen
    kinds = [(o.output_type, sorted(o.get("data", {}))) for o in patch_cell.outputs]
    values = [o for o in patch_cell.outputs if o.output_type == "execute_result"]
    assert len(values) == 1 and "image/png" in values[0]["data"], kinds
    assert not [o for o in patch_cell.outputs if o.output_type == "display_data"], kinds


FIGURE_CELL = """\
from interp.plots.behaviour import plot_exact_match

fig = plot_exact_match([RUN_DIR])  # no %matplotlib magic: the returned Figure shows inline
fig"""


def _figure_outputs(run_dir: Path, tmp_path: Path) -> list[dict]:
    """Execute a notebook whose cell returns a plot function's Figure: that cell's outputs, then
    the kernel's MPLBACKEND. The kernel inherits this process's environment (nbclient's
    NotebookClient takes no `env`: the walkthrough test's is ignored)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"RUN_DIR = {str(run_dir)!r}"),
        nbformat.v4.new_code_cell(FIGURE_CELL),
        nbformat.v4.new_code_cell("import os; print(os.environ.get('MPLBACKEND'))"),
    ]
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    return [*nb.cells[1].outputs, {"output_type": "backend", "text": printed}]


def test_plot_function_figure_displays_inline_without_magic(tiny_run_dir, tmp_path, monkeypatch):
    """A plot function's Figure, returned as a cell's value, is rendered as a PNG by the kernel
    when MPLBACKEND says Agg (as a CI or a shell profile may export): then no inline backend
    registers the Figure formatter, and `interp.plots` does. (With the kernel's default backend
    the walkthrough test asks the same of its last figure.)"""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    *outputs, seen = _figure_outputs(tiny_run_dir, tmp_path)
    want = "Agg"
    assert seen["text"] == want, f"the kernel ran with MPLBACKEND={seen['text']!r}, not {want!r}"
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, errors
    values = [o for o in outputs if o["output_type"] == "execute_result"]
    kinds = [(o["output_type"], sorted(o.get("data", {}))) for o in outputs]
    assert len(values) == 1 and "image/png" in values[0]["data"], kinds
    png = base64.b64decode(values[0]["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, len(png)
    # shown once, as the value: not a second time by the inline backend's end-of-cell flush
    assert not [o for o in outputs if o["output_type"] == "display_data"], kinds


QUIET = """
import sys, types, warnings
class ZMQInteractiveShell:  # what tqdm.auto takes for a Jupyter kernel
    pass
ipython = types.ModuleType("IPython")
ipython.get_ipython = lambda: ZMQInteractiveShell()
sys.modules["IPython"] = ipython
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import interp  # what every kit module imports first (its dependencies import tqdm.auto)
    from tqdm.auto import tqdm
    for _ in tqdm(range(2), disable=True):
        pass
print([str(w.message) for w in caught])
"""


@pytest.mark.skipif(find_spec("ipywidgets") is not None, reason="ipywidgets draws the widget")
def test_a_notebook_without_ipywidgets_imports_the_kit_quietly():
    """tqdm.auto warns 'IProgress not found' in a Jupyter kernel without ipywidgets; the kit's
    bars (and its dependencies') are text bars there, without the warning."""
    r = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-800:])
