"""The study pipeline: every run the study needs, every instrument on each, figures and a report.

    config -> runs (objectives x seeds, cached by config hash) -> analyses -> figures -> report

Caching and restarts. A run lives in `OUT/runs/<objective>_s<seed>_<config hash>`: a finished run
(final weights and metrics) is reused, an unfinished one is resumed from its latest checkpoint
(bitwise the same as an uninterrupted run), and an analysis is reused only if its JSON exists
and records exactly the options the plan asks for, every field, defaults included
(`analysis_cached`): a result made with other options is run again, never reported as the
study's. Every file is written atomically, so a study killed at any point and started
again finishes with the same numbers and no corrupted files; a second invocation only redraws
the figures and the report.

The same `execute_run` is the unit of work of `interp sweep`, locally or on Slurm.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from interp.analysis import INSTRUMENTS, available_instruments  # noqa: F401 (re-exported)
from interp.analysis.options import Options
from interp.config import RunConfig, apply_overrides, from_dict, load_config
from interp.errors import UserError

OBJECTIVE_ORDER = ("causal", "reverse_entity", "reverse_token", "bico", "mlm_u")


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: a run preset, the objectives and seeds to train, the instruments.

    `scope` limits an instrument to some objectives (instruments it does not name run on every
    objective); `options` are instrument options that differ from their defaults;
    `objective_overrides` are config overrides for one objective's runs (applied before the
    study-wide `overrides`, which therefore win), e.g. more steps for a slower objective.
    """

    run_preset: str
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    instruments: tuple[str, ...]
    overrides: tuple[str, ...] = field(default_factory=tuple)
    scope: dict[str, tuple[str, ...]] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    objective_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    name: str = "default"
    own_report: bool = False  # report, figures and findings in OUT/<name>/ (the runs in OUT/runs)

    def report_dir(self, out: str | Path) -> Path:
        """Where the study writes its report, figures and findings: OUT itself, or OUT/<name>
        for a preset with findings of its own (so presets sharing OUT share its run cache but
        never each other's report, figures or findings)."""
        return Path(out) / self.name if self.own_report else Path(out)

    def configs(self) -> list[RunConfig]:
        """One config per objective x seed. Seed s trains world s with training seed s: the unit
        of replication is a (world, seed) pair, so runs differ in their people and item draws,
        not only in initialisation. An explicit `world.seed` override (in `overrides`) puts
        every run in that one world instead."""
        base = load_config(self.run_preset)
        return [
            apply_overrides(
                base,
                [
                    f"world.seed={s}",
                    *self.objective_overrides.get(o, ()),
                    *self.overrides,
                    f"train.objective={o}",
                    f"train.seed={s}",
                ],
            )
            for o in self.objectives
            for s in self.seeds
        ]

    def instruments_for(self, objective: str, seed: int | None = None) -> tuple[str, ...]:
        """The instruments a run of `objective` (and `seed`) gets. A scope entry names an
        objective (all its seeds) or one run as "objective:seed"."""

        def wanted(i: str) -> bool:
            sc = self.scope.get(i)
            return sc is None or objective in sc or f"{objective}:{seed}" in sc

        return tuple(i for i in self.instruments if wanted(i))


