"""Plot activation-patching heatmaps for one or more runs (seeds) of one config.

python experiments/plot_patching.py RUN_DIR... --out figures/patching [--subset n2d]
"""

from __future__ import annotations

import argparse
import sys

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.patching import plot_patching


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="runs with analysis/patching.json"
    )
    p.add_argument("--out", default="figures/patching", help="output path without suffix")
    p.add_argument("--subset", default="n2d", help="subset to draw: n2d, d2n or both")
    args = p.parse_args(argv)
    try:
        plot_patching(args.run_dirs, args.out, subset=args.subset)
        for path in figure_paths(args.out):
            print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
