"""`interp study --preset storage`: where a fact is stored, against knowledge augmentation.

    biography world x augmentation levels x objectives x seeds -> runs -> storage probes
    -> figures/storage.png, figures/storage_pprobe.png -> storage_report.md

The question (issue 14, Allen-Zhu & Li Part 3.1/3.2): with one wording per person a model
memorises facts "along the sentence" and the attributes are not decodable at the name; with
knowledge augmentation (several biographies per person, permuted sentences, the full name in
every sentence) they are, and QA extracts them for people never questioned in training; the
reverse (the person from the attribute) stays unreadable and inverse search stays ~0% under the
causal objective, and should not under reverse training or MLM-U. Each run is one (world, seed)
pair (seed s trains world s, as in `interp.study`); the probes and extraction of each run come
from `interp.analysis.storage`. Runs and analyses are cached in OUT/runs as in `interp.study`
(a finished run is reused, an analysis only if made with the same options).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.config import RunConfig, apply_overrides, load_config
from interp.errors import UserError

# Augmentation levels: name -> world overrides. "plain" is bioS single (one biography, fixed
# order, the name once); "augmented" is Part 3.1's multi5 + permute + fullname.
LEVELS: dict[str, tuple[str, ...]] = {
    "plain": ("world.bio_multiplicity=1", "world.bio_permute=0", "world.bio_fullname=0"),
    "augmented": ("world.bio_multiplicity=5", "world.bio_permute=1", "world.bio_fullname=1"),
}

# The paper's numbers beside which the report prints the kit's (Part 3.1 / 3.2, their models).
PAPER_TARGETS = {
    "plain": "Q-probe at the name near chance; extraction on unseen people low",
    "augmented": "Q-probe near-perfect (target here >= 0.8); extraction ~96% (target >= 0.8)",
    "inverse": "inverse search ~0% in every regime under next-token training (Part 3.2)",
}


@dataclass(frozen=True)
class StoragePlan:
    """What the storage study runs: a run preset with the biography world, augmentation levels,
    objectives, seeds, and the storage probes' options."""

    run_preset: str
    overrides: tuple[str, ...]
    levels: tuple[str, ...]
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    objective_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def configs(self) -> list[tuple[str, RunConfig]]:
        """(level, config) per level x objective x seed; seed s trains world s."""
        base = load_config(self.run_preset)
        return [
            (
                level,
                apply_overrides(
                    base,
                    [
                        *self.overrides,
                        *LEVELS[level],
                        f"world.seed={s}",
                        *self.objective_overrides.get(o, ()),
                        f"train.objective={o}",
                        f"train.seed={s}",
                    ],
                ),
            )
            for level in self.levels
            for o in self.objectives
            for s in self.seeds
        ]


_WORLD = ("world.source=biography", "train.eval_every=0")
STORAGE_PRESETS: dict[str, dict[str, Any]] = {
    # 100 people per subset (200 people: a best-layer accuracy near 0.9 has SE ~0.02) on the
    # default 4-layer d_model 64 GPT, 1500 steps (~64 epochs of the augmented documents, ~137 of
    # the plain ones). Measured on a shared 2-core machine (load 3-5), one causal run: plain
    # 187 s training + 163 s probes, augmented 369 s + 266 s; six runs on 2 jobs extrapolate to
    # ~17 min at the plain run's speed and ~32 min at the augmented one's (not measured whole).
    # The probes' cost is mostly the nested CV (--Cs, --inner-folds) and the null
    # (--permutations). The report's timing line gives a study's own wall time.
    "storage": {
        "run_preset": "default",
        "overrides": (
            *_WORLD,
            "world.n_people_per_subset=100",
            "model.n_ctx=48",
            "train.steps=1500",
        ),
        "levels": ("plain", "augmented"),
        "objectives": ("causal", "reverse_entity", "mlm_u"),
        "seeds": (0,),
        "options": {"permutations": 100},
    },
    # The pipeline end to end in about a minute: tiny model, few steps, few permutations. Its
    # numbers are not evidence.
    "storage_tiny": {
        "run_preset": "tiny",
        "overrides": (*_WORLD, "world.n_people_per_subset=8", "model.n_ctx=48", "train.steps=40"),
        "levels": ("plain", "augmented"),
        "objectives": ("causal",),
        "seeds": (0,),
        "options": {"folds": 2, "inner_folds": 2, "Cs": (1.0,), "permutations": 5},
    },
}