# The default study: the baseline and the two reverse-training mitigations (entity-preserving
# `reverse_entity` and token-level `reverse_token`, whose contrast shows that keeping entities
# whole matters), 3 seeds, each seed its own world. Every objective here reaches forward exact
# match 1.00 on training templates at the run preset's 800 steps, so the comparison is at matched
# forward accuracy. BICO and MLM-U need 1600 steps to match (see MATCHED_STEPS) and are in the
# `objectives` preset, which does not fit this study's 10-minute bar. Every instrument that
# compares objectives (behaviour, probes, update test) runs on every objective, and the
# per-model deep dives on the causal baseline (lens and patching on 3 seeds, dynamics on seed 0);
# selective prediction on it (3 seeds) and on reverse training (3 seeds).
STUDY_PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "run_preset": "default",
        "seeds": (0, 1, 2),
        "objectives": ("causal", "reverse_entity", "reverse_token"),
        "scope": {
            "lens": ("causal",),
            "patching": ("causal",),
            "dynamics": ("causal:0",),
            # every seed of reverse training: its accuracy is intermediate (default preset, seed
            # 0, training templates: forward 1.0, reversed 0.15 / 0.06 / 1.0 for n2d / d2n /
            # both), where AUROC is not trivially 1 (on held-out templates every objective is
            # near 0: 0.00-0.09), so selective prediction has something to rank
            "selective": ("causal", "reverse_entity"),
        },
        # Lighter than the CLI defaults, for time: 10 of the 20 new people are updated on in the
        # update test (all 20 serve as controls); patching uses 64 prompts per subset x
        # query and 3 noise draws. The lens fits the tuned lens too (held-out people).
        "options": {
            "lens": {"tuned": True},
            "update": {"n_facts": 10},
            "patching": {"max_prompts": 64, "noise_samples": 3},
        },
    },
    # A smoke run of the whole pipeline in about a minute on 2 CPU cores (bar: 90 s with one
    # job): the baseline and the mitigation that works, one seed each, every instrument, the
    # per-model deep dives on the causal run only, each sized down (patching on 8 prompts per
    # subset x query with one noise draw, the update test on 4 new people, self-evaluation
    # trained for at most 5 epochs). One seed is one run: the report shows the pipeline and
    # its plots, not evidence; BICO and MLM-U stay available with --objectives.
    "tiny": {
        "run_preset": "tiny",
        "seeds": (0,),
        "objectives": ("causal", "reverse_entity"),
        "scope": {
            "lens": ("causal",),
            "patching": ("causal",),
            "dynamics": ("causal",),
            "selective": ("causal",),
        },
        "options": {
            "lens": {"tuned": True, "tuned_steps": 100},
            "update": {"n_facts": 4},
            "patching": {"max_prompts": 8, "noise_samples": 1},
            "selective": {"max_epochs": 5},
        },
    },
}


# The objectives on equal footing (issue 15): every objective of the kit, `reverse_token` beside
# `reverse_entity`, each trained until its forward exact match on training templates reaches the
# causal baseline's (>= 0.95 on every subset), 3 seeds,
# the instruments that compare objectives (behaviour with native mode for BICO and MLM-U, probes,
# the update test). The default study leaves BICO and MLM-U out, for its time bar.
# Step budgets per objective (the others train the run preset's 800 steps). Measured with
# experiments/steps_to_match.py (default preset, forward exact match on training templates,
# lowest subset): at 1600 steps BICO 0.993 / 1.000 / 1.000 and MLM-U 0.998 / 0.998 / 1.000 on
# seeds 0 / 1 / 2 (71-107 s a run on a shared CPU; the default study's note found 50-94% at
# 1200); at 800 steps causal and reverse_token 1.000 on seed 0. Reversed exact match at these
# budgets (training templates, N2D / D2N, seeds 0-2): BICO 1.75-2.0% / 0.75-1.5% by causal
# decoding, 0-2% / 0% in native mode; MLM-U 0-0.25% / 0-0.75% causal, 0-1% / 0% native
# (Both, trained in both orders: 41-49% native vs 100% causal); reverse_token 0% / 0.75%.
MATCHED_STEPS: dict[str, int] = {"bico": 1600, "mlm_u": 1600}
STUDY_PRESETS["objectives"] = {
    "run_preset": "default",
    "seeds": (0, 1, 2),
    "objectives": OBJECTIVE_ORDER,
    "objective_overrides": {o: (f"train.steps={n}",) for o, n in MATCHED_STEPS.items()},
    "scope": {"lens": (), "patching": (), "dynamics": (), "selective": ()},
    "options": {"update": {"n_facts": 10}},
    "own_report": True,
}

