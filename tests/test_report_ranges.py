"""No interval in the report leaves its number's range: a synthetic study (saved results only,
no training) with numbers on and near their bounds is rendered by `write_report`, and every
"x [lo, hi]" of a bounded number in report.md and findings.json is checked against the range
`interp.stats` declares for it; single runs and identical runs carry no interval."""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np

from interp import stats
from interp.analysis import INSTRUMENTS
from interp.results import Result, write_result

# Per kind of range, per-run values (3 runs) on and near the bounds, as the study makes them:
# every AUROC 1.0, a loss of 0.0001-0.009, a rate of 0 with one run at 0.25%, rank 1, ...
NEAR_BOUNDS: dict[str, list[list[float]]] = {
    "[0, 1]": [[1.0, 1.0, 1.0], [1.0, 0.99, 0.97], [0.001, 0.02, 0.3], [0.0, 0.0025, 0.01],
               [0.667, 0.667, 0.667], [0.17, 0.03, 0.31]],
    "[-1, 1]": [[-0.99, -0.95, -0.999], [0.01, -0.02, 0.03], [1.0, 0.98, 0.9]],
    "[0, inf]": [[0.0036, 0.0001, 0.009], [0.0, 0.1, 0.2], [1.9, 2.0, 1.93]],
    "[1, inf]": [[1.0, 1.0, 1.0], [4.0, 5.0, 3.0], [1.0, 2.0, 30.0], [70.0, 82.0, 59.0]],
    "[-inf, 0]": [[-0.006, -0.008, -0.001], [-12.7, -14.8, -0.0]],
    "[-inf, inf]": [[0.9, 1.05, 0.95], [-0.04, 0.01, 0.02], [16.7, 14.3, 19.0]],
}  # fmt: skip


def _values(key: str, run: int) -> float:
    """Run `run`'s value of `key`: a pattern of NEAR_BOUNDS for its range, chosen by the key."""
    if stats.is_pvalue(key):
        return [1e-4, 0.3, 0.9][run]
    options = NEAR_BOUNDS[str(stats.value_range(key))]
    return options[zlib.crc32(key.encode()) % len(options)][run]


def _fake_run(path: Path, objective: str, seed: int) -> Path:
    """config.json, eval_logprobs.npz (8 people per subset, 2 templates, exact match near 0 and
    100%) and, for every instrument, a summary holding its headline numbers."""
    rng = np.random.default_rng(seed)
    rows = []
    for si, s in enumerate(("n2d", "d2n", "both")):
        for d in ("same", "reverse"):
            for person in range(8):
                for _ in range(2):
                    fwd = d == "same" or s == "both"
                    c = rng.normal(-5, 1)
                    hit = rng.random() < (0.97 if fwd else 0.01)
                    rows.append(
                        (s, d, "train", 100 * si + person, c, c - 2 * fwd + rng.normal(), hit)
                    )
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"world": {"seed": seed}, "train": {"seed": seed, "objective": objective}})
    )
    s, d, k, p, c, r, h = zip(*rows, strict=True)
    np.savez(
        path / "eval_logprobs.npz",
        subset=np.array(s), direction=np.array(d), templates=np.array(k), person=np.array(p),
        correct_logprob=np.array(c), random_logprob=np.array(r), exact_match=np.array(h),
    )  # fmt: skip
    for name, ins in INSTRUMENTS.items():
        summary = {key: _values(key, seed) for key in ins.headlines}
        write_result(path, Result(name, {"options": {}, "summary": summary}, {}))
    return path


_INTERVAL = re.compile(r"(-?\d+(?:\.\d+)?) \[(-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?)\]")


def out_of_range_intervals(report_md: str) -> list[str]:
    """Every instrument-table cell "x [lo, hi]" whose interval leaves the row key's declared
    range or does not contain x, every "x% [lo, hi]" outside [0, 100], and every "[x, x]"."""
    bad = []
    for line in report_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        rng = stats.value_range(cells[0])
        for cell in cells[1:]:
            for m in _INTERVAL.finditer(cell):
                x, lo, hi = (float(g) for g in m.groups())
                pct = cell[m.end(1) : m.end(1) + 1] == "%"
                low, high = (0.0, 100.0) if pct else (rng.low, rng.high)
                if not (low <= lo <= x <= hi <= high) or lo == hi:
                    bad.append(f"{cells[0]}: {cell} (range {rng})")
    for m in re.finditer(r"(-?[\d.]+)% \[(-?[\d.]+), (-?[\d.]+)\]", report_md):
        x, lo, hi = (float(g) for g in m.groups())
        if not 0 <= lo <= x <= hi <= 100:
            bad.append(m.group(0))
    return bad


def test_report_intervals_stay_in_their_ranges(tmp_path, monkeypatch):
    from interp import report
    from interp.study import make_plan

    monkeypatch.setattr(report, "draw_figures", lambda *a, **k: {})  # the runs are fakes
    out = tmp_path / "study"
    runs = [_fake_run(out / "runs" / f"c{i}", "causal", i) for i in range(3)]
    runs.append(_fake_run(out / "runs" / "e0", "reverse_entity", 0))
    write_report(out, runs, make_plan("tiny", objectives=["causal", "reverse_entity"]))
    text = (out / "report.md").read_text()
    bad = out_of_range_intervals(text)
    assert not bad, "intervals outside their ranges:\n" + "\n".join(bad)
    # the synthetic numbers sit on bounds, so each kind of cell is there to be checked
    assert "(all 3 runs)" in text and "(1 run)" in text and "\u2020 (n=3)" in text, text
    assert "] (n=1)" not in text and "(n=1)" not in text, text
    # the findings hold the same intervals
    f = json.loads((out / "findings.json").read_text())
    bad = []
    for name, per_obj in f["instruments"].items():
        for obj, keys in per_obj.items():
            for key, node in keys.items():
                if stats.is_pvalue(key):  # listed per run and combined, no interval
                    assert "low" not in node and "combined_fisher" in node, (key, node)
                    continue
                if node["low"] is None:  # no interval only for one run or identical runs
                    assert node["interval"] in ("single", "constant"), (name, obj, key, node)
                    continue
                r = stats.value_range(key)
                if not r.low <= node["low"] <= node["estimate"] <= node["high"] <= r.high:
                    bad.append(f"{name}.{obj}.{key}: {node['text']} (range {r})")
    assert not bad, "findings intervals outside their ranges:\n" + "\n".join(bad)
    texts = [
        n["text"] for po in f["instruments"].values() for ks in po.values() for n in ks.values()
    ]
    assert any("t-interval truncated" in t for t in texts), texts
    assert not any("\u2020" in t for t in texts), texts  # the README has no legend for it
    # the scan itself catches an impossible interval
    assert out_of_range_intervals("| positive_control_val_loss_best | 0.004 [-0.002, 0.01] (n=3) |")
    assert out_of_range_intervals("| accuracy_mixed | 0.667 [0.667, 0.667] (n=3) |")
    assert not out_of_range_intervals("| forward_best_restoration | 0.97 [0.78, 1.16] (n=3) |")
    assert math.isinf(stats.value_range("forward_best_restoration").high)


def write_report(out: Path, runs: list[Path], plan: object) -> None:
    from interp.report import write_report as write

    write(out, runs, plan)
