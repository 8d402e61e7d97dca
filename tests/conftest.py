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


def _check_typed_summary(run_dir, instrument, absent=()):
    """The instrument's typed summary matches what `run_analysis` wrote: every headline is a
    field; every field (but those in `absent`, which this result must lack) names a number of the
    JSON's summary on disk and holds exactly it (a float, or None for null); the mapping view is
    the whole JSON summary. A field renamed, or missing from the JSON, fails here."""
    import json
    import math

    from interp.analysis import INSTRUMENTS
    from interp.results import read_result

    ins = INSTRUMENTS[instrument]
    cls = ins.summary_type()
    names = cls.field_names()
    assert names, f"{cls.__name__} has no fields"
    not_fields = [h for h in ins.headlines if h not in names]
    assert not not_fields, (
        f"headlines of {instrument} that are not {cls.__name__} fields: {not_fields}"
    )
    on_disk = json.loads((run_dir / "analysis" / f"{instrument}.json").read_text())["summary"]
    s = read_result(run_dir, instrument, arrays=False).summary
    assert type(s) is cls, (type(s), cls)
    missing = [n for n in names if n not in on_disk and n not in absent]
    assert not missing, f"{cls.__name__} fields absent from {instrument}.json's summary: {missing}"
    unexpected = [n for n in absent if n in on_disk]
    assert not unexpected, f"expected absent here, but written: {unexpected}"
    for n in names:
        v = getattr(s, n)
        assert v == on_disk.get(n) and (v is None or isinstance(v, float)), (n, v, on_disk.get(n))
        assert v is None or math.isfinite(v), (n, v)
        assert cls.__dataclass_fields__[n].metadata["help"], f"{cls.__name__}.{n} has no help"
        assert n in (cls.__doc__ or ""), f"{n} is not in {cls.__name__}'s docstring"
    assert dict(s) == on_disk
    return s


@pytest.fixture()
def check_summary():
    """`check_summary(run_dir, instrument, absent=())`: see `_check_typed_summary`."""
    return _check_typed_summary
