"""Draw the behavioural figures (exact match bars, reversed log-prob histograms) from runs.

python experiments/plot_behaviour.py RUN_DIR [RUN_DIR ...] --out figures/
"""

import argparse
from pathlib import Path

from interp.plots import figure_paths
from interp.plots.behaviour import plot_exact_match, plot_logprob_hist

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("figures"))
    a = ap.parse_args()
    plot_exact_match(a.runs, a.out / "exact_match")
    plot_logprob_hist(a.runs, a.out / "reversed_logprobs")
    for p in figure_paths(a.out / "exact_match") + figure_paths(a.out / "reversed_logprobs"):
        print(p)
