"""Draw any figure of the report from saved results (nothing is trained or rerun).

    python experiments/plot.py FIGURE RUN_DIR... [--out figures/FIGURE]
    python experiments/plot.py --study study_out [--preset default] [--figures-dir figures]

The first form draws one figure (`interp.report.FIGURES`: exact_match, reversed_logprobs, lens,
patching, patching_sites, probing, update, update_sites, dynamics, selective, update_alignment,
objectives_comparison, storage, storage_pprobe) over the given runs, taken as seeds of one
configuration (a figure over several groups takes NAME=RUN_DIR pairs: `update_alignment
causal=runs/a causal=runs/b bico=runs/c`). The second redraws every figure of a finished study
into its report directory's figures/ and, with --figures-dir, copies them there (`make figures`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp.errors import UserError
from interp.findings.collect import Study
from interp.plots import figure_paths
from interp.presets import make_plan
from interp.report import FIGURES, copy_figures, draw_figures


def _groups(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in items:
        if "=" not in pair:
            raise UserError(f"{pair!r}: this figure draws groups of runs; write NAME=RUN_DIR")
        name, run_dir = pair.split("=", 1)
        out.setdefault(name, []).append(run_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("figure", nargs="?", choices=[f.name for f in FIGURES], metavar="FIGURE")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="runs with the figure's result")
    p.add_argument("--out", help="output path without suffix (default figures/FIGURE)")
    p.add_argument("--study", help="a finished study's directory (interp study --out)")
    p.add_argument("--preset", default="default", help="the study's preset (with --study)")
    p.add_argument("--figures-dir", help="with --study: also copy the figures here")
    args = p.parse_args(argv)
    try:
        if args.study:
            plan = make_plan(args.preset)
            study = Study.of(plan, args.study)
            if not any((r.path / "metrics.json").is_file() for r in study.runs):
                raise UserError(f"no finished runs of {args.preset} under {args.study}/runs")
            drawn = draw_figures(study, plan.report_dir(args.study) / "figures")
            if args.figures_dir:
                copy_figures([png for _, _, png in drawn], args.figures_dir)
            print(f"{len(drawn)} figures drawn")
            return 0
        if not args.figure or not args.run_dirs:
            raise UserError("name a FIGURE and its RUN_DIRs, or a --study to redraw")
        spec = next(f for f in FIGURES if f.name == args.figure)
        runs: object = args.run_dirs
        if spec.scope in ("groups", "bundles"):
            runs = _groups(args.run_dirs)
        out = args.out or f"figures/{spec.name}"
        spec.draw(runs, out)
        for path in figure_paths(Path(out)):
            print(f"wrote {path}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