def make_storage_plan(
    preset: str = "storage",
    overrides: list[str] | None = None,
    objectives: list[str] | None = None,
    seeds: list[int] | None = None,
) -> StoragePlan:
    """The plan of a storage preset, with the CLI's `--set`, `--objectives` and `--seeds`."""
    from interp.analysis.storage import StorageOptions
    from interp.study import available_objectives

    if preset not in STORAGE_PRESETS:
        raise UserError(f"unknown storage preset {preset!r}: use one of {sorted(STORAGE_PRESETS)}")
    p = STORAGE_PRESETS[preset]
    for o in objectives or []:
        if o not in available_objectives():
            raise UserError(f"unknown objective {o!r}: use one of {available_objectives()}")
    StorageOptions.from_dict(p["options"])  # refused here, before anything is written
    plan = StoragePlan(
        run_preset=p["run_preset"],
        overrides=(*p["overrides"], *(overrides or ())),
        levels=p["levels"],
        objectives=tuple(objectives or p["objectives"]),
        seeds=tuple(seeds if seeds is not None else p["seeds"]),
        options=dict(p["options"]),
    )
    plan.configs()  # every config validated (a bad --set is one line, nothing written)
    return plan


def storage_job(
    cfg_dict: dict[str, Any],
    run_dir: str,
    device: str,
    threads: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Train (or reuse) one run and run the storage probes unless cached with these options."""
    from interp.analysis import storage
    from interp.runs import load_run
    from interp.study import analysis_cached, execute_run

    t0 = time.perf_counter()
    status = execute_run(cfg_dict, run_dir, (), device, threads)
    opts = storage.StorageOptions.from_dict(options)
    if not analysis_cached(Path(run_dir), storage.NAME, opts):
        storage.run_analysis(load_run(run_dir, device=device), opts, progress=False)
        status["analyses"] = [storage.NAME]
    status["seconds"] = round(time.perf_counter() - t0, 1)
    return status


def run_storage_study(
    plan: StoragePlan,
    out: str | Path,
    *,
    jobs: int = 1,
    device: str = "cpu",
    figures_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the storage study into `out`; write figures and storage_report.md there."""
    from interp.model import resolve_device
    from interp.study import run_name, worker_context

    device = resolve_device(device)
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = []
    for level, cfg in plan.configs():
        cfg = apply_overrides(cfg, [f"train.device={device}"])
        spec.append((cfg.to_dict(), str(out / "runs" / f"{level}_{run_name(cfg)}")))
    log(
        f"storage study: {len(spec)} runs (levels {', '.join(plan.levels)} x "
        f"{', '.join(plan.objectives)} x seeds {list(plan.seeds)}), {jobs} job(s) on {device}"
    )
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    statuses = []
    if jobs <= 1:
        statuses = [storage_job(c, rd, device, threads, plan.options) for c, rd in spec]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(device)) as pool:
            futs = [
                pool.submit(storage_job, c, rd, device, threads, plan.options) for c, rd in spec
            ]
            statuses = [f.result() for f in as_completed(futs)]
    wall = time.perf_counter() - t0
    report = write_storage_report(out, [Path(rd) for _, rd in spec], plan, statuses, wall)
    if figures_dir is not None:
        import shutil

        dst = Path(figures_dir)
        dst.mkdir(parents=True, exist_ok=True)
        for p in [*(out / "figures").glob("storage*.png"), report]:
            shutil.copy2(p, dst / p.name)
    log(f"report: {report}")
    return report


