"""Turns (interp.turns): kit processes sharing the CPU take turns per multi-threaded step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp.errors import UserError
from interp.turns import Turns

CHILD = """
import json, os, sys, time
from interp.errors import UserError
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


STOPPED = """
import fcntl, os, signal, sys
from interp.errors import UserError
from interp.turns import Turns
t = Turns("cpu", threads=2)
fd = t.fds[0 if sys.argv[1] == "gate" else 1]
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid():<11}\\n".encode(), 0)
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("lock", ["step", "gate"])
def test_a_stopped_process_holds_no_one_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: str
) -> None:
    """A training stopped with Ctrl-Z keeps its locks: one stopped in its step (holding `step`)
    or while waiting for it (holding `gate`) must not hold up the others' turns."""
    monkeypatch.setenv("INTERP_TURNS_DIR", str(tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", STOPPED, lock], env=dict(os.environ), stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        time.sleep(0.2)
        t0 = time.perf_counter()
        turns = Turns("cpu", threads=2)
        for _ in range(5):
            with turns.turn():
                pass
        waited = time.perf_counter() - t0
    finally:
        child.kill()
        child.wait()
    assert waited < 1, f"5 turns took {waited:.1f} s beside a stopped holder of {lock}"


def test_a_long_wait_says_who_holds_the_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERP_TURNS_DIR", str(tmp_path))
    monkeypatch.setattr("interp.turns.SAY_AFTER", 0.2)
    holder = _start("a", 1, 1.0, dict(os.environ))  # holds its turn for a second
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    time.sleep(0.3)
    with Turns("cpu", threads=2).turn():
        pass
    holder.communicate()
    err = capsys.readouterr().err
    assert f"kit process {holder.pid} holds it" in err, err


def test_a_lock_folder_others_can_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user who makes the lock folder first could hold every training: a folder that
    is not private is refused in one line naming the fix; the default folder is made 0700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("INTERP_TURNS_DIR", str(shared))
    with pytest.raises(UserError, match="not a private folder of yours.*INTERP_TURNS_DIR") as e:
        Turns("cpu", threads=2)
    assert "\n" not in str(e.value)
    mine = tmp_path / "mine"
    monkeypatch.setenv("INTERP_TURNS_DIR", str(mine))
    assert Turns("cpu", threads=2).enabled
    assert mine.stat().st_mode & 0o777 == 0o700
