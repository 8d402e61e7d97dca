"""The study pipeline and sweeps: cached runs, restart after a kill, report with intervals,
and the sweep through submitit's local executor (the Slurm code path, run locally)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from interp.analysis import INSTRUMENTS
from interp.analysis.probing import ProbingOptions
from interp.config import apply_overrides, load_config
from interp.plan import run_name
from interp.presets import make_plan
from interp.study import execute_run, run_study


def _seed_run(tiny_run_dir: Path, runs: Path) -> Path:
    """Place the session's tiny run where the study expects it (same config, same hash)."""
    cfg = apply_overrides(load_config("tiny"), ["train.objective=causal", "train.seed=0"])
    dst = runs / run_name(cfg)
    shutil.copytree(tiny_run_dir, dst)
    shutil.rmtree(dst / "analysis", ignore_errors=True)
    return dst


def test_study_caches_and_restarts_to_same_numbers(tiny_run_dir, tmp_path, quick_bootstrap, capsys):
    out = tmp_path / "study"
    run = _seed_run(tiny_run_dir, out / "runs")
    plan = make_plan("tiny", objectives=["causal"], seeds=[0], instruments=["probing"])
    report = run_study(plan, out, jobs=1, device="cpu", progress=False, log=lambda s: None)
    text = report.read_text()
    assert "(1 run)" in text and "probe_a_to_b_n2d_best" in text, text[:500]
    figures = [line for line in text.splitlines() if line.startswith("![")]
    assert len(figures) >= 2 and all(
        (report.parent / line.split("](")[1][:-1]).is_file() for line in figures
    ), figures
    first = json.loads((run / "analysis" / "probing.json").read_text())["summary"]
    # a second invocation reuses everything
    mtime = (run / "analysis" / "probing.json").stat().st_mtime_ns
    status = execute_run(plan.runs()[0].config.to_dict(), str(run), {"probing": {}})
    assert not status["trained"] and not status["analyses"], status
    assert (run / "analysis" / "probing.json").stat().st_mtime_ns == mtime
    # a study killed after training but before its analysis: rerun gives the same numbers
    (run / "analysis" / "probing.json").unlink()
    status = execute_run(plan.runs()[0].config.to_dict(), str(run), {"probing": {}})
    assert status["analyses"] == ["probing"], status
    again = json.loads((run / "analysis" / "probing.json").read_text())["summary"]
    assert again == first
    # a damaged result (a JSON that is not an object, a truncated npz) is not reused: the study
    # redoes it as it redid the deleted one above, with one line naming the file
    probing, opts = INSTRUMENTS["probing"], ProbingOptions()
    for damaged, text in (("probing.json", b"[]"), ("probing.npz", None)):
        path = run / "analysis" / damaged
        saved = path.read_bytes()
        path.write_bytes(saved[:100] if text is None else text)
        assert not probing.cached(run, opts), damaged
        assert f"{path}: does not read back whole" in capsys.readouterr().err, damaged
        path.write_bytes(saved)
    assert probing.cached(run, opts)


def test_study_resumes_a_run_killed_mid_training(tmp_path, capsys):
    cfg = apply_overrides(load_config("tiny"), ["train.steps=60", "train.checkpoint_every=20"])
    full = tmp_path / "full"
    execute_run(cfg.to_dict(), str(full), {})
    killed = tmp_path / "killed"
    execute_run(cfg.to_dict(), str(killed), {})
    for p in ("model.safetensors", "metrics.json", "eval_logprobs.npz"):
        (killed / p).unlink()
    shutil.rmtree(killed / "checkpoints" / "step_000060")
    status = execute_run(cfg.to_dict(), str(killed), {})
    assert status["trained"]
    assert (full / "model.safetensors").read_bytes() == (killed / "model.safetensors").read_bytes()
    assert (full / "metrics.json").read_text() == (killed / "metrics.json").read_text()
    # a cache entry is reused only when it reads back whole: each damaged file is redone, with
    # one line naming it, to the same bytes
    for damaged in ("model.safetensors", "metrics.json", "eval_logprobs.npz", "config.json"):
        path = killed / damaged
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        status = execute_run(cfg.to_dict(), str(killed), {})
        err = capsys.readouterr().err
        assert f"{path}: does not read back whole" in err, (damaged, err)
        assert status["trained"] == (damaged != "config.json"), (damaged, status)
        for f in ("model.safetensors", "metrics.json", "eval_logprobs.npz"):
            assert (full / f).read_bytes() == (killed / f).read_bytes(), (damaged, f)
        assert json.loads((killed / "config.json").read_text()) == cfg.to_dict()


def test_sweep_through_submitit_local_executor(tiny_run_dir, tmp_path):
    """The Slurm code path, run by submitit's local executor: the cell is the tiny preset's own
    config, whose trained run is the session's, so the job loads it and probes it."""
    from interp.sweep import load_grid, run_sweep

    out = tmp_path / "sweep"
    run = _seed_run(tiny_run_dir, out / "runs")
    wd = load_config("tiny").train.weight_decay
    grid = load_grid(
        None, preset="tiny", seeds=[0], objectives=["causal"], weight_decay=[wd],
        instruments=["probing"],
    )  # fmt: skip
    table = run_sweep(grid, out, executor="submitit-local", progress=False)
    assert (run / "analysis" / "probing.json").is_file(), "the job did not probe the run"
    rows = json.loads((out / "sweep.json").read_text())
    assert len(rows) == 1 and rows[0]["weight_decay"] == wd and rows[0]["n_seeds"] == 1, rows
    assert 0 <= rows[0]["em_n2d_same_train"] <= 1 and "probe_a_to_b_n2d_best" in rows[0], rows
    assert table.is_file() and (out / "sweep.png").is_file()
    assert any((out / "submitit").iterdir()), "submitit wrote no job folder"


def test_sweep_aggregates_each_cell_over_its_seeds(tmp_path):
    from interp.sweep import aggregate

    cells, runs = [], []
    for wd, rate in ((0.0, 0.9), (0.1, 0.5)):
        for seed in (0, 1):
            d = tmp_path / f"wd{wd}_s{seed}"
            d.mkdir()
            em = {"n2d": {"same": {"train": rate + 0.02 * seed}, "reverse": {"train": 0.0}}}
            (d / "metrics.json").write_text(json.dumps({"exact_match": em}))
            cells.append(({"seeds": seed, "weight_decay": wd}, {}))
            runs.append(d)
    aggregate(cells, runs, tmp_path)
    rows = {r["weight_decay"]: r for r in json.loads((tmp_path / "sweep.json").read_text())}
    assert set(rows) == {0.0, 0.1} and all(r["n_seeds"] == 2 for r in rows.values()), rows
    r = rows[0.0]
    assert r["em_n2d_same_train"] == pytest.approx(0.91), r
    assert r["em_n2d_same_train_lo"] < 0.91 < r["em_n2d_same_train_hi"], r
    assert (tmp_path / "sweep.csv").is_file() and (tmp_path / "sweep.png").is_file()
