"""Plot the selective-prediction analysis of one or several runs (seeds).

    python experiments/plot_selective.py RUN_DIR [RUN_DIR ...] --out figures/selective

Reads each run's analysis/selective.json and .npz (made by `interp selective RUN_DIR`) and
writes OUT.png and OUT.pdf: accuracy-coverage curves (mixed and reversed questions) and the
AUROC / AUACC table.
"""

from __future__ import annotations

import argparse
import sys

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.selective import plot_selective


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="runs analysed by `interp selective`"
    )
    p.add_argument("--out", default="figures/selective", help="output path without extension")
    args = p.parse_args(argv)
    try:
        plot_selective(args.run_dirs, args.out)
        for path in figure_paths(args.out):
            print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
