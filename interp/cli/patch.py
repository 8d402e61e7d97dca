"""`interp patch`: activation patching (causal tracing) of every subset x query x corruption."""

from __future__ import annotations

import argparse

HELP = (
    "activation patching: resid_pre / attn_out / mlp_out at every layer x position, "
    "forward and reverse queries, entity-swap and embedding-noise corruptions"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    p.add_argument(
        "--corruption",
        choices=("swap", "noise", "both"),
        default="both",
        help="entity swap, Gaussian noise on the entity's embeddings, or both (default both)",
    )
    p.add_argument(
        "--templates",
        choices=("train", "heldout"),
        default="train",
        help="prompts on training or held-out templates (default train)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="patched cells per forward pass; lower it to save memory (default 512)",
    )
    p.add_argument(
        "--max-prompts",
        type=int,
        default=32,
        help="prompts per subset x query, a seeded sample; 0 = all (default 32)",
    )
    p.add_argument(
        "--noise-samples",
        type=int,
        default=5,
        help="noise draws per prompt for the noise corruption (default 5)",
    )
    p.add_argument(
        "--noise-scale",
        type=float,
        default=3.0,
        help="noise std in units of the entity token embeddings' std (default 3)",
    )
    p.add_argument(
        "--min-gap",
        type=float,
        default=1.0,
        help="smallest clean - corrupted score gap for a normalised map (default 1)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of prompt sampling, swap partners and noise (default 0)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from interp.analysis.patching import CORRUPTIONS, format_summary, run_analysis
    from interp.runs import load_run

    r = load_run(args.run_dir, device=args.device)
    corruptions = CORRUPTIONS if args.corruption == "both" else (args.corruption,)
    result = run_analysis(
        r,
        corruptions=corruptions,
        templates=args.templates,
        batch_size=args.batch_size,
        max_prompts=args.max_prompts,
        noise_samples=args.noise_samples,
        noise_scale=args.noise_scale,
        min_gap=args.min_gap,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_summary(result))
    print(f"results written to {r.analysis_dir() / 'patching.json'} (and .npz)")
    return 0
