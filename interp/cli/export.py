"""`interp export`: a run as a Hugging Face transformers model directory (interp.export)."""

from __future__ import annotations

import argparse

from interp.config import check_device
from interp.export import export_run


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `interp train`")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="directory to create (must not exist)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")


def run(args: argparse.Namespace) -> int:
    out, diff = export_run(args.run_dir, args.out, device=check_device(args.device))
    print(
        f"exported to {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}) "
        f"gives the run's log-probs (largest difference {diff:.1e})"
    )
    return 0