# The identity bridge (Ma et al. 2026; interp.data.bridge): the causal baseline trained with one
# identity document per person, OCR form ("the <role> of the work of A is A") or the naive IDN
# form ("the name of A is A"), 3 seeds, behaviour (with the bridge's echo and shortcut test in
# metrics.json), probes and the update test. Compare with the default study's causal runs (same
# worlds and seeds: seed s trains world s). Measured (seed 0, 800 steps, OCR form): reversed
# exact match on training templates 0.0% for N2D and D2N, as the causal baseline's (0.0% /
# 0.25%); the identity as trained echoed 100% (n=300) and the shortcut set (another role, no fact
# behind it) 97.7% [95.3, 98.9]: at this scale the model learned to echo the name, not the
# relation. Ma et al. report about 0% -> about 50% on a 1B model.
_COMPARATIVE_ONLY = STUDY_PRESETS["objectives"]["scope"]
for _form in ("ocr", "idn"):
    STUDY_PRESETS[f"bridge_{_form}"] = {
        "run_preset": "default",
        "seeds": (0, 1, 2),
        "objectives": ("causal",),
        "overrides": (f"world.bridge={_form}",),
        "scope": _COMPARATIVE_ONLY,
        "options": {"update": {"n_facts": 10}},
        "own_report": True,
    }


# Kitouni et al. (2024)'s retrieval task (interp.data.retrieval): random key-value pairs in the
# three subsets, next-token prediction, token reversal (their "AR w/ reversed tokens"), BICO (a
# fixed 15% masking rate, as their MLM) and MLM-U, 3 seeds; behaviour only (the instruments read
# the fact world's attributes), with native mode for the masking objectives.
# Measured (experiments/steps_to_match.py, seed 0, 800 steps, training templates): causal
# forward 100%, backward 0% (n2d and d2n); MLM-U forward 100% by causal decoding, backward 0%
# by causal decoding and 0% in native mode (Both, trained in both orders: 64% native), and
# 4% / 9% (n2d / d2n) with the key masked in its own stored pair (native.infill_exact_match;
# the value masked: 57% / 66%). Kitouni et al. report MLM-U 100% / 100% forward / backward and
# next-token 0% backward: the next-token result is reproduced, the MLM-U one is not (at this
# budget, with the kit's variant: masked tokens read at t-1 through the causal head, half the
# batches next-token).
STUDY_PRESETS["retrieval"] = {
    "run_preset": "default",
    "seeds": (0, 1, 2),
    "objectives": ("causal", "reverse_token", "bico", "mlm_u"),
    "overrides": ("world.source=retrieval",),
    "scope": {i: () for i in ("lens", "patching", "probing", "update", "dynamics", "selective")},
    "own_report": True,
}


# Paper-grade, for one GPU (issue 19): every objective at matched forward accuracy (BICO and
# MLM-U at MATCHED_STEPS), 10 seeds (each its own world), every instrument that compares
# objectives on every objective, the deep dives (lens, patching, selective) on the baseline and
# on reverse training, dynamics on the baseline; patching on every prompt with 10 noise draws,
# the update test on all of a run's new people. 50 runs; its time on a GPU is unmeasured (no
# GPU was lent to the kit's development so far): `interp study --preset gpu --device cuda`.
# The storage study's GPU size is its own preset, `storage_gpu`.
STUDY_PRESETS["gpu"] = {
    "run_preset": "default",
    "seeds": tuple(range(10)),
    "objectives": OBJECTIVE_ORDER,
    "objective_overrides": {o: (f"train.steps={n}",) for o, n in MATCHED_STEPS.items()},
    "scope": {
        "lens": ("causal", "reverse_entity"),
        "patching": ("causal", "reverse_entity"),
        "dynamics": ("causal",),
        "selective": ("causal", "reverse_entity"),
    },
    "options": {
        "lens": {"tuned": True},
        "patching": {"max_prompts": 0, "noise_samples": 10},
    },
    "own_report": True,
}


