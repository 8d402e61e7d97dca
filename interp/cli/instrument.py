"""What every instrument's subcommand shares: `RUN_DIR`, one flag per field of the instrument's
`Options` (with the field's help), `--device` and `--no-progress`; running it prints the
instrument's `format_summary` and where the result was written.

An instrument's CLI module is three lines:

    HELP = "..."
    add_arguments, run = instrument_command("probing")
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """Refuse a device the kit cannot run on in one line (not a torch traceback)."""
    from interp.errors import UserError

    if not DEVICE_RE.match(device):
        raise UserError(f"--device {device!r} unknown: use cpu, cuda, cuda:N or auto")
    return device


def instrument_command(
    name: str,
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """(add_arguments, run) of the subcommand of the instrument `name`."""

    def add_arguments(p: argparse.ArgumentParser) -> None:
        from interp.analysis import get_instrument
        from interp.analysis.options import add_option_arguments

        ins = get_instrument(name)
        p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
        add_option_arguments(p, getattr(ins.load(), ins.options_class))
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    def run(args: argparse.Namespace) -> int:
        from interp.analysis import get_instrument
        from interp.analysis.options import options_from_args
        from interp.runs import load_run

        ins = get_instrument(name)
        options = options_from_args(getattr(ins.load(), ins.options_class), args)
        r = load_run(args.run_dir, device=check_device(args.device))
        result = ins.run(r, options, progress=not args.no_progress)
        print(ins.format_summary(result))
        print(
            f"results written to {r.path / 'analysis' / (result.instrument + '.json')} (and .npz)"
        )
        return 0

    return add_arguments, run
