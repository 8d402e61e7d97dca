"""`interp update`: the gradient-update test on a trained run's held-out new facts."""

from __future__ import annotations

import argparse

HELP = (
    "gradient-update test: k optimiser steps on each new fact 'A is B' from the trained "
    "weights; Delta log p forward vs reverse against controls, where the change lands per "
    "layer, and which parameter groups carry it"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    p.add_argument(
        "--steps",
        type=int,
        default=1,
        help="optimiser steps per fact, each on all its training documents (default 1)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate of the update (default 0.01 for sgd, 1e-3 for adamw)",
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="plain SGD (the raw gradient step; default) or a fresh AdamW",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="AdamW weight decay on matrices during the update (default 0)",
    )
    p.add_argument(
        "--objective",
        default="run",
        help="loss of the update: 'run' (the run's own objective, default) or a name",
    )
    p.add_argument(
        "--n-facts",
        type=int,
        default=None,
        help="update on the first N new people only (default: all; controls use all)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random control token directions (default 0)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from interp.analysis.updates import format_summary, run_analysis
    from interp.runs import load_run

    r = load_run(args.run_dir, device=args.device)
    result = run_analysis(
        r,
        steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        objective=args.objective,
        n_facts=args.n_facts,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_summary(result))
    print(f"results written to {r.analysis_dir() / 'update.json'} (and .npz)")
    return 0
