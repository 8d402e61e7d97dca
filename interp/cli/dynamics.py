"""`interp dynamics`: exact match, probes and the logit lens over a run's saved checkpoints."""

from __future__ import annotations

import argparse

HELP = (
    "training dynamics: exact match, entity-alone probes and logit-lens ranks at every "
    "saved checkpoint of a run"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with checkpoints/")
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        help="k of the probes' cross-validation over people (default 5)",
    )
    p.add_argument(
        "--C",
        type=float,
        default=1.0,
        help="inverse L2 strength of the logistic-regression probes (default 1.0)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the probe folds and the controls (default 0)"
    )
    p.add_argument(
        "--templates",
        default="train",
        choices=("train", "heldout"),
        help="test-prompt templates for exact match and the lens (default train)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from interp.analysis.dynamics import format_table, run_analysis
    from interp.runs import load_run

    r = load_run(args.run_dir, device=args.device)
    result = run_analysis(
        r,
        folds=args.folds,
        C=args.C,
        seed=args.seed,
        templates=args.templates,
        progress=not args.no_progress,
    )
    print(format_table(result))
    print(f"results written to {r.analysis_dir() / 'dynamics.json'} (and .npz)")
    return 0
