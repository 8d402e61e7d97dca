"""Every instrument's subcommand: `RUN_DIR`, one flag per field of the instrument's `Options`
(with the field's help), `--device` and `--no-progress`; running it prints the instrument's
`format_summary` and where the result was written. `interp evaluate` is the behaviour
instrument."""

from __future__ import annotations

import argparse

from interp.analysis import get_instrument
from interp.analysis.options import add_option_arguments, options_from_args
from interp.config import check_device
from interp.runs import load_run


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    ins = get_instrument(command)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    add_option_arguments(p, ins.options_type)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    ins = get_instrument(args.command)
    options = options_from_args(ins.options_type, args)
    r = load_run(args.run_dir, device=check_device(args.device))
    result = ins.run(r, options, progress=not args.no_progress)
    print(ins.format_summary(result))
    print(f"results written to {', '.join(str(p) for p in ins.files(r.path))}")
    return 0
