"""The study pipeline, one for every preset: the runs a plan needs, its instruments on each,
then figures, a report and the findings.

    plan (interp.presets) -> runs (cached by config hash) -> analyses -> report and findings

Caching and restarts. A run lives in `OUT/runs/<labels_><objective>_s<seed>_<config hash>`: a
finished run (final weights and metrics) is reused, an unfinished one is resumed from its latest
checkpoint (bitwise the same as an uninterrupted run), and an analysis is reused only if its
JSON exists and records exactly the options the plan asks for, every field, defaults included
(`Instrument.cached`): a result made with other options is run again, never reported as the
study's. Every file is written atomically, so a study killed at any point and started again
finishes with the same numbers and no corrupted files; a second invocation only redraws the
figures and the report.

The same `execute_run` is the unit of work of `interp sweep`, locally or on Slurm.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from interp.analysis import INSTRUMENTS
from interp.analysis.behaviour import FILES as EVALUATION_FILES
from interp.config import check_device, from_dict
from interp.errors import UserError
from interp.files import make_dir, reads_back, write_json
from interp.findings.collect import Study
from interp.findings.provenance import record_timing, study_sha256
from interp.plan import Plan
from interp.report import write_report
from interp.runs import load_run
from interp.train import train_run
from interp.workers import worker_context

# Work estimate of a run, to start the longest first: ~0.06 s per training step and ~15 s per
# instrument on one core.
SECONDS_PER_STEP, SECONDS_PER_INSTRUMENT = 0.06, 15.0


def execute_run(
    cfg_dict: dict[str, Any],
    run_dir: str,
    instruments: Mapping[str, dict[str, Any]],
    device: str = "cpu",
    threads: int = 0,
) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and run the instruments it lacks. Returns its status.

    `instruments` maps each instrument to its options (field -> value; missing fields take the
    defaults). Module-level and argument-only so a process pool or a Slurm job can run it.
    """
    if threads:
        # Every thread pool, not only torch's: BLAS under numpy/scikit-learn (the probes) spinning
        # on cores the other job owns made the probes ~7x slower in a 2-job study.
        torch.set_num_threads(threads)
        threadpool_limits(threads)
    t0 = time.perf_counter()
    cfg = from_dict(cfg_dict)
    out = Path(run_dir)
    done = (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    if done:
        done = _whole_or_redo(out, cfg_dict)
    trained = False
    if not done:
        resume = out.is_dir() and (out / "config.json").is_file()
        if out.is_dir() and not resume and any(out.iterdir()):
            raise UserError(
                f"{out} is in the study's run cache but is not a run (no config.json): "
                "move it out of the way, then start the study again"
            )
        # resume finishes whatever stage a kill interrupted (training, final weights, evaluation)
        # (on this study's device, which may differ from the one that started the run)
        train_run(
            None if resume else cfg, out, resume=resume, progress=False, device=cfg.train.device
        )
        trained = True
    opts = {name: INSTRUMENTS[name].options(values) for name, values in instruments.items()}
    todo = [name for name, o in opts.items() if not INSTRUMENTS[name].cached(out, o)]
    if todo:
        run = load_run(out, device=device)
        for name in todo:
            INSTRUMENTS[name].run(run, opts[name], progress=False)
    return {
        "run_dir": str(out),
        "trained": trained,
        "analyses": todo,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _whole_or_redo(out: Path, cfg_dict: dict[str, Any]) -> bool:
    """Whether a finished run in the cache reads back whole. A damaged config.json is written
    again from the plan (the run's cache name carries its hash); damaged weights take the
    evaluation with them and the run is resumed from its checkpoints; a damaged evaluation file
    is evaluated again. One line on stderr names each damaged file."""
    config = out / "config.json"
    if not reads_back(config):
        print(f"{config}: does not read back whole; written again from the plan", file=sys.stderr)
        write_json(config, cfg_dict)
    damaged = [p for p in (out / "model.safetensors", *(out / f for f in EVALUATION_FILES))
               if p.exists() and not reads_back(p)]  # fmt: skip
    if not damaged:
        return True
    if out / "model.safetensors" in damaged:
        damaged = [out / "model.safetensors", *(out / f for f in EVALUATION_FILES)]
    for p in damaged:
        if p.exists():
            print(f"{p}: does not read back whole; redoing it", file=sys.stderr)
            p.unlink()
    return False


Job = tuple[dict[str, Any], str, dict[str, dict[str, Any]]]  # (config, run dir, instruments)


def execute_all(
    jobs_spec: list[Job],
    jobs: int = 1,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "runs",
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run `execute_run` over (config, run_dir, instruments) on `jobs` local processes, each
    with `threads` torch threads (default: the cores shared out among the jobs; the thread count
    decides a run's bits on the CPU, so a run trained with another count is another run's bits).

    The runs expected to take longest (training steps and instruments) are submitted first, so
    the pool ends with short jobs. Workers start as `interp.workers.worker_context` says.
    """
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // max(1, jobs))
    todo = sorted(
        jobs_spec,
        key=lambda t: (
            -(
                SECONDS_PER_STEP * t[0].get("train", {}).get("steps", 0)
                + SECONDS_PER_INSTRUMENT * len(t[2])
            )
        ),
    )  # longest first (stable)
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc=desc, disable=not progress, dynamic_ncols=True)
    if jobs <= 1:
        for cfg, rd, ins in todo:
            results.append(execute_run(cfg, rd, ins, device, threads))
            bar.update()
    else:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))  # read by the spawned workers' imports
        with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(device)) as pool:
            futs = [
                pool.submit(execute_run, cfg, rd, ins, device, threads) for cfg, rd, ins in todo
            ]
            for f in as_completed(futs):
                results.append(f.result())
                bar.update()
    bar.close()
    return results


def plan_jobs(plan: Plan, out: Path, device: str) -> list[Job]:
    """The plan's runs as `execute_all` jobs on `device` (every config validated first)."""
    jobs = []
    for spec in plan.runs():
        cfg = spec.config.to_dict()
        cfg["train"]["device"] = device
        opts = {name: o.to_json() for name, o in spec.options.items()}
        jobs.append((from_dict(cfg).to_dict(), str(out / "runs" / spec.name), opts))
    return jobs


def run_study(
    plan: Plan,
    out: str | Path,
    *,
    jobs: int = 1,
    device: str = "cpu",
    figures_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> Path:
    """Run the whole study into `out` (runs in OUT/runs, shared by every preset); write the
    figures, report.md and the findings into `plan.report_dir(out)` (`out`, or `out/<preset>`),
    with the time the runs and analyses took in its timing.json; with `figures_dir`, copy the
    figures, report and findings there. `threads`: torch threads per job (default: the cores
    shared out among the jobs)."""
    device = check_device(device)
    out = Path(out)
    t0 = time.perf_counter()
    spec = plan_jobs(plan, out, device)
    if figures_dir is not None:  # found now, not after the whole study has run
        make_dir(Path(figures_dir), "--figures-dir")
    make_dir(out / "runs")
    used = {n: u.on for n, u in plan.instruments.items()}
    scoped = "; ".join(f"{i} on {', '.join(on)}" for i, on in used.items() if on)
    log(
        f"study {plan.name}: {len(spec)} runs ({', '.join(plan.objectives)} x seeds "
        f"{list(plan.seeds)}{''.join(f' x {a.name}s' for a in plan.preset.axes)}), instruments "
        f"{', '.join(used) or 'behaviour only'}{f' ({scoped})' if scoped else ''}, "
        f"{jobs} job(s) on {device}"
    )
    results = execute_all(spec, jobs=jobs, device=device, progress=progress, threads=threads)
    trained = sum(r["trained"] for r in results)
    analysed = sum(len(r["analyses"]) for r in results)
    log(f"trained {trained} run(s), ran {analysed} analyse(s), reused the rest")
    report_dir = plan.report_dir(out)
    record_timing(
        report_dir, study_sha256(plan), time.perf_counter() - t0, trained=trained,
        analysed=analysed, jobs=jobs, device=device, runs=len(spec),
    )  # fmt: skip
    report = write_report(
        Study.of(plan, out), report_dir, figures_dir=figures_dir, progress=progress, log=log
    )
    log(f"report: {report}")
    return report
