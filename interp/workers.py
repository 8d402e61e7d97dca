"""How the kit starts worker processes (the study's runs on a process pool)."""

from __future__ import annotations

import sys
from multiprocessing import get_context
from multiprocessing.context import BaseContext


def worker_context(device: str = "cpu") -> BaseContext:
    """Forked on a Linux CPU (no re-import of torch and transformer-lens per worker, ~10 s each),
    spawned with CUDA (which cannot be forked) or elsewhere."""
    return get_context("fork" if device == "cpu" and sys.platform == "linux" else "spawn")
