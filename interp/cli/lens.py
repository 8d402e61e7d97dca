"""`interp lens`: logit lens (and tuned lens) of the answer's first token, per layer, position."""

from __future__ import annotations

import argparse

HELP = (
    "logit lens of a run: rank of the answer's first token per layer at A's last token, B's "
    "last token and the final prompt position, forward vs reverse, with controls"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    p.add_argument(
        "--tuned",
        action="store_true",
        help="also train a tuned lens (affine translator per layer, Belrose et al. "
        "2023) and save it as analysis/tuned_lens.safetensors",
    )
    p.add_argument(
        "--templates",
        choices=("train", "heldout"),
        default="train",
        help="test prompts on training or held-out paraphrase templates (default train)",
    )
    p.add_argument(
        "--tuned-steps",
        type=int,
        default=None,
        help="optimiser steps of the tuned lens (default 500)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from interp.analysis.lens import TunedLensOptions, format_table, run_analysis
    from interp.errors import UserError
    from interp.runs import load_run

    options = TunedLensOptions()
    if args.tuned_steps is not None:
        if args.tuned_steps < 1:
            raise UserError(f"--tuned-steps must be positive, got {args.tuned_steps}")
        options = TunedLensOptions(steps=args.tuned_steps)
    r = load_run(args.run_dir, device=args.device)
    result = run_analysis(
        r,
        tuned=args.tuned,
        templates=args.templates,
        progress=not args.no_progress,
        tuned_options=options,
    )
    print(format_table(result))
    print(f"results written to {r.analysis_dir() / 'lens.json'} (and .npz)")
    return 0
