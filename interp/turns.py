"""Turns: kit processes on one machine take turns for their multi-threaded CPU steps.

Two trainings with two OpenMP threads each on two cores do not share the cores well: every
parallel region waits for both threads of its process, and a thread descheduled in favour of
the other process stalls its sibling (torch's default spin-waiting makes that a collapse, a
bounded spin or a passive wait a wake-up paid at every region; see `interp/__init__.py`).
Taking turns avoids it: a step runs with both cores to itself and the other process waits,
blocked in the kernel, for its turn. Two trainings at once then take about twice one alone,
the best two processes can do on the same cores, and a training alone pays three uncontended
`flock` calls a step (microseconds).

The turn is a pair of `flock` locks in `$TMPDIR/interp-<uid>/` (or `$INTERP_TURNS_DIR`;
"gate" and "step"): to take a
turn, a process takes the gate, then the step lock, then lets the gate go; it lets the step
lock go when its step is done. A process waiting for the step lock holds the gate, so the one
that just finished cannot take the next turn before it: two processes alternate, step for
step, and more share the turns. Only processes with more than one torch thread on the CPU
take turns (the study's workers, pinned to one thread each on their own cores, do not). A
lock is released by the kernel when its process dies, so a killed training never blocks
another. Set `INTERP_TURNS=0` to switch it off (a machine whose cores are yours alone, or a
filesystem without `flock`); a lock that cannot be made is skipped, never an error.

Turns change no number: they only decide when a step runs, not what it computes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV = "INTERP_TURNS"


def lock_dir() -> Path:
    """Where the lock files live: `$INTERP_TURNS_DIR`, else `$TMPDIR/interp-<uid>`."""
    if os.environ.get("INTERP_TURNS_DIR"):
        return Path(os.environ["INTERP_TURNS_DIR"])
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"interp-{uid}"


class Turns:
    """Machine-wide turn-taking among kit processes (see the module docstring).

    `with turns.turn(): ...` runs the block in this process's turn. Disabled (a no-op) when the
    device is not the CPU, when torch uses one thread, when `INTERP_TURNS=0`, or when the lock
    files cannot be opened.
    """

    def __init__(self, device: Any = "cpu", threads: int | None = None) -> None:
        import torch

        threads = torch.get_num_threads() if threads is None else threads
        self.fds: tuple[int, int] | None = None
        if str(device).split(":")[0] != "cpu" or threads <= 1 or os.environ.get(ENV) == "0":
            return
        try:
            import fcntl  # noqa: F401  (POSIX only)

            d = lock_dir()
            d.mkdir(mode=0o700, exist_ok=True)
            gate = os.open(d / "gate", os.O_RDWR | os.O_CREAT, 0o600)
            step = os.open(d / "step", os.O_RDWR | os.O_CREAT, 0o600)
        except (ImportError, OSError):
            return
        self.fds = (gate, step)

    @property
    def enabled(self) -> bool:
        return self.fds is not None

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if self.fds is None:
            yield
            return
        import fcntl

        gate, step = self.fds
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(step, fcntl.LOCK_EX)
            fcntl.flock(gate, fcntl.LOCK_UN)
        except OSError:  # a filesystem without flock: run untimed, as without turns
            self.close()
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(step, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fds is not None:
            for fd in self.fds:
                os.close(fd)
            self.fds = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
