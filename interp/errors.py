"""The one exception type the kit raises for a user's mistake.

A `UserError` carries a single line that names the problem and the fix. The CLI prints it
without a traceback and exits with status 2; library callers (notebooks) see an ordinary
exception. Everything else that goes wrong is a bug and keeps its traceback, but for a full
disk (`disk_full`), which the CLI also turns into one line.
"""

from __future__ import annotations

import errno

FULL = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Bad input from the user: a config key, a file, a run directory. One line, with the fix."""


def disk_full(e: BaseException) -> bool:
    """Whether `e` is a write that failed for want of space: an OSError with ENOSPC or EDQUOT,
    or the safetensors library's error that wraps one ("os error 28")."""
    if isinstance(e, OSError):
        return e.errno in FULL
    return type(e).__name__ == "SafetensorError" and (
        "os error 28" in str(e) or "No space left" in str(e) or "quota" in str(e).lower()
    )


def disk_full_line(e: BaseException) -> str:
    """One line for a full disk: which file (where known) and what to do."""
    where = getattr(e, "filename", None)
    return (
        f"the disk is full{f' (writing {where})' if where else ''}: nothing half-written was "
        "kept; free space there, then run the same command again (a training goes on from its "
        "last checkpoint with --resume, a study from its finished runs)"
    )
