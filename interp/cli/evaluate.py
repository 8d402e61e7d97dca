"""`interp evaluate`: exact match and the log-probability test of a trained run."""

from __future__ import annotations

import argparse

HELP = "evaluate a run: exact match per subset x direction x templates, and the log-prob test"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def run(args: argparse.Namespace) -> int:
    from interp.config import check_device
    from interp.evaluate import evaluate_run, format_table
    from interp.runs import load_run

    r = load_run(args.run_dir, device=check_device(args.device))
    metrics = evaluate_run(r.path, model=r.model, dataset=r.dataset)
    print(format_table(metrics))
    print(f"metrics written to {r.path / 'metrics.json'}")
    return 0
