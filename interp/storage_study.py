"""`interp study --preset storage`: where a fact is stored, against knowledge augmentation.

    biography world x augmentation levels x objectives x seeds -> OUT/runs -> storage probes
    -> OUT/<preset>/: figures/storage.png, figures/storage_pprobe.png, storage_report.md,
       findings.json and findings.md (`interp.storage_findings`), timing.json

The question (issue 14, Allen-Zhu & Li Part 3.1/3.2): with one wording per person a model
memorises facts "along the sentence" and the attributes are not decodable at the name; with
knowledge augmentation (several biographies per person, permuted sentences, the full name in
every sentence) they are, and QA extracts them for people never questioned in training; the
reverse (the person from the attribute) stays unreadable and inverse search stays ~0% under the
causal objective, and should not under reverse training or MLM-U. Each run is one (world, seed)
pair (seed s trains world s, as in `interp.study`); the probes and extraction of each run come
from `interp.analysis.storage`. Runs and analyses are cached in OUT/runs as in `interp.study`
(a finished run is reused, an analysis only if made with the same options).

What it takes to meet the forward targets is a measurement, not a guess: `storage_scale` trains
the augmented level at each of `SCALES` (width, steps, people) and the report's scale table
gives, per run, the training loss beside its memorisation floor (so "the loss is still high"
can be told from "the documents are memorised"), the Q-probes with their null and control,
extraction with Wilson intervals, and whether both forward targets are met.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
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

# Scale settings (what it takes to reach the forward targets): name -> model / train / world-size
# overrides, applied after a preset's and the level's. The measured ladder is `storage_scale`.
_D128 = ("model.d_model=128", "model.d_mlp=512")
_D256 = ("model.d_model=256", "model.d_mlp=1024")
SCALES: dict[str, tuple[str, ...]] = {
    "d64_s1500": ("train.steps=1500",),
    # checkpoints every 1000 steps: extraction within the schedule can be read from them
    "d64_s4000": ("train.steps=4000", "train.checkpoint_every=1000"),
    "d128_s800": (*_D128, "train.steps=800"),
    "d256_s800": (*_D256, "train.steps=800"),
    "d128_s1600_p400": (*_D128, "train.steps=1600", "world.n_people_per_subset=200"),
}
# The forward targets (Q-probe of the attributes at A's last token, mean of the four, and
# forward extraction on people never questioned in training).
TARGET_Q, TARGET_EXTRACTION = 0.8, 0.8

# The paper's numbers beside which the report prints the kit's (Part 3.1 / 3.2, their models).
PAPER_TARGETS = {
    "plain": "Q-probe at the name near chance; extraction on unseen people low",
    "augmented": "Q-probe near-perfect (target here >= 0.8); extraction ~96% (target >= 0.8)",
    "inverse": "inverse search ~0% in every regime under next-token training (Part 3.2)",
}


@dataclass(frozen=True)
class StoragePlan:
    """What the storage study runs: a run preset with the biography world, augmentation levels,
    scale settings (`SCALES`; "" is the preset's own size), objectives, seeds, and the storage
    probes' options."""

    run_preset: str
    overrides: tuple[str, ...]
    levels: tuple[str, ...]
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    objective_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    scales: tuple[str, ...] = ("",)
    name: str = "storage"  # the preset: the report, figures and findings go to OUT/<name>/

    def configs(self) -> list[tuple[str, str, RunConfig]]:
        """(level, scale, config) per level x scale x objective x seed; seed s trains world s.
        The scale's overrides come after the preset's and the level's, so they win."""
        base = load_config(self.run_preset)
        return [
            (
                level,
                scale,
                apply_overrides(
                    base,
                    [
                        *self.overrides,
                        *LEVELS[level],
                        *SCALES.get(scale, ()),
                        f"world.seed={s}",
                        *self.objective_overrides.get(o, ()),
                        f"train.objective={o}",
                        f"train.seed={s}",
                    ],
                ),
            )
            for level in self.levels
            for scale in self.scales
            for o in self.objectives
            for s in self.seeds
        ]


_WORLD = ("world.source=biography", "train.eval_every=0")
STORAGE_PRESETS: dict[str, dict[str, Any]] = {
    # 100 people per subset (200 people; the probes read the 100 never questioned) on a
    # 4-layer d_model 128 GPT, 800 steps (~34 epochs of the augmented documents), one seed:
    # the size the `storage_scale` ladder (figures/storage_scale/) found to buy the most per
    # CPU second, inside the 20-minute bar (a fresh clone's make study PRESET=storage:
    # 778 s on 2 cores, 2026-11-30). Its numbers: figures/storage/ and the README's storage
    # block. The probes' cost is mostly the nested CV (--Cs, --inner-folds) and the null
    # (--permutations); the findings' timing gives a study's own wall time.
    "storage": {
        "run_preset": "default",
        "overrides": (
            *_WORLD,
            "world.n_people_per_subset=100",
            "model.n_ctx=48",
            "train.checkpoint_every=0",
            *SCALES["d128_s800"],
        ),
        "levels": ("plain", "augmented"),
        "objectives": ("causal", "reverse_entity", "mlm_u"),
        "seeds": (0,),
        "options": {"permutations": 100},
    },
    # The size the storage_scale ladder points to, for a GPU, with the evidence bars:
    # d_model 256 (width is what moved the Q-probe and extraction in the ladder), 300 people
    # per subset (the probes read the 300 unseen people: a binomial SE of at most 0.029 per
    # attribute, under the 0.03), 2400 steps (the ladder's 400-people run trained 4
    # steps per person; 600 people at the same rate), 3 seeds (intervals over runs, each seed
    # its own world). Unmeasured: no GPU has been lent to the kit's development, and on the
    # CPU one such run would take over an hour.
    "storage_gpu": {
        "run_preset": "default",
        "overrides": (
            *_WORLD,
            "model.n_ctx=48",
            "train.checkpoint_every=0",
            *_D256,
            "train.steps=2400",
            "world.n_people_per_subset=300",
        ),
        "levels": ("plain", "augmented"),
        "objectives": ("causal", "reverse_entity", "mlm_u"),
        "seeds": (0, 1, 2),
        "options": {"permutations": 100},
    },
    # What it takes (issue 14): the augmented level under the causal objective at each of
    # `SCALES` (width, steps, people); the report's scale table gives each run's numbers.
    "storage_scale": {
        "run_preset": "default",
        "overrides": (
            *_WORLD,
            "world.n_people_per_subset=100",
            "model.n_ctx=48",
            "train.checkpoint_every=0",
        ),
        "levels": ("augmented",),
        "objectives": ("causal",),
        "seeds": (0,),
        "options": {"permutations": 100},
        "scales": tuple(SCALES),
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
        scales=tuple(p.get("scales", ("",))),
        name=preset,
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
    """Run the storage study: runs in OUT/runs (shared with every study), and in OUT/<preset>/
    the figures, storage_report.md, findings.json / findings.md (`interp.storage_findings`) and
    timing.json (the wall time of the runs and probes, `interp.findings.record_timing`); with
    `figures_dir`, copy the figures, report and findings there."""
    from interp.findings import record_timing
    from interp.model import resolve_device
    from interp.storage_findings import storage_sha256
    from interp.study import run_name, worker_context

    device = resolve_device(device)
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    report_dir = out / plan.name
    t0 = time.perf_counter()
    spec, scales = [], []
    for level, scale, cfg in plan.configs():
        cfg = apply_overrides(cfg, [f"train.device={device}"])
        label = f"{level}_{scale}" if scale else level
        spec.append((cfg.to_dict(), str(out / "runs" / f"{label}_{run_name(cfg)}")))
        scales.append(scale)
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
    record_timing(
        report_dir,
        None,
        wall,
        trained=sum(bool(s.get("trained")) for s in statuses),
        analysed=sum(bool(s.get("analyses")) for s in statuses),
        jobs=jobs,
        device=device,
        runs=len(spec),
        sha=storage_sha256(plan),
    )
    report = write_storage_report(
        report_dir, [Path(rd) for _, rd in spec], plan, statuses, wall, scales=scales
    )
    if figures_dir is not None:
        import shutil

        dst = Path(figures_dir)
        dst.mkdir(parents=True, exist_ok=True)
        names = ("findings.json", "findings.md")
        for p in [*(report_dir / "figures").glob("storage*.png"), report,
                  *(report_dir / n for n in names)]:  # fmt: skip
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
    scales: list[str] | None = None,
) -> Path:
    """Figures and OUT/storage_report.md: one row per run, the paper's targets beside them, and
    the scale table when the plan has scale settings (`SCALES`). The level figure is drawn over
    the runs at the preset's own size only (runs at other sizes would be averaged as seeds)."""
    from interp.files import write_text
    from interp.findings import timing_finding
    from interp.plots.storage import level_name, plot_pprobe, plot_storage
    from interp.results import read_result
    from interp.storage_findings import findings_markdown, storage_findings

    scales = scales or [""] * len(run_dirs)
    f = storage_findings(run_dirs, scales, plan, plan.name)
    timing = timing_finding(out, f["provenance"]["study_sha256"])
    if timing is not None:
        f["timing"] = timing
    write_text(out / "findings.json", json.dumps(f, indent=1, sort_keys=True, allow_nan=False))
    write_text(out / "findings.md", findings_markdown(f))
    fig_dir = out / "figures"
    level_runs = [rd for rd, sc in zip(run_dirs, scales, strict=True) if not sc]
    if level_runs:
        plot_storage(level_runs, fig_dir / "storage")
    plot_pprobe(run_dirs, fig_dir / "storage_pprobe")
    rows = []
    for rd, scale in zip(run_dirs, scales, strict=True):
        r = read_result(rd, "storage", arrays=False)
        sm, ext = r.summary, r["extraction"]
        rows.append(
            "| "
            + " | ".join(
                [
                    r["objective"],
                    level_name(r["augmentation"]) + (f" {scale}" if scale else ""),
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
    for rd, scale in zip(run_dirs, scales, strict=True):
        r = read_result(rd, "storage", arrays=False)
        sm = r.summary
        cells = [
            f"{sm[f'q_{lab}_best']:.2f} (p {sm[f'q_{lab}_p']:.3f}); "
            f"QA {_rate(r['extraction'][lab]['qa_test'])}"
            for lab in ("role", "city", "year", "employer")
        ]
        per_q.append(
            f"| {r['objective']} | {level_name(r['augmentation'])}{f' {scale}' if scale else ''} "
            "| " + " | ".join(cells) + " |"
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
        *(scale_section(f) if any(scales) else []),
        *(["![storage](figures/storage.png)", ""] if level_runs else []),
        "![P-probes](figures/storage_pprobe.png)",
        "",
    ]
    path = out / "storage_report.md"
    write_text(path, "\n".join(md))
    return path


def memorisation_floor(docs: list[tuple[int, ...]]) -> float:
    """The training loss (mean nats per predicted token) of a model that knows the corpus by heart
    and draws documents uniformly: at each position it pays -log of the share of documents with
    this prefix that continue with this token. Nothing trained can go below it on average, so a
    loss at the floor says the documents are memorised, whatever the loss's size."""
    count: Counter[tuple[int, ...]] = Counter()
    for d in docs:
        for i in range(1, len(d) + 1):
            count[d[:i]] += 1
    nll = sum(-math.log(count[d[: i + 1]] / count[d[:i]]) for d in docs for i in range(1, len(d)))
    return nll / sum(len(d) - 1 for d in docs)


def targets_met(q_mean: float, forward_unseen: float) -> bool:
    """The issue's forward targets: Q-probe (mean of the four attributes at A's last token) and
    forward extraction on unseen people both at least 0.8."""
    return q_mean >= TARGET_Q and forward_unseen >= TARGET_EXTRACTION


def scale_section(f: dict[str, Any]) -> list[str]:
    """The report's scale table (`interp.storage_findings.scale_table`): per run its size (d_model,
    steps, people), the final training loss beside the memorisation floor, training seconds,
    the Q-probe per attribute, forward extraction on unseen people pooled over the four
    questions, the inverse question, and whether both forward targets are met."""
    from interp.storage_findings import scale_table

    return [
        "## What it takes: the forward targets against model size, steps and people",
        "",
        f"Targets: Q-probe (mean of the four attributes at A's last token) >= {TARGET_Q} and "
        f"forward extraction on unseen people >= {TARGET_EXTRACTION}. Loss: the mean of the "
        "last ten logged training losses beside the memorisation floor (the loss of a model "
        "that knows every document by heart). Train s: the trainer's own clock on this machine "
        "(shared machines inflate it). Rates: `interp.storage_findings` (one run; intervals over "
        "its people).",
        "",
        scale_table(f),
        "",
    ]
