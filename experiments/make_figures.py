"""Redraw every figure of a finished study from its saved results (nothing is trained or rerun).

    python experiments/make_figures.py --study study_out [--figures-dir figures] [--force]

Reads STUDY/runs/*/ (metrics.json and analysis/*), draws each figure into STUDY/figures/ (PNG
and PDF) and copies the PNGs to --figures-dir. Figures whose inputs have not changed since they
were drawn are kept unless --force is given. `make figures` runs this on the default study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp.report import copy_figures, draw_figures, group_runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--study", default="study_out", help="the study directory (interp study --out)")
    ap.add_argument("--figures-dir", default=None, help="also copy the PNGs here")
    ap.add_argument("--force", action="store_true", help="redraw even unchanged figures")
    ap.add_argument("--jobs", type=int, default=2, help="processes drawing figures")
    args = ap.parse_args(argv)
    runs = sorted(p.parent for p in Path(args.study).glob("runs/*/metrics.json"))
    if not runs:
        print(
            f"error: no finished runs under {args.study}/runs: run `make study` "
            "(or `interp study --out DIR`) first",
            file=sys.stderr,
        )
        return 2
    fig_dir = Path(args.study) / "figures"
    if args.force:
        (fig_dir / ".drawn.json").unlink(missing_ok=True)
    drawn = draw_figures(group_runs(runs), fig_dir, jobs=args.jobs)
    pngs = [p for figs in drawn.values() for p in figs.values()]
    if args.figures_dir:
        copy_figures(pngs, args.figures_dir)
    print(
        f"{len(pngs)} figures in {fig_dir}"
        + (f", copied to {args.figures_dir}" if args.figures_dir else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
