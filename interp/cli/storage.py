"""`interp storage`: where a fact is stored, on a biography-world run (P-, Q- and reverse
Q-probes with their controls, and QA extraction; `interp.analysis.storage`)."""

from __future__ import annotations

import argparse

HELP = (
    "storage probes on a biography-world run: name -> attributes, work -> person, the position "
    "before each attribute, with control task, permutation null, positive controls; extraction"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from interp.analysis.options import add_option_arguments
    from interp.analysis.storage import StorageOptions

    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="a biography-world run made by `interp train`"
    )
    add_option_arguments(p, StorageOptions)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from interp.analysis import storage
    from interp.analysis.options import options_from_args
    from interp.cli.instrument import check_device
    from interp.runs import load_run

    options = options_from_args(storage.StorageOptions, args)
    r = load_run(args.run_dir, device=check_device(args.device))
    result = storage.run_analysis(r, options, progress=not args.no_progress)
    print(storage.format_summary(result))
    print(f"results written to {r.path / 'analysis' / 'storage.json'} (and .npz)")
    return 0
