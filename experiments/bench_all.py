"""`make bench`: every speed benchmark of issue 19, one after another, then a summary.

Runs, each as a child process with this interpreter (each prints its own full output as it
goes, and measures its ratios inside one command against its own reference):

- bench_patching.py: activation patching against TransformerLens's loops (both ratios, max diff);
- bench_training.py: training tokens/s against the SDPA / fused-AdamW reference, both presets;
- bench_threads.py: one default-preset training alone and two at once, torch's thread default
  against the kit's policy (its spin count and turns, interp.turns), and the kit without turns
  (what a process that does not take turns sees);
- bench_scaling.py: the tiny study's wall time and peak memory against people per subset and
  d_model (the table; also written to figures/bench_scaling.md);
- bench_study.py: the default study cold and cached, and its peak resident memory.

The summary at the end repeats the lines that carry the issue's bars, so the numbers are on one
screen. Exit status 1 when a benchmark failed (its own exit status, e.g. patching grids that
disagree or thread policies that change the weights).

    python experiments/bench_all.py [--jobs 2] [--skip study scaling]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The lines of each benchmark that carry a bar (or the table), repeated in the summary.
KEEP = re.compile(
    r"ratio|speed bar|two at once /|alone / torch|bitwise|peak resident|cold:|cached:|^\s*preset|"
    r"tokens/s|^\||^\s+(torch|kit|spin|passive|one)\S*\s+\d"
)


def benches(jobs: int) -> dict[str, list[str]]:
    return {
        "patching": ["bench_patching.py"],
        "training": ["bench_training.py"],
        "threads": [
            "bench_threads.py",
            "--steps",
            "100",
            "--repeats",
            "3",
            "--policies",
            "torch",
            "kit",
            "kit-noturns",
        ],  # fmt: skip
        "scaling": ["bench_scaling.py"],
        "study": ["bench_study.py", "--jobs", str(jobs)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="jobs of the default study")
    ap.add_argument("--skip", nargs="*", default=[], choices=list(benches(1)))
    a = ap.parse_args()
    summary: list[str] = []
    failed = []
    for name, args in benches(a.jobs).items():
        if name in a.skip:
            continue
        print(f"\n=== {name}: python experiments/{' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(HERE / args[0]), *args[1:]], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        kept = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            if KEEP.search(line):
                kept.append(line.rstrip())
        proc.wait()
        status = "" if proc.returncode == 0 else f", FAILED (exit {proc.returncode})"
        if proc.returncode:
            failed.append(name)
        summary += [f"{name} ({time.perf_counter() - t0:.0f} s{status}):", *kept]
    print("\n=== summary")
    print("\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
