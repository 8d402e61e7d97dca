"""Benchmark: how a study's wall time and memory grow with people per subset and with d_model.

Runs `interp study --preset PRESET` (default: tiny, the smoke study: 2 runs, every instrument)
once per point into a fresh temporary directory, each as a child process, and prints a table of
wall time and peak resident memory (of the largest process, as `interp study` reports it).
People vary at the base d_model, d_model varies at the base people count; every row uses the
default preset's name pools (24 first x 40 last names: the tiny preset's 12 x 16 cannot name 32
people per subset); everything else is the preset's. Use it to size a run before starting it.
The table is printed and, with `--out` (default figures/bench_scaling.md, which the README
quotes), written as Markdown with the command and the machine that produced it.

    python experiments/bench_scaling.py [--preset tiny] [--people 16 32 64] [--d-model 32 64 128]
        [--out figures/bench_scaling.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def study_point(preset: str, jobs: int, sets: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one cold study with `--set sets`. The peak is the one
    `interp study` prints for its own process tree (the largest single process)."""
    out = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    interp = str(Path(sys.executable).with_name("interp"))
    cmd = [interp, "study", "--preset", preset, "--out", str(out), "--jobs", str(jobs)]
    cmd += ["--no-progress", "--set", *sets]
    try:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    found = re.search(r"peak resident memory of one process (\d+) MB", done.stdout)
    if not found:
        raise SystemExit("interp study did not print its peak memory: update bench_scaling.py")
    return seconds, float(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="tiny", help="study preset (default: tiny)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--people", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--d-model", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--base-people", type=int, default=16, help="people while d_model varies")
    ap.add_argument("--base-d-model", type=int, default=64, help="d_model while people vary")
    ap.add_argument("--out", default="figures/bench_scaling.md", help="'' writes no file")
    a = ap.parse_args()
    names = ["world.n_first_names=24", "world.n_last_names=40"]
    rows = []
    for n in sorted(a.people):
        sets = [f"world.n_people_per_subset={n}", f"model.d_model={a.base_d_model}", *names]
        rows.append((n, a.base_d_model, *study_point(a.preset, a.jobs, sets)))
    for d in sorted(a.d_model):
        if (a.base_people, d) in {(r[0], r[1]) for r in rows}:
            continue
        sets = [f"world.n_people_per_subset={a.base_people}", f"model.d_model={d}", *names]
        rows.append((a.base_people, d, *study_point(a.preset, a.jobs, sets)))
    shown = " ".join(x for x in sys.argv[1:] if x != a.out and not x.startswith("--out"))
    lines = [
        f"`interp study --preset {a.preset} --jobs {a.jobs}`, one cold study per row, on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), name pools "
        f"24 x 40; made by `python experiments/bench_scaling.py {shown}`.".replace(" `.", "`."),
        "",
        "| people per subset | d_model | wall time (s) | peak RSS (MB) |",
        "|---:|---:|---:|---:|",
        *(f"| {n} | {d} | {s:.0f} | {mb:.0f} |" for n, d, s, mb in rows),
    ]
    print("\n".join(lines))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(lines) + "\n")
        print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