def available_objectives() -> tuple[str, ...]:
    from interp.objectives import OBJECTIVES

    return tuple(o for o in OBJECTIVE_ORDER if o in OBJECTIVES)


def make_plan(
    preset: str = "default",
    overrides: list[str] | None = None,
    objectives: list[str] | None = None,
    seeds: list[int] | None = None,
    instruments: list[str] | None = None,
) -> StudyPlan:
    if preset not in STUDY_PRESETS:
        raise UserError(f"unknown study preset {preset!r}: use one of {sorted(STUDY_PRESETS)}")
    p = STUDY_PRESETS[preset]
    known_obj, known_ins = available_objectives(), available_instruments()
    for o in objectives or []:
        if o not in known_obj:
            raise UserError(f"unknown objective {o!r}: use one of {known_obj}")
    for i in instruments or []:
        if i not in known_ins:
            raise UserError(f"unknown instrument {i!r}: use one of {known_ins}")
    for name, values in p.get("options", {}).items():
        INSTRUMENTS[name].options(values)  # refused here, in one line, before anything is written
    default_obj = tuple(o for o in p.get("objectives", known_obj) if o in known_obj)
    return StudyPlan(
        run_preset=p["run_preset"],
        objectives=tuple(objectives or default_obj),
        seeds=tuple(seeds if seeds is not None else p["seeds"]),
        instruments=tuple(instruments or known_ins),
        overrides=(*p.get("overrides", ()), *(overrides or ())),
        scope=dict(p.get("scope", {})),
        options=dict(p.get("options", {})),
        objective_overrides=dict(p.get("objective_overrides", {})),
        name=preset,
        own_report=bool(p.get("own_report", False)),
    )


def run_name(cfg: RunConfig) -> str:
    return f"{cfg.train.objective}_s{cfg.train.seed}_{cfg.hash()}"


def analysis_cached(run_dir: Path, instrument: str, options: Options) -> bool:
    """Whether RUN_DIR/analysis/<instrument>.json exists (with its arrays) and was made with
    exactly `options`: every field, defaults included, so a result made with other options (a
    CLI call with --templates heldout, a notebook call) is never reported as the study's."""
    path = run_dir / "analysis" / f"{instrument}.json"
    if not path.is_file() or not path.with_suffix(".npz").is_file():
        return False
    try:
        saved = json.loads(path.read_text()).get("options")
    except json.JSONDecodeError:
        return False
    return bool(saved == options.resolved().to_json())


