"""Shared fixtures. One tiny run is trained per test session and shared (read-only) by every test
that needs a trained model; tests that write analyses copy it first (`tiny_run_copy`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[2] / "shared"
PAPER_DATA = SHARED / "datasets" / "reversal_curse_exp1"


@pytest.fixture(scope="session")
def tiny_config():
    from interp.config import load_config

    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_config) -> Path:
    """A trained, evaluated tiny run. Treat as read-only."""
    from interp.train import train_run

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train_run(tiny_config, out, progress=False)
    return out


@pytest.fixture()
def tiny_run_copy(tiny_run_dir, tmp_path) -> Path:
    """A private copy of the tiny run, for tests that write into the run directory."""
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_run_dir, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tiny_run_dir):
    """The tiny run loaded (config, model in eval mode, dataset)."""
    from interp.runs import load_run

    return load_run(tiny_run_dir)
