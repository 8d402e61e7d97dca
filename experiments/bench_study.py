"""Benchmark: the full study's wall time and peak memory, cold and then cached.

Runs `interp study --preset PRESET` twice into a fresh temporary directory, each as a child
process, and prints the wall time and the peak resident memory of the largest process of each
(the study's workers are separate processes; `ru_maxrss` of the children). The bars of the
default preset on a 2-core CPU: at most 15 minutes (goal 10) and 3 GB cold, at most 60 s for
the cached second invocation; the ratio printed is cold / cached.

    python experiments/bench_study.py [--preset default] [--jobs 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", default=None, help="write the study here instead of a temp dir")
    args = ap.parse_args()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_study_"))
    interp = str(Path(sys.executable).with_name("interp"))
    cmd = [interp, "study", "--preset", args.preset, "--out", str(out), "--jobs", str(args.jobs)]
    cmd += ["--no-progress"]
    try:
        cold = timed(cmd)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        warm = timed(cmd)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"study --preset {args.preset} --jobs {args.jobs}")
    print(f"  cold:   {cold:7.1f} s  (bar 900 s, goal 600 s)")
    print(f"  cached: {warm:7.1f} s  (bar 60 s)")
    print(f"  cold / cached: {cold / warm:.1f}x")
    print(f"  peak resident memory of one process: {peak_mb:.0f} MB (bar 3072 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
