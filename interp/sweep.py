"""Sweeps: a grid over seeds, model sizes, weight decay and objectives, each cell a run of the same
code path as the study (`interp.study.execute_run`), on local processes or on Slurm via submitit.

Weight decay and the seed matter for reversal ability in from-scratch models (Kim et al. 2025),
so the default grid crosses them with the objectives. Results are aggregated over seeds into one
table (CSV and JSON, mean and 95% interval per cell) and a figure of reverse accuracy and probe
selectivity against weight decay, per objective.
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from interp.analysis import INSTRUMENTS, read_result
from interp.analysis.behaviour import read as read_behaviour
from interp.config import apply_overrides, from_dict, load_config
from interp.errors import UserError
from interp.files import atomic_path, make_dir, write_json
from interp.plan import run_name
from interp.plots.sweep import plot_sweep
from interp.stats import mean_ci
from interp.study import execute_all, execute_run

# Grid axis -> config key. A grid file is JSON: {"preset": "tiny", "seeds": [0, 1], ...}.
AXES = {
    "seeds": "train.seed",
    "objectives": "train.objective",
    "weight_decay": "train.weight_decay",
    "d_model": "model.d_model",
    "n_layers": "model.n_layers",
}
DEFAULT_GRID: dict[str, Any] = {
    "preset": "default",
    "seeds": [0, 1, 2],
    "objectives": ["causal", "reverse_entity"],
    "weight_decay": [0.0, 0.1, 0.5],
}


def load_grid(path: str | None, **flags: Any) -> dict[str, Any]:
    """The default grid, updated by a JSON grid file and then by command-line flags. Checks the
    shape of every entry (an object; each axis, `instruments` and `set` a non-empty list of
    plain values; `preset` a string) with one line naming the file and the key; the values
    themselves are checked as config values by `grid_configs`."""
    grid = dict(DEFAULT_GRID)
    where = "the sweep flags"
    if path:
        p = Path(path)
        where = f"grid file {p}"
        if not p.is_file():
            raise UserError(f"grid file {p} not found: check the path")
        try:
            loaded = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"grid file {p} is not valid JSON ({e}): fix it") from None
        if not isinstance(loaded, dict):
            raise UserError(
                f"grid file {p} must be a JSON object like "
                '{"preset": "tiny", "seeds": [0, 1]}, got a ' + type(loaded).__name__
            )
        grid.update(loaded)
    grid.update({k: v for k, v in flags.items() if v is not None})
    unknown = set(grid) - set(AXES) - {"preset", "instruments", "set"}
    if unknown:
        raise UserError(
            f"unknown grid keys {sorted(unknown)}: use {sorted(AXES)}, preset, instruments, set"
        )
    if not isinstance(grid.get("preset", "default"), str):
        raise UserError(f'{where}: "preset" must be a preset name like "tiny"')
    for key in [*AXES, "instruments", "set"]:
        if key not in grid:
            continue
        values = grid[key]
        plain = isinstance(values, list) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in values
        )
        if not plain or not values:
            raise UserError(
                f'{where}: "{key}" must be a non-empty list of values, like "{key}": '
                f"{json.dumps(DEFAULT_GRID.get(key, ['...']))}; got {json.dumps(values)}"
            )
        twice = sorted({json.dumps(v) for v in values if values.count(v) > 1})
        if twice:  # one run counted as two seeds would shrink every interval
            raise UserError(
                f'{where}: "{key}" lists {", ".join(twice)} more than once: list each value once'
            )
    return grid


def grid_configs(grid: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(cell parameters, config dict) for every point of the grid. Validates every config first."""
    base = load_config(grid.get("preset", "default"), overrides=list(grid.get("set", [])))
    axes = [a for a in AXES if a in grid]
    out = []
    for values in itertools.product(*[grid[a] for a in axes]):
        cell = dict(zip(axes, values, strict=True))
        cfg = apply_overrides(base, [f"{AXES[a]}={v}" for a, v in cell.items()])
        out.append((cell, cfg.to_dict()))
    return out


