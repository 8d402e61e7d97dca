"""`interp study`: a whole study (a preset of `interp.presets`): its runs, every instrument it
names on each, figures, a report and the findings."""

from __future__ import annotations

import argparse
import resource
import time

from interp.cli import add_set_argument
from interp.config import check_device
from interp.errors import UserError
from interp.presets import PRESETS, make_plan
from interp.study import run_study
from interp.train import MAX_THREADS


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--preset",
        default="default",
        choices=list(PRESETS),
        metavar="PRESET",
        help="the study: "
        + "; ".join(f"{name}: {preset.help}" for name, preset in PRESETS.items()),
    )
    p.add_argument("--out", default="study_out", help="study directory (runs are cached inside it)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (local processes)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per job (default: the machine's cores shared out among the jobs; "
        "a CPU run's bits depend on its thread count; runs already in --out are reused as is)",
    )
    p.add_argument("--objectives", nargs="+", help="subset of objectives (default: the preset's)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the preset's)")
    p.add_argument(
        "--instruments", nargs="+", help="the instruments to run (default: the preset's)"
    )
    add_set_argument(p, "override run config keys for every run, e.g. --set train.weight_decay=0")
    p.add_argument(
        "--figures-dir", help="also copy the figures, report and findings here (make study)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise UserError(f"--threads must be from 1 to {MAX_THREADS}, got {args.threads}")
    if not args.out.strip():
        raise UserError("--out is empty: name a study directory, e.g. --out study_out")
    check_device(args.device)
    t0 = time.perf_counter()
    plan = make_plan(args.preset, args.overrides, args.objectives, args.seeds, args.instruments)
    run_study(
        plan,
        args.out,
        jobs=args.jobs,
        device=args.device,
        figures_dir=args.figures_dir,
        progress=not args.no_progress,
        threads=args.threads,
    )
    peak = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    print(
        f"study done in {time.perf_counter() - t0:.0f} s; "
        f"peak resident memory of one process {peak:.0f} MB"
    )
    return 0
