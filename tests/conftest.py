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
def tiny_dataset(tiny_config):
    """The tiny preset's dataset (read-only)."""
    from interp.runs import build_dataset

    return build_dataset(tiny_config)


@pytest.fixture(scope="session")
def fresh_model(tiny_config, tiny_dataset):
    """An untrained model of the tiny preset, in eval mode (read-only)."""
    from interp.model import build_model

    model = build_model(tiny_config.model, tiny_dataset.d_vocab, seed=0)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_run(tiny_run_dir):
    """The tiny run loaded (config, model in eval mode, dataset)."""
    from interp.runs import load_run

    return load_run(tiny_run_dir)


def _check_typed_summary(run_dir, instrument, absent=()):
    """The instrument's typed summary matches what `run_analysis` wrote: every declared number
    (but those in `absent`, which this result must lack) is a number of the JSON's summary on
    disk and the typed field holds exactly it (a float, or None for null); the declared numbers
    write back to the same keys and values; the mapping view is the whole JSON summary. A number
    renamed, or missing from the JSON, fails here."""
    import json
    import math

    from interp.analysis import INSTRUMENTS

    ins = INSTRUMENTS[instrument]
    cls = ins.summary_type
    declared = [d.key for d in cls.declared()]
    assert declared, f"{cls.__name__} declares no number"
    on_disk = json.loads((run_dir / "analysis" / f"{instrument}.json").read_text())["summary"]
    s = ins.read(run_dir, arrays=False).summary
    assert type(s) is cls, (type(s), cls)
    absent = tuple(absent)  # keys, or prefixes of a section's keys
    missing = [k for k in declared if k not in on_disk and not k.startswith(absent)]
    assert not missing, f"{cls.__name__} numbers absent from {instrument}.json's summary: {missing}"
    unexpected = [k for k in on_disk if absent and k in declared and k.startswith(absent)]
    assert not unexpected, f"expected absent here, but written: {unexpected}"
    flat = s.flat()
    for k in declared:
        v = s.value(k)
        assert v == on_disk.get(k) and (v is None or isinstance(v, float)), (k, v, on_disk.get(k))
        assert v is None or math.isfinite(v), (k, v)
        assert (k in flat) == (on_disk.get(k) is not None), k
    assert dict(s) == on_disk
    return s


@pytest.fixture()
def check_summary():
    """`check_summary(run_dir, instrument, absent=())`: see `_check_typed_summary`."""
    return _check_typed_summary


class Fakes:
    """Saved results with known contents, for tests of what reads them (no training)."""

    @staticmethod
    def evaluation(
        run,
        *,
        rev_shift: float = 0.0,
        rev_hit: float = 0.0,
        fwd_hit: float = 0.95,
        people: int = 12,
        kinds: tuple[str, ...] = ("train",),
        causal: float | None = None,
        learned: bool | None = None,
        seed: int | None = None,
        matched: float | None = None,
    ):
        """`run` (an `interp.findings.collect.StudyRun`) with its config.json, metrics.json and
        eval_logprobs.npz: `people` per subset, 2 templates per kind; forward and Both
        log-prob difference +2, reversed `rev_shift` (+ noise); exact match `fwd_hit` forward,
        `rev_hit` reversed (the objective's own mode), `causal` reversed by causal decoding
        beside it; with `learned` the convergence criterion's verdict (and an infill of 1.0 or
        0.5); with `matched` a role-matched control, reversed difference `matched` (+ noise, its
        own generator, so the other arrays are the same with or without it)."""
        import json

        import numpy as np

        cfg = run.spec.config
        rng = np.random.default_rng(cfg.train.seed if seed is None else seed)
        rows = []
        for si, s in enumerate(("n2d", "d2n", "both")):
            for d in ("same", "reverse"):
                for k in kinds:
                    for person in range(people):
                        for _ in range(2):
                            fwd = d == "same" or s == "both"
                            c = rng.normal(-5, 1)
                            diff = 2.0 if fwd else rev_shift
                            hit = rng.random() < (fwd_hit if fwd else rev_hit)
                            nat = rng.random() < (fwd_hit if fwd else (causal or 0.0))
                            r = c - diff + rng.normal(0, 1)
                            rows.append((s, d, k, 100 * si + person, c, r, hit, nat))
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "config.json").write_text(json.dumps(cfg.to_dict()))
        s, d, k, p, c, r, h, n = zip(*rows, strict=True)
        arrays = {
            "subset": np.array(s), "direction": np.array(d), "templates": np.array(k),
            "person": np.array(p), "correct_logprob": np.array(c), "random_logprob": np.array(r),
            "exact_match": np.array(h),
        }  # fmt: skip
        if causal is not None:
            arrays["causal_exact_match"] = np.array(n)
        if matched is not None:
            fwd = (arrays["direction"] == "same") | (arrays["subset"] == "both")
            noise = np.random.default_rng(1000 + cfg.train.seed).normal(0, 1, len(rows))
            arrays["role_matched_logprob"] = (
                arrays["correct_logprob"] - np.where(fwd, 2.0, matched) + noise
            )
        np.savez(run.path / "eval_logprobs.npz", **arrays)
        metrics: dict = {"exact_match": {}}
        if learned is not None:
            fill = {f"{s}_{d}": 1.0 if learned else 0.5 for s in ("n2d", "both")
                    for d in ("same", "reverse")}  # fmt: skip
            metrics["learned"] = {"met": learned, "bar": 0.95, "forward": {}, "infill": fill,
                                  "criterion": "the fake's"}  # fmt: skip
        (run.path / "metrics.json").write_text(json.dumps(metrics))
        return run.path

    @staticmethod
    def summary(run, instrument: str, numbers: dict) -> None:
        """`instrument`'s result on `run` holding only summary `numbers`."""
        from interp.results import Result, write_result

        write_result(run.path, Result(instrument, {"options": {}, "summary": numbers}, {}))

    @staticmethod
    def study(tmp_path, preset: str = "tiny", **plan):
        """The Study of a preset's plan in tmp_path (nothing written yet)."""
        from interp.findings.collect import Study
        from interp.presets import make_plan

        return Study.of(make_plan(preset, **plan), tmp_path)


@pytest.fixture(scope="session")
def fakes():
    return Fakes


@pytest.fixture(scope="module")
def quick_bootstrap():
    """Fewer bootstrap replicates (400, not 4000) for tests of how findings are judged and
    rendered on fake data, where the bootstrap's precision is not the point."""
    import functools

    from interp import stats
    from interp.analysis import behaviour

    mp = pytest.MonkeyPatch()
    quick = functools.partial(stats.hierarchical_bootstrap, n_boot=400)
    mp.setattr(stats, "hierarchical_bootstrap", quick)
    mp.setattr(behaviour, "hierarchical_bootstrap", quick)
    yield
    mp.undo()


@pytest.fixture()
def refused(capsys):
    """`refused(argv, needle)`: `interp ARGV` fails with exit status 2 and one line on stderr
    naming `needle`, no traceback; returns the line."""
    from interp.cli import main

    def check(argv: list[str], needle: str) -> str:
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, f"exit status {rc} for {argv}, stderr: {err}"
        assert "Traceback" not in err
        assert len(err.splitlines()) == 1, f"expected one line, got: {err!r}"
        assert needle in err, f"{needle!r} not in {err!r}"
        return err

    return check
