"""Plot the lens rank of the answer's first token by layer for one or more runs (seeds):
`python experiments/plot_lens.py RUN_DIR... --out figures/lens` (after `interp lens RUN_DIR`)."""

from __future__ import annotations

import argparse
import sys

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.lens import plot_lens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs with analysis/lens.json")
    p.add_argument("--out", default="figures/lens", help="output path without suffix")
    args = p.parse_args(argv)
    try:
        plot_lens(args.run_dirs, args.out)
        for path in figure_paths(args.out):
            print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
