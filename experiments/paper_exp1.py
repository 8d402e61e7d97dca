"""Berglund et al. (2023) Experiment 1 on its published data: our Table 1 beside the paper's, and
the reversed log-probability histograms.

    interp train --preset paper_exp1 --set train.seed=0 --out runs/paper_exp1_s0   # per seed
    python experiments/paper_exp1.py runs/paper_exp1_s0 runs/paper_exp1_s1 runs/paper_exp1_s2 \
        --out figures/

Writes figures/paper_exp1.{png,pdf} and figures/paper_exp1_table1.md and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp.errors import UserError
from interp.plots import figure_paths
from interp.plots.paper import format_table1, plot_paper_exp1, table1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="paper_exp1 runs (one per seed)")
    p.add_argument("--out", default="figures", help="output folder (default: figures)")
    args = p.parse_args(argv)
    try:
        out = Path(args.out)
        plot_paper_exp1(args.runs, out / "paper_exp1")
        paths = figure_paths(out / "paper_exp1")
        table = format_table1(table1(args.runs))
        (out / "paper_exp1_table1.md").write_text(table + "\n")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print("wrote", *paths, out / "paper_exp1_table1.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