def execute_run(
    cfg_dict: dict[str, Any],
    run_dir: str,
    instruments: tuple[str, ...],
    device: str = "cpu",
    threads: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and run the instruments it lacks. Returns its status.

    `options` (instrument -> options) override the instruments' defaults. Module-level and
    argument-only so a process pool or a Slurm job can run it.
    """
    import torch

    from interp.runs import load_run
    from interp.train import train_run

    if threads:
        # Every thread pool, not only torch's: BLAS under numpy/scikit-learn (the probes) spinning
        # on cores the other job owns made the probes ~7x slower in a 2-job study.
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(threads)
    t0 = time.perf_counter()
    cfg = from_dict(cfg_dict)
    out = Path(run_dir)
    done = (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
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
    ran = []
    opts = {i: INSTRUMENTS[i].options((options or {}).get(i)) for i in instruments}
    todo = [i for i in instruments if not analysis_cached(out, i, opts[i])]
    if todo:
        run = load_run(out, device=device)
        for name in todo:
            INSTRUMENTS[name].run(run, opts[name], progress=False)
            ran.append(name)
    return {
        "run_dir": str(out),
        "trained": trained,
        "analyses": ran,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def worker_context(device: str = "cpu") -> BaseContext:
    """How the kit starts worker processes: forked on a Linux CPU (no re-import of torch and
    transformer-lens per worker, ~10 s each), spawned with CUDA (which cannot be forked) or
    elsewhere."""
    return get_context("fork" if device == "cpu" and sys.platform == "linux" else "spawn")


def execute_all(
    jobs_spec: list[tuple[dict[str, Any], str]],
    instruments: tuple[str, ...],
    jobs: int = 1,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "runs",
    per_run: list[tuple[str, ...]] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run `execute_run` over (config, run_dir) pairs on `jobs` local processes.

    `per_run` gives each run its own instruments (default: `instruments` for all). The runs
    expected to take longest (training steps and instruments) are submitted first, so the pool
    ends with short jobs. Workers start as `worker_context` says.
    """
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, jobs))
    todo = [
        (cfg, rd, (per_run[i] if per_run is not None else instruments))
        for i, (cfg, rd) in enumerate(jobs_spec)
    ]
    # longest first (stable): ~0.06 s per training step and ~15 s per instrument on one core
    todo.sort(key=lambda t: -(0.06 * t[0].get("train", {}).get("steps", 0) + 15 * len(t[2])))
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs_spec), desc=desc, disable=not progress, dynamic_ncols=True)
    if jobs <= 1:
        for cfg, rd, ins in todo:
            results.append(execute_run(cfg, rd, ins, device, threads, options))
            bar.update()
    else:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))  # read by the spawned workers' imports
        with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(device)) as pool:
            futs = [
                pool.submit(execute_run, cfg, rd, ins, device, threads, options)
                for cfg, rd, ins in todo
            ]
            for f in as_completed(futs):
                results.append(f.result())
                bar.update()
    bar.close()
    return results


def run_study(
    plan: StudyPlan,
    out: str | Path,
    *,
    jobs: int = 1,
    device: str = "cpu",
    figures_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the whole study into `out`; write figures and report.md / report.html, with the
    findings, into `plan.report_dir(out)` (`out`, or `out/<preset>` for a preset with its own
    findings), and the time the runs and analyses took into its timing.json
    (`interp.findings.record_timing`)."""
    from interp.config import check_device
    from interp.files import make_dir
    from interp.findings import record_timing
    from interp.report import write_report

    device = check_device(device)
    out = Path(out)
    t0 = time.perf_counter()
    spec, per_run = [], []
    for cfg in plan.configs():  # every config is validated before anything is written
        cfg = apply_overrides(cfg, [f"train.device={device}"])
        spec.append((cfg.to_dict(), str(out / "runs" / run_name(cfg))))
        per_run.append(plan.instruments_for(cfg.train.objective, cfg.train.seed))
    make_dir(out / "runs")
    scoped = "; ".join(
        f"{i} on {', '.join(o)}" for i, o in plan.scope.items() if i in plan.instruments
    )
    log(
        f"study: {len(spec)} runs ({', '.join(plan.objectives)} x seeds {list(plan.seeds)}), "
        f"instruments {', '.join(plan.instruments)}{f' ({scoped})' if scoped else ''}, "
        f"{jobs} job(s) on {device}"
    )
    results = execute_all(
        spec,
        plan.instruments,
        jobs=jobs,
        device=device,
        progress=progress,
        per_run=per_run,
        options=plan.options,
    )
    trained = sum(r["trained"] for r in results)
    analysed = sum(len(r["analyses"]) for r in results)
    log(f"trained {trained} run(s), ran {analysed} analyse(s), reused the rest")
    report_dir = plan.report_dir(out)
    record_timing(
        report_dir, plan, time.perf_counter() - t0, trained=trained, analysed=analysed,
        jobs=jobs, device=device, runs=len(spec),
    )  # fmt: skip
    report = write_report(
        report_dir,
        [Path(rd) for _, rd in spec],
        plan,
        figures_dir=figures_dir,
        wall_seconds=time.perf_counter() - t0,
        jobs=jobs,
    )
    log(f"report: {report}")
    return report
