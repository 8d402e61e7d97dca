"""`interp sweep`: a grid of runs (seeds x sizes x weight decay x objectives), local or on Slurm."""

from __future__ import annotations

import argparse

from interp.errors import UserError
from interp.sweep import load_grid, run_sweep


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--grid",
        help="JSON grid file: {preset, seeds, objectives, weight_decay, d_model, n_layers}",
    )
    p.add_argument("--preset", help="run preset for every cell (default: default)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds")
    p.add_argument("--objectives", nargs="+", help="objectives")
    p.add_argument("--weight-decay", nargs="+", type=float, help="weight decay values")
    p.add_argument("--d-model", nargs="+", type=int, help="model widths")
    p.add_argument("--n-layers", nargs="+", type=int, help="model depths")
    p.add_argument("--instruments", nargs="+", help="instruments per cell (default: probing)")
    p.add_argument("--out", default="sweep_out", help="sweep directory")
    p.add_argument(
        "--executor",
        default="local",
        choices=("local", "slurm", "submitit-local"),
        help="local processes, Slurm via submitit, or submitit's local executor",
    )
    p.add_argument("--jobs", type=int, default=1, help="local processes (executor local)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", type=int, default=60, help="Slurm time limit per run, minutes")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per Slurm job")
    p.add_argument("--array-parallelism", type=int, default=16, help="Slurm array tasks at once")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if not args.out.strip():
        raise UserError("--out is empty: name a sweep directory, e.g. --out sweep_out")

    grid = load_grid(
        args.grid,
        preset=args.preset,
        seeds=args.seeds,
        objectives=args.objectives,
        weight_decay=args.weight_decay,
        d_model=args.d_model,
        n_layers=args.n_layers,
        instruments=args.instruments,
    )
    slurm = {
        "partition": args.partition,
        "time": args.time,
        "gpus": args.gpus,
        "array_parallelism": args.array_parallelism,
    }
    table = run_sweep(
        grid,
        args.out,
        executor=args.executor,
        jobs=args.jobs,
        slurm=slurm,
        progress=not args.no_progress,
    )
    print(table.read_text())
    print(f"sweep table: {table} (and sweep.json, sweep.png)")
    return 0
