"""Plot the gradient-update test for one or more runs (seeds): the six-panel figure (OUT), where
the update is written (OUT_sites), and the alignment figure (OUT_alignment; with --objective
NAME=RUN_DIR pairs, one column per objective, else the given runs as one column).

python experiments/plot_update.py RUN_DIR... --out figures/update
python experiments/plot_update.py RUN_DIR --objective causal=runs/c bico=runs/b --out figures/update
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.update import plot_alignment, plot_update, plot_update_sites


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs with analysis/update.npz")
    p.add_argument("--out", default="figures/update", help="output path without suffix")
    p.add_argument(
        "--objective",
        nargs="+",
        default=[],
        metavar="NAME=RUN_DIR",
        help="runs per objective for the alignment figure (repeat a name for several seeds)",
    )
    args = p.parse_args(argv)
    try:
        runs: dict[str, Sequence[str | Path]] = {}
        for pair in args.objective:
            if "=" not in pair:
                raise UserError(f"--objective {pair!r}: write NAME=RUN_DIR")
            name, run_dir = pair.split("=", 1)
            runs[name] = [*runs.get(name, []), run_dir]
        plot_update(args.run_dirs, args.out)
        plot_update_sites(args.run_dirs, f"{args.out}_sites")
        plot_alignment(runs or {"runs": args.run_dirs}, f"{args.out}_alignment")
        for out in (args.out, f"{args.out}_sites", f"{args.out}_alignment"):
            for path in figure_paths(out):
                print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
