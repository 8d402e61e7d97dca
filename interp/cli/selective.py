"""`interp selective`: selective prediction with learned self-evaluation (ASPIRE) on a run."""

from __future__ import annotations

import argparse
import dataclasses

HELP = (
    "selective prediction (ASPIRE): do likelihood, a probe or a learned self-evaluation "
    "know when an answer is wrong?"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from interp.analysis.selective import SelectiveOptions

    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    for f in dataclasses.fields(SelectiveOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=f.metadata["help"],
            )
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), f.type)
            p.add_argument(
                flag,
                type=typ,
                default=f.default,  # type: ignore[arg-type]
                help=f"{f.metadata['help']} (default {f.default!r})",
            )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from interp.analysis.selective import SelectiveOptions, format_table, run_analysis
    from interp.runs import load_run

    r = load_run(args.run_dir, device=args.device)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(SelectiveOptions)}
    result = run_analysis(r, progress=not args.no_progress, **options)
    print(format_table(result))
    print(f"written to {r.analysis_dir() / 'selective.json'} (+ .npz)")
    return 0