def run_sweep(
    grid: dict[str, Any],
    out: str | Path,
    *,
    executor: str = "local",
    jobs: int = 1,
    slurm: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Run every cell (cached like the study); aggregate into OUT/sweep.csv, .json and a figure."""
    out = Path(out)
    cells = grid_configs(grid)
    known = [n for n in INSTRUMENTS if n != "behaviour"]
    for i in grid.get("instruments", ["probing"]):
        if i not in known:
            raise UserError(f"unknown instrument {i!r}: use one of {known}")
    instruments: dict[str, dict[str, Any]] = {i: {} for i in grid.get("instruments", ["probing"])}
    if executor not in ("local", "slurm", "submitit-local"):
        raise UserError(f"unknown executor {executor!r}: use local, slurm or submitit-local")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "--executor slurm needs Slurm and this machine has no sbatch: run the sweep on the "
            "cluster's login node, or use --executor local (submitit-local tries the jobs here)"
        )
    make_dir(out / "runs")
    spec = [(cfg, str(out / "runs" / run_name(from_dict(cfg))), instruments) for _, cfg in cells]
    if executor == "local":
        execute_all(spec, jobs=jobs, progress=progress, desc="sweep")
    else:  # slurm or submitit-local (checked above, before anything was written)
        import submitit

        folder = out / "submitit"
        if executor == "slurm":
            ex: Any = submitit.AutoExecutor(folder=folder, cluster="slurm")
            s = slurm or {}
            ex.update_parameters(
                slurm_partition=s.get("partition"),
                timeout_min=s.get("time", 60),
                gpus_per_node=s.get("gpus", 0),
                cpus_per_task=s.get("cpus", 2),
                slurm_array_parallelism=s.get("array_parallelism", 16),
            )
        else:
            ex = submitit.LocalExecutor(folder=folder)
            ex.update_parameters(timeout_min=60)
        device = "cuda" if executor == "slurm" and (slurm or {}).get("gpus") else "cpu"
        jobs_ = ex.map_array(
            execute_run,
            [c for c, _, _ in spec],
            [r for _, r, _ in spec],
            [instruments] * len(spec),
            [device] * len(spec),
        )
        for j in jobs_:
            j.result()
    return aggregate(cells, [Path(r) for _, r, _ in spec], out)


def _cell_metrics(run_dir: Path) -> dict[str, float]:
    m = read_behaviour(run_dir, arrays=False).data
    row = {
        f"em_{s}_{d}_train": m["exact_match"][s][d]["train"]
        for s in m["exact_match"]
        for d in m["exact_match"][s]
    }
    if (run_dir / "analysis" / "probing.json").is_file():
        summ = read_result(run_dir, "probing", arrays=False).summary
        row.update(
            {
                k: v
                for k, v in summ.items()
                if k.startswith(("probe_a_to_b", "probe_b_to_a", "selectivity_a", "selectivity_b"))
                and "_mlp_" not in k
                and "prompt" not in k
            }
        )
    return row


def aggregate(
    cells: list[tuple[dict[str, Any], dict[str, Any]]], run_dirs: list[Path], out: Path
) -> Path:
    groups: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    for (cell, _), rd in zip(cells, run_dirs, strict=True):
        key = tuple((k, v) for k, v in cell.items() if k != "seeds")
        groups[key].append(_cell_metrics(rd))
    rows = []
    for key, ms in groups.items():
        row: dict[str, Any] = dict(key)
        row["n_seeds"] = len(ms)
        for metric in ms[0]:
            m, lo, hi, _ = mean_ci([x[metric] for x in ms if metric in x])
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = m, lo, hi
        rows.append(row)
    write_json(out / "sweep.json", rows)
    with atomic_path(out / "sweep.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_sweep(rows, out / "sweep")
    return out / "sweep.csv"
