"""The study's multi-process path (`interp study --jobs 2`): runs trained and analysed in worker
processes give the numbers the same runs give in one process."""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from safetensors.torch import load_file
from threadpoolctl import threadpool_limits

import interp.study as study
from interp.presets import make_plan
from interp.study import execute_run


class CountingPool(ProcessPoolExecutor):
    """The study's process pool, counting what it is given (the path under test is the pool)."""

    submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        CountingPool.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_study_with_two_jobs_matches_one_process(tmp_path, monkeypatch):
    """Two runs trained and probed in the pool's worker processes (one thread each) give the
    bytes and numbers `execute_run` gives in this process at the same thread count.

    (At another thread count the weights differ in the last bits: CPU reductions split work
    by thread, so "same seed, same bits" holds for a fixed thread count.)"""
    plan = make_plan(
        "tiny",
        overrides=["train.steps=20", "train.checkpoint_every=0", "train.eval_every=0"],
        objectives=["causal"],
        seeds=[0, 1],
        instruments=["probing"],
    )
    monkeypatch.setattr(study, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(study.os, "cpu_count", lambda: 2)  # --jobs 2 -> one thread per worker
    t0 = time.perf_counter()
    study.execute_all(study.plan_jobs(plan, tmp_path / "two", "cpu"), jobs=2, progress=False)
    wall_two = time.perf_counter() - t0
    assert CountingPool.submitted == 2, f"{CountingPool.submitted} runs went to the pool, not 2"
    threads = torch.get_num_threads()
    try:
        with threadpool_limits(limits=1):  # undone on exit, with execute_run's own limit
            for spec in plan.runs():
                ref = tmp_path / "one" / spec.name
                opts = {n: o.to_json() for n, o in spec.options.items()}
                execute_run(spec.config.to_dict(), str(ref), opts, "cpu", 1)
    finally:
        torch.set_num_threads(threads)
    for spec in plan.runs():
        name = spec.name
        two, one = tmp_path / "two" / "runs" / name, tmp_path / "one" / name
        wa, wb = (
            load_file(str(two / "model.safetensors")),
            load_file(str(one / "model.safetensors")),
        )
        diffs = {k: float((wa[k] - wb[k]).abs().max()) for k in wa if not torch.equal(wa[k], wb[k])}
        assert not diffs, f"{name}: weights trained in a worker differ from in-process: {diffs}"
        assert (two / "metrics.json").read_text() == (one / "metrics.json").read_text(), name
        s2 = json.loads((two / "analysis" / "probing.json").read_text())["summary"]
        s1 = json.loads((one / "analysis" / "probing.json").read_text())["summary"]
        diff = {k: (s2[k], s1[k]) for k in s1 if s2.get(k) != s1[k]}
        assert not diff, f"{name}: probing summary differs between a worker and in-process: {diff}"
    print(f"--jobs 2 study: {wall_two:.1f} s")


def test_threads_per_job_are_the_users_choice(tmp_path, refused):
    """`interp study --threads N` trains every run with N torch threads (the marker records
    it); the default shares the cores out among the jobs."""
    plan = make_plan(
        "tiny", overrides=["train.steps=4", "train.checkpoint_every=0", "train.eval_every=0"],
        objectives=["causal"], seeds=[0], instruments=[],
    )  # fmt: skip
    study.execute_all(study.plan_jobs(plan, tmp_path, "cpu"), threads=1, progress=False)
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "interp_run.json").read_text())["torch_threads"] == 1
    refused(["study", "--preset", "tiny", "--out", str(tmp_path / "x"), "--threads", "0"],
            "--threads must be from 1")  # fmt: skip
