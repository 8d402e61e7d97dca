"""`interp train`: train a run from a preset or config file into a run directory."""

from __future__ import annotations

import argparse

from interp.analysis.behaviour import read
from interp.cli import add_set_argument
from interp.config import check_device, describe, load_config
from interp.evaluate import format_table
from interp.train import train_run


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--preset", help="named config: tiny, default, paper_exp1 (default: default)")
    p.add_argument("--config", help="JSON file with sections world, model, train")
    add_set_argument(
        p, "override config keys, e.g. --set train.steps=500 train.seed=1 (repeatable)"
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run from its latest checkpoint (bitwise the same result)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run directory (only one made by `interp train`)",
    )
    p.add_argument(
        "--device",
        help="cpu, cuda, cuda:N or auto (overrides train.device; allowed with --resume)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.epilog = "config keys (section.key = default: help):\n" + describe()


def run(args: argparse.Namespace) -> int:
    if args.device is not None:
        check_device(args.device)
    given = args.preset or args.config or args.overrides
    cfg = (
        load_config(args.preset, args.config, args.overrides)
        if (given or not args.resume)
        else None
    )
    out = train_run(
        cfg,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        device=args.device,
    )
    print(format_table(read(out, arrays=False).data))
    print(f"run written to {out}")
    return 0
