"""Turns (interp.turns): kit processes sharing the CPU take turns per multi-threaded step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp.turns import Turns

CHILD = """
import json, os, sys, time
from interp.turns import Turns
name, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t = Turns("cpu", threads=2)
assert t.enabled
print("ready", flush=True)
sys.stdin.readline()
out = []
for _ in range(n):
    with t.turn():
        a = time.perf_counter()
        time.sleep(hold)
        out.append((name, a, time.perf_counter()))
print(json.dumps(out), flush=True)
"""


def _start(name: str, n: int, hold: float, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, name, str(n), str(hold)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_processes_never_overlap_and_alternate(tmp_path: Path) -> None:
    env = {**os.environ, "INTERP_TURNS_DIR": str(tmp_path)}
    procs = [_start(n, 20, 0.03, env) for n in ("a", "b")]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    turns = sorted(
        (t for p in procs for t in json.loads(p.communicate()[0].strip().splitlines()[-1])),
        key=lambda t: t[1],
    )
    overlaps = [(x, y) for x, y in zip(turns, turns[1:], strict=False) if y[1] < x[2]]
    assert not overlaps, overlaps  # one step at a time
    # while both run (from the later one's first turn to the earlier one's last), the turns
    # alternate; a process descheduled for a whole turn may let the other go twice, so a
    # couple of repeats are tolerated (without the gate one process takes most turns in a row)
    order = "".join(t[0] for t in turns)
    start = max(order.index("a"), order.index("b"))
    end = min(order.rindex("a"), order.rindex("b"))
    both = order[start : end + 1]
    repeats = sum(x == y for x, y in zip(both, both[1:], strict=False))
    assert len(both) >= 30 and repeats <= 2, order


def test_turns_are_off_for_one_thread_a_gpu_or_when_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERP_TURNS_DIR", str(tmp_path))
    assert Turns("cpu", threads=2).enabled
    assert not Turns("cpu", threads=1).enabled
    assert not Turns("cuda:0", threads=2).enabled
    monkeypatch.setenv("INTERP_TURNS", "0")
    assert not Turns("cpu", threads=2).enabled
    monkeypatch.delenv("INTERP_TURNS")
    monkeypatch.setenv("INTERP_TURNS_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    assert not Turns("cpu", threads=2).enabled  # no lock files: skipped, not an error


def test_a_killed_process_releases_its_turn(tmp_path: Path) -> None:
    env = {**os.environ, "INTERP_TURNS_DIR": str(tmp_path)}
    holder = _start("a", 1, 60.0, env)  # holds its turn for a minute
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    time.sleep(0.5)
    holder.kill()
    holder.wait()
    t0 = time.perf_counter()
    os.environ["INTERP_TURNS_DIR"] = str(tmp_path)
    try:
        with Turns("cpu", threads=2).turn():
            waited = time.perf_counter() - t0
    finally:
        del os.environ["INTERP_TURNS_DIR"]
    assert waited < 5, f"waited {waited:.1f} s for a dead process's turn"
