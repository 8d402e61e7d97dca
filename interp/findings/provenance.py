"""What made a study's numbers: the code, the study's configs, the versions; and the time it took.

- `code_sha256`: SHA-256 of the source of every module that computes a number the findings
  hold: `interp/**/*.py` except the rendering tier (`RENDERING`: figures, the command line, the
  report's text, the templates' engine, the claims and their verdicts, which are judged when the
  findings are rendered). A change of wording or of a figure leaves it as it is, so it does not
  ask for the study to run again; a change of how a number is computed does.
- `study_sha256`: SHA-256 of what a study runs: every run's config (the device left out: it
  changes no number's definition), its axis labels and the instruments it gets with their full
  options.
- the timing ledger: the wall time a study's runs and analyses took (`record_timing`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from interp.files import write_text
from interp.plan import Plan
from interp.runs import versions

PACKAGE = Path(__file__).resolve().parents[1]
# Packages and modules that draw, print, judge or export, but compute no number the findings hold.
RENDERING = (
    "export.py",
    "plots/",
    "cli/",
    "presets/",
    "report.py",
    "findings/render.py",
    "findings/text.py",
    "findings/verdicts.py",
    "__main__.py",
)


def code_sha256(root: Path = PACKAGE) -> str:
    """SHA-256 of every module under `root` that computes a number: each `*.py` file's path
    (relative to `root`) and bytes, in sorted order, the `RENDERING` tier left out."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if "__pycache__" in rel or any(
            rel.startswith(r) if r.endswith("/") else rel == r or rel.endswith("/" + r)
            for r in RENDERING
        ):
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def config_without_device(cfg: Any) -> dict[str, Any]:
    """A run config as a dict, the device left out (it changes no number's definition)."""
    d: dict[str, Any] = cfg.to_dict(hashed=True)  # a field added since, at its default: left out
    d.get("train", {}).pop("device", None)
    return d


def study_sha256(plan: Plan) -> str:
    """SHA-256 of what a study runs (see the module docstring), as canonical JSON."""
    runs = [
        {
            "config": config_without_device(spec.config),
            "labels": spec.labels,
            "instruments": {name: opts.resolved().to_json() for name, opts in spec.options.items()},
        }
        for spec in plan.runs()
    ]
    blob = json.dumps({"runs": runs}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


def provenance(plan: Plan) -> dict[str, str]:
    """The hashes and versions a findings file and a report record (the versions are recorded,
    not checked: the same code under another torch may differ in the last bits)."""
    v = versions()
    return {
        "code_sha256": code_sha256(),
        "study_sha256": study_sha256(plan),
        "torch": v["torch"],
        "transformer_lens": v["transformer-lens"],
    }


def provenance_line(prov: dict[str, str]) -> str:
    """The line naming what made a report or a findings file."""
    return (
        f"Made by code sha256 `{prov['code_sha256']}` for study configs sha256 "
        f"`{prov['study_sha256']}` (torch {prov['torch']}, "
        f"transformer-lens {prov['transformer_lens']})."
    )


TIMING = "timing.json"


def record_timing(
    report_dir: Path,
    sha: str,
    seconds: float,
    *,
    trained: int,
    analysed: int,
    jobs: int,
    device: str,
    runs: int,
) -> dict[str, Any]:
    """Add one study invocation to REPORT_DIR/timing.json and return the ledger.

    An invocation that trained or analysed something is appended (a study killed and started
    again adds each part, so the total is the time the work took); one that reused everything
    (a re-render) leaves the ledger as it is. The ledger is per study configuration: another
    `sha` (the study's `study_sha256`) starts it afresh. Seconds are wall time of training and
    instruments, the figures and report left out; `runs` is the study's number of runs, so runs
    reused from the cache (trained by another study with the same configs) are said.
    """
    path = Path(report_dir) / TIMING
    try:
        ledger = json.loads(path.read_text())
    except (OSError, ValueError):
        ledger = {}
    if not isinstance(ledger, dict) or ledger.get("study_sha256") != sha:
        ledger = {"study_sha256": sha, "invocations": []}
    if trained or analysed:
        ledger["invocations"].append(
            {
                "wall_seconds": round(float(seconds), 1),
                "runs": runs,
                "trained": trained,
                "analysed": analysed,
                "jobs": jobs,
                "device": device,
            }
        )
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(ledger, indent=1, sort_keys=True))
    return ledger


def timing_finding(report_dir: Path, study_sha: str) -> dict[str, Any] | None:
    """The ledger of REPORT_DIR/timing.json as a finding (None if absent or for another study):
    total wall seconds with the runs trained, analyses run, jobs and device of each part."""
    try:
        ledger = json.loads((Path(report_dir) / TIMING).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(ledger, dict):
        return None
    parts = ledger.get("invocations", [])
    if ledger.get("study_sha256") != study_sha or not parts:
        return None
    total = sum(float(p["wall_seconds"]) for p in parts)
    how = sorted({f"{p['jobs']} job(s) on {p['device']}" for p in parts})
    trained, runs = sum(p["trained"] for p in parts), max(p.get("runs", 0) for p in parts)
    reused = (
        f"{trained} of {runs} runs trained, the rest reused from the run cache"
        if trained < runs
        else f"{trained} runs trained"
    )
    text = (
        f"{total / 60:.1f} min wall ({reused}; {sum(p['analysed'] for p in parts)} analyses; "
        f"{', '.join(how)}; {len(parts)} invocation(s); figures and report not included)"
    )
    return {"wall_seconds": round(total, 1), "invocations": parts, "text": text}
