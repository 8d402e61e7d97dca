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
another. A stopped one (Ctrl-Z, SIGSTOP, a debugger) keeps its locks, so no wait is open-ended:
each holder writes its pid into the lock file, a wait blocks in the kernel for at most
`RECHECK` seconds at a time (a SIGALRM cuts it; off the main thread it polls), and a process
whose turn is held by a stopped process runs its step without the turn (Linux reads the
holder's state in /proc; elsewhere a stopped holder is waited for). A wait longer than
`SAY_AFTER` seconds says on stderr who holds the turn. The lock folder must be the user's own
and private (mode 0700): one that another user made or can write is refused in one line. Set
`INTERP_TURNS=0` to switch turns off (a machine whose cores are yours alone, or a filesystem
without `flock`); a lock that cannot be made is skipped, never an error.

Turns change no number: they only decide when a step runs, not what it computes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from interp.errors import UserError

ENV = "INTERP_TURNS"
SAY_AFTER = 5.0  # seconds of waiting for a turn before a line on stderr says who holds it
RECHECK = 1.0  # seconds a blocked wait lasts before the holder is looked at again
POLL = (1e-4, 2e-3)  # off the main thread: first and longest sleep between two tries (seconds)


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
        self.said = False
        try:
            import fcntl  # noqa: F401  (POSIX only)

            d = lock_dir()
            d.mkdir(mode=0o700, exist_ok=True)
            check_private(d)
            gate = os.open(d / "gate", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            step = os.open(d / "step", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except (ImportError, OSError):
            return
        self.fds = (gate, step)

    @property
    def enabled(self) -> bool:
        return self.fds is not None

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Run the block in this process's turn; without one where the turn's holder is stopped
        (its step then overlaps the next one of the others, and nothing else changes)."""
        if self.fds is None:
            yield
            return
        import fcntl

        gate, step = self.fds
        try:
            if not self._take(gate):
                yield
                return
            got = self._take(step)
            fcntl.flock(gate, fcntl.LOCK_UN)
        except OSError:  # a filesystem without flock: run untimed, as without turns
            self.close()
            yield
            return
        try:
            yield
        finally:
            if got:
                fcntl.flock(step, fcntl.LOCK_UN)

    def _take(self, fd: int) -> bool:
        """Take the lock `fd`; False (not taken) where its holder is stopped. The wait blocks in
        the kernel (woken the moment the lock is let go) for at most `RECHECK` seconds at a
        time, then looks at the holder again; off the main thread, where no alarm can cut a
        wait short, it polls."""
        import fcntl

        start, delay = time.monotonic(), POLL[0]
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if holder and _stopped(holder):
                    return False
                waited = time.monotonic() - start
                if waited > SAY_AFTER and not self.said:
                    self.said = True
                    print(
                        f"waiting for the CPU turn ({waited:.0f} s so far): kit process "
                        f"{holder or '?'} holds it (interp.turns; INTERP_TURNS=0 switches turns "
                        "off)",
                        file=sys.stderr,
                    )
                if threading.current_thread() is threading.main_thread():
                    due = RECHECK if self.said else SAY_AFTER - waited + 0.01
                    if not _blocking_take(fd, max(0.01, min(RECHECK, due))):
                        continue
                else:
                    time.sleep(delay)
                    delay = min(2 * delay, POLL[1])
                    continue
            os.pwrite(fd, f"{os.getpid():<11}\n".encode(), 0)
            return True

    def close(self) -> None:
        if self.fds is not None:
            for fd in self.fds:
                os.close(fd)
            self.fds = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def check_private(d: Path) -> None:
    """Refuse a lock folder that is not a folder of this user's that no one else can write: a
    folder someone else made could hold the locks and stop every training."""
    st = os.lstat(d)
    uid = os.getuid() if hasattr(os, "getuid") else st.st_uid
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        raise UserError(
            f"the turns folder {d} is not a private folder of yours (owner uid {st.st_uid}, "
            f"mode {stat.S_IMODE(st.st_mode):04o}): another user's process could hold every "
            "training; remove it, or set INTERP_TURNS_DIR to a folder of yours (mode 0700), or "
            "INTERP_TURNS=0"
        )


def _holder(fd: int) -> int:
    """The pid the lock's last holder wrote into it (0 if none)."""
    try:
        return int(os.pread(fd, 12, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (Ctrl-Z, SIGSTOP, a debugger): Linux's /proc; False
    where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"T", b"t")


class _Recheck(Exception):
    """Raised by the alarm that cuts a blocked wait short."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Recheck


def _blocking_take(fd: int, timeout: float) -> bool:
    """Wait for the lock `fd` in the kernel for at most `timeout` seconds (a SIGALRM cuts the
    wait; the caller's handler and timer are put back). True if taken."""
    import fcntl

    old = signal.signal(signal.SIGALRM, _alarm)
    before = signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except _Recheck:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if before[0] > 0:  # a timer of the caller's: put it back
            signal.setitimer(signal.ITIMER_REAL, *before)
