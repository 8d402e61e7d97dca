"""Compare every number of two study directories (before and after a refactor).

    python experiments/compare_studies.py STUDY_A STUDY_B [--ignore-key options]

Pairs the runs by directory name (objective, seed, config hash), then compares, file by file,
`metrics.json` and every `analysis/<instrument>.json` (every leaf, recursively; NaN equals NaN;
keys named by --ignore-key are skipped at the top level, e.g. `options`, whose layout may change
while the numbers may not) and every `.npz` array (bitwise, NaN equals NaN). Prints one line per
file and a verdict; exit status 0 only if everything compared is identical and no file is
missing on either side.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _leaves(x: Any, path: str = "") -> dict[str, Any]:
    if isinstance(x, dict):
        out: dict[str, Any] = {}
        for k, v in x.items():
            out.update(_leaves(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(x, list):
        out = {}
        for i, v in enumerate(x):
            out.update(_leaves(v, f"{path}[{i}]"))
        return out
    return {path: x}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(type(a) is type(b) and a == b)


def compare_json(a: Path, b: Path, ignore: set[str]) -> tuple[int, list[str]]:
    """(number of leaves compared, the differing leaves)."""
    da, db = (json.loads(p.read_text()) for p in (a, b))
    for k in ignore:
        da.pop(k, None)
        db.pop(k, None)
    la, lb = _leaves(da), _leaves(db)
    diffs = [f"{k}: {la.get(k, '<missing>')!r} != {lb.get(k, '<missing>')!r}"
             for k in sorted(set(la) | set(lb)) if k not in la or k not in lb
             or not _same(la[k], lb[k])]  # fmt: skip
    return len(la), diffs


def compare_npz(a: Path, b: Path) -> tuple[int, list[str]]:
    """(number of array elements compared, the differing arrays)."""
    diffs, n = [], 0
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        for k in sorted(set(za.files) | set(zb.files)):
            if k not in za.files or k not in zb.files:
                diffs.append(f"{k}: only in one file")
                continue
            x, y = za[k], zb[k]
            n += x.size
            nan = x.dtype.kind in "fc" and y.dtype.kind in "fc"
            if x.shape != y.shape or not np.array_equal(x, y, equal_nan=nan):
                diffs.append(f"{k}: arrays differ (shapes {x.shape} vs {y.shape})")
    return n, diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("a", type=Path, help="study directory (before)")
    p.add_argument("b", type=Path, help="study directory (after)")
    p.add_argument("--ignore-key", action="append", default=[], help="top-level JSON key to skip")
    args = p.parse_args(argv)
    ignore = set(args.ignore_key)
    bad = 0
    leaves = elements = files = 0
    runs_a = {d.name for d in (args.a / "runs").iterdir() if d.is_dir()}
    runs_b = {d.name for d in (args.b / "runs").iterdir() if d.is_dir()}
    for name in sorted(runs_a ^ runs_b):
        print(f"MISSING run {name} on one side")
        bad += 1
    for name in sorted(runs_a & runs_b):
        ra, rb = args.a / "runs" / name, args.b / "runs" / name
        rel = ["metrics.json", "eval_logprobs.npz"]
        rel += sorted(
            str(f.relative_to(ra))
            for f in (ra / "analysis").glob("*")
            if f.suffix in (".json", ".npz")
        )
        rel += [
            str(f.relative_to(rb))
            for f in (rb / "analysis").glob("*")
            if f.suffix in (".json", ".npz") and str(f.relative_to(rb)) not in rel
        ]
        for r in rel:
            fa, fb = ra / r, rb / r
            if not fa.is_file() or not fb.is_file():
                print(f"MISSING {name}/{r} on one side")
                bad += 1
                continue
            files += 1
            if r.endswith(".json"):
                n, diffs = compare_json(fa, fb, ignore)
                leaves += n
            else:
                n, diffs = compare_npz(fa, fb)
                elements += n
            status = "identical" if not diffs else f"{len(diffs)} DIFFERENCES"
            print(f"{name}/{r}: {n} values, {status}")
            for d in diffs[:10]:
                print(f"    {d}")
            bad += bool(diffs)
    verdict = "IDENTICAL" if bad == 0 else f"{bad} file(s) differ or are missing"
    print(
        f"{files} files compared ({leaves} JSON values, {elements} array elements) "
        f"ignoring top-level keys {sorted(ignore)}: {verdict}"
    )
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
