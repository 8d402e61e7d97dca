"""No interval in the report leaves its number's range: a synthetic study (saved results only,
no training) with numbers on and near their bounds is rendered by `write_report`, and every
"x [lo, hi]" of a bounded number in report.md and findings.json is checked against the range
its Summary declares for it; single runs and identical runs carry no interval."""

from __future__ import annotations

import json
import math
import re
import zlib

from interp.analysis import INSTRUMENTS
from interp.results import Declared
from interp.stats import Range

DECLARED: dict[str, Declared] = {
    d.key: d for ins in INSTRUMENTS.values() for d in ins.summary_type.declared()
}

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


def _values(d: Declared, run: int) -> float:
    """Run `run`'s value of a declared number: a pattern of NEAR_BOUNDS for its range, chosen
    by its key."""
    if d.pvalue:
        return [1e-4, 0.3, 0.9][run]
    options = NEAR_BOUNDS[str(d.range)]
    return options[zlib.crc32(d.key.encode()) % len(options)][run]


def _fake_run(run, fakes) -> None:
    """Behaviour near 0 and 100% and, for every instrument, a summary holding its headlines."""
    fakes.evaluation(run, people=8, fwd_hit=0.97, rev_hit=0.01)
    for name, ins in INSTRUMENTS.items():
        if name != "behaviour":
            seed = run.spec.config.train.seed
            fakes.summary(
                run, name, {d.key: _values(d, seed) for d in ins.summary_type.headlines()}
            )


_INTERVAL = re.compile(r"(-?\d+(?:\.\d+)?) \[(-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?)\]")


def out_of_range_intervals(report_md: str) -> list[str]:
    """Every instrument-table cell "x [lo, hi]" whose interval leaves the row key's declared
    range or does not contain x, every "x% [lo, hi]" outside [0, 100], and every "[x, x]"."""
    bad = []
    for line in report_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        key = re.match(r"`(\w+)`", cells[0])
        rng = DECLARED[key.group(1)].range if key else Range()
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


def test_report_intervals_stay_in_their_ranges(tmp_path, monkeypatch, fakes, quick_bootstrap):
    from interp import report

    monkeypatch.setattr(report, "draw_figures", lambda *a, **k: [])  # the runs are fakes
    study = fakes.study(tmp_path, "tiny", objectives=["causal", "reverse_entity"], seeds=[0, 1, 2])
    study.runs = [
        r for r in study.runs if r.spec.group == "causal" or r.spec.config.train.seed == 0
    ]
    for run in study.runs:
        _fake_run(run, fakes)
    out = study.plan.report_dir(tmp_path)
    report.write_report(study, out, log=lambda s: None)
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
                if DECLARED[key].pvalue:  # listed per run and combined, no interval
                    assert "low" not in node and "combined_fisher" in node, (key, node)
                    continue
                if node["low"] is None:  # no interval only for one run or identical runs
                    assert node["interval"] in ("single", "constant"), (name, obj, key, node)
                    continue
                r = DECLARED[key].range
                if not r.low <= node["low"] <= node["estimate"] <= node["high"] <= r.high:
                    bad.append(f"{name}.{obj}.{key}: {node['text']} (range {r})")
    assert not bad, "findings intervals outside their ranges:\n" + "\n".join(bad)
    texts = [
        n["text"] for po in f["instruments"].values() for ks in po.values() for n in ks.values()
    ]
    assert any("t-interval truncated" in t for t in texts), texts
    assert not any("\u2020" in t for t in texts), texts  # the README has no legend for it
    # the scan itself catches an impossible interval
    assert out_of_range_intervals(
        "| `positive_control_val_loss_best`: loss | 0.004 [-0.002, 0.01] (n=3) |"
    )
    assert out_of_range_intervals("| `accuracy_mixed`: rate | 0.667 [0.667, 0.667] (n=3) |")
    assert not out_of_range_intervals("| `forward_best_restoration`: x | 0.97 [0.78, 1.16] (n=3) |")
    assert math.isinf(DECLARED["forward_best_restoration"].range.high)
