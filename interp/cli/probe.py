"""`interp probe`: linear probes for the other entity's attribute, with their controls."""

from __future__ import annotations

import argparse

HELP = (
    "probe a run: A alone -> B's role and B alone -> A's first-name class, per layer and "
    "subset, with random-init and random-label controls"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        help="k of k-fold cross-validation over people within a subset (default 5)",
    )
    p.add_argument(
        "--C",
        type=float,
        default=1.0,
        help="inverse L2 strength of the logistic-regression probe (default 1.0)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the fold assignment and the random-label control (default 0)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from interp.analysis.probing import format_summary, run_analysis
    from interp.runs import load_run

    r = load_run(args.run_dir, device=args.device)
    result = run_analysis(
        r, folds=args.folds, C=args.C, seed=args.seed, progress=not args.no_progress
    )
    print(format_summary(result))
    print(f"results written to {r.analysis_dir() / 'probing.json'} (and .npz)")
    return 0
