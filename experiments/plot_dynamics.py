"""Training dynamics (exact match, probes, logit lens over checkpoints) for one or more runs
(seeds of one config).

    python experiments/plot_dynamics.py RUN_DIR [RUN_DIR ...] --out figures/dynamics
"""

from __future__ import annotations

import argparse
import sys

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.dynamics import plot_dynamics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="runs with analysis/dynamics.json"
    )
    p.add_argument("--out", default="figures/dynamics", help="output path without suffix")
    args = p.parse_args(argv)
    try:
        plot_dynamics(args.run_dirs, args.out)
        for path in figure_paths(args.out):
            print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