def _se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy over n people (one attribute)."""
    return float((p * (1 - p) / n) ** 0.5)


def _rate(by: list[float | int]) -> str:
    rate, lo, hi, k, n = by
    return f"{rate:.0%} [{lo:.0%}, {hi:.0%}] ({int(k)}/{int(n)})"


def write_storage_report(
    out: Path,
    run_dirs: list[Path],
    plan: StoragePlan,
    statuses: list[dict[str, Any]],
    wall_seconds: float,
) -> Path:
    """Figures and OUT/storage_report.md: one row per run, the paper's targets beside them."""
    from interp.plots.storage import level_name, plot_pprobe, plot_storage
    from interp.runs import read_result

    fig_dir = out / "figures"
    plot_storage(run_dirs, fig_dir / "storage")
    plot_pprobe(run_dirs, fig_dir / "storage_pprobe")
    rows = []
    for rd in run_dirs:
        r = read_result(rd, "storage", arrays=False)
        sm, ext = r.summary, r["extraction"]
        rows.append(
            "| "
            + " | ".join(
                [
                    r["objective"],
                    level_name(r["augmentation"]),
                    str(r["n_people"]),
                    f"{sm['q_mean_best']:.2f} ± {_se(sm['q_mean_best'], r['n_people']):.2f} "
                    f"(ctrl {sm['q_mean_control_best']:.2f}, null95 "
                    f"{sm['q_mean_null95']:.2f}, chance {sm['chance_q_mean']:.2f})",
                    f"{sm['rq_first_class_best']:.2f} (null95 {sm['rq_first_class_null95']:.2f}, "
                    f"p {sm['rq_first_class_p']:.3f}, chance {sm['chance_rq_first_class']:.2f})",
                    f"{sm['pos_role_from_work_best']:.2f} / "
                    f"{sm['pos_first_class_from_name_best']:.2f}",
                    f"{sm['extract_forward_qa_test']:.0%} "
                    f"(QA-trained people {sm['extract_forward_qa_train']:.0%})",
                    _rate(ext["inverse"]["qa_test"]),
                ]
            )
            + " |"
        )
    per_q = []
    for rd in run_dirs:
        r = read_result(rd, "storage", arrays=False)
        sm = r.summary
        cells = [
            f"{sm[f'q_{lab}_best']:.2f} (p {sm[f'q_{lab}_p']:.3f}); "
            f"QA {_rate(r['extraction'][lab]['qa_test'])}"
            for lab in ("role", "city", "year", "employer")
        ]
        per_q.append(
            f"| {r['objective']} | {level_name(r['augmentation'])} | " + " | ".join(cells) + " |"
        )
    trained = sum(bool(s.get("trained")) for s in statuses)
    md = [
        "# Storage study: where is the fact stored?",
        "",
        f"{len(run_dirs)} runs (levels {', '.join(plan.levels)} x {', '.join(plan.objectives)} x "
        f"seeds {list(plan.seeds)}); run preset `{plan.run_preset}` with "
        f"`{' '.join(plan.overrides)}`. {trained} trained this invocation; wall time "
        f"{wall_seconds:.0f} s. One run per cell is one (world, seed) pair: a cell is evidence "
        "about that run, not an interval over runs.",
        "",
        "Q-probe: the name alone, best layer, mean of the four attributes (role, city, year, "
        "employer) ± the binomial SE of one attribute's accuracy over the run's people, beside "
        "the control task's best layer (a random label per last-name token), "
        "the permutation null's 95th percentile and majority chance. Reverse Q: the work alone "
        "-> first-name class. Positive controls: role from the work / first-name class from the "
        "name (must be high). Extraction: greedy exact match on people never questioned in "
        "training (Wilson 95%), forward mean over the four questions, and the inverse question.",
        "",
        "| objective | augmentation | people | Q-probe | reverse Q | positive ctrls | "
        "extraction fwd (unseen) | inverse (unseen) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Per attribute: Q-probe best layer (permutation p) and extraction on unseen people.",
        "",
        "| objective | augmentation | role | city | year | employer |",
        "|---|---|---|---|---|---|",
        *per_q,
        "",
        "Paper (Allen-Zhu & Li, larger models, bioS): "
        + "; ".join(f"{k}: {v}" for k, v in PAPER_TARGETS.items())
        + ".",
        "",
        "![storage](figures/storage.png)",
        "",
        "![P-probes](figures/storage_pprobe.png)",
        "",
    ]
    path = out / "storage_report.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(md))
    tmp.replace(path)
    return path
