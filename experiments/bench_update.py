"""Time the gradient-update test per fact (issue 13's alignment, decomposition and attribution
included), on a model of a preset's shape.

The model is untrained (`interp.model.build_model` on the preset's dataset; the cost does not
depend on the weights), or a trained run given with --run. The update test runs on `--facts`
new people (all new people serve as controls) with the study's default options, timed twice:
with the Both-subset positive control (`n_both` people, a fixed cost per run) and without, so
the per-fact cost and the per-run overhead are both reported.

    python experiments/bench_update.py [--preset default] [--facts 10] [--threads 2]
    python experiments/bench_update.py --run runs/default_s0

Measured 2026-11-30 on the shared 2-core machine, 1 thread: default preset (4 layers, 20 new
people) 0.38 s per fact, 5.4 s for the study's 10 facts, +1.0 s for the Both control (16
people): about 77 s for the default study's 12 update runs. Tiny preset: 0.20 s per fact
(the code before issue 13: 0.24 s, same machine and load), +0.6 s for the Both control.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from interp.analysis.update import UpdateOptions, run_analysis
from interp.config import load_config
from interp.model import build_model
from interp.runs import Run, build_dataset, load_run


def bench(run: Run, facts: int, n_both: int) -> float:
    """Seconds of one update test on `facts` facts."""
    start = time.perf_counter()
    run_analysis(run, UpdateOptions(n_facts=facts, n_both=n_both), write=False, progress=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="default", help="preset of the model's shape and world")
    p.add_argument("--run", default=None, help="a trained run directory instead of a preset")
    p.add_argument("--facts", type=int, default=10, help="new facts updated on (study: 10)")
    p.add_argument("--n-both", type=int, default=16, help="Both people in the positive control")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run:
        run = load_run(args.run)
    else:
        cfg = load_config(args.preset)
        ds = build_dataset(cfg)
        model = build_model(cfg.model, ds.d_vocab, cfg.train.seed, tokenizer=ds.tokenizer)
        model.eval()
        run = Run(Path(tempfile.mkdtemp()), cfg, model, ds)
    n_new = sum(p.subset == "new" for p in run.dataset.people)
    facts = min(args.facts, n_new)
    bench(run, 1, 0)  # warm-up (allocations, the memoised parameter table)
    small = bench(run, 1, 0)
    full = bench(run, facts, 0)
    with_both = bench(run, facts, args.n_both)
    per_fact = (full - small) / max(facts - 1, 1)
    print(
        f"update test, {args.run or args.preset} ({run.config.model.n_layers} layers, d_model "
        f"{run.config.model.d_model}, {n_new} new people), {torch.get_num_threads()} threads:\n"
        f"  {facts} facts: {full:.2f} s ({per_fact:.3f} s per fact, {full - facts * per_fact:.2f}"
        f" s per run fixed)\n"
        f"  + Both positive control ({args.n_both} people): {with_both:.2f} s "
        f"(+{with_both - full:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
