"""`interp study`: every run the study needs, every instrument on each, figures and a report."""

from __future__ import annotations

import argparse

from interp.cli import add_set_argument

HELP = "run the whole study (objectives x seeds, every instrument) and write figures and a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="default",
        help="study preset: default, tiny, objectives, bridge_ocr, bridge_idn, retrieval or gpu "
        "(the objectives study at paper grade, for one GPU); storage, storage_tiny, "
        "storage_scale or storage_gpu run the storage study on the biography world "
        "(interp.storage_study)",
    )
    p.add_argument("--out", default="study_out", help="study directory (runs are cached inside it)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (local processes)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--objectives", nargs="+", help="subset of objectives (default: the preset's)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the preset's)")
    p.add_argument("--instruments", nargs="+", help="subset of instruments (default: all)")
    add_set_argument(p, "override run config keys for every run, e.g. --set train.weight_decay=0")
    p.add_argument(
        "--figures-dir", help="also copy the figures and report.md here (make study: figures/)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import resource
    import time

    from interp.config import check_device
    from interp.errors import UserError
    from interp.study import make_plan, run_study

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if not args.out.strip():
        raise UserError("--out is empty: name a study directory, e.g. --out study_out")
    check_device(args.device)
    t0 = time.perf_counter()
    if args.preset.startswith("storage"):
        from interp.storage_study import make_storage_plan, run_storage_study

        if args.instruments:
            raise UserError("--instruments does not apply to the storage study: drop it")
        splan = make_storage_plan(args.preset, args.overrides, args.objectives, args.seeds)
        run_storage_study(
            splan, args.out, jobs=args.jobs, device=args.device, figures_dir=args.figures_dir
        )
        print(f"storage study done in {time.perf_counter() - t0:.0f} s")
        return 0
    plan = make_plan(args.preset, args.overrides, args.objectives, args.seeds, args.instruments)
    plan.configs()  # validates every run's config (--set included) before anything is written
    run_study(
        plan,
        args.out,
        jobs=args.jobs,
        device=args.device,
        figures_dir=args.figures_dir,
        progress=not args.no_progress,
    )
    peak = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    print(
        f"study done in {time.perf_counter() - t0:.0f} s; "
        f"peak resident memory of one process {peak:.0f} MB"
    )
    return 0
