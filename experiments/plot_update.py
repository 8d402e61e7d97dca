"""Plot the gradient-update test for one or more runs (seeds).

python experiments/plot_update.py RUN_DIR... --out figures/update
"""

from __future__ import annotations

import argparse
import sys

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.update import plot_update


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs with analysis/update.npz")
    p.add_argument("--out", default="figures/update", help="output path without suffix")
    args = p.parse_args(argv)
    try:
        plot_update(args.run_dirs, args.out)
        for path in figure_paths(args.out):
            print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
