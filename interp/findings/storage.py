"""The storage study's numbers: cells of (augmentation level, objective), and the scale ladder.

A cell is one (augmentation level, objective) at the preset's own size; its runs are (world,
seed) pairs. Every rate (probe accuracy, extraction) is a study-level estimate from the items
nested in the runs (`interp.stats.rate_estimate`: the hierarchical bootstrap, runs then items,
widened to the Wilson interval of the pooled items, so one run still gets the interval its people
allow and 0 of 100 is [0, 3.7]%, not a point). The items are:

- Q-probe: one person each (the share of the four attributes read right, each at its probe's
  best layer; results from before each person's correctness was kept: person x attribute);
- reverse Q-probe and the positive controls: one person each;
- extraction: one (person, question) each, on people never questioned in training ("unseen")
  and on the people whose QA was trained.

A probe's best layer is a maximum over layers, so it is set beside the permutation null's 95th
percentile of the same maximum and the control task's best layer. Runs at a scale setting (the
`scale` axis) are rows of the scale table instead: their size, training loss beside its
memorisation floor, Q-probes and extraction, and whether the forward targets are met.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np

from interp.data.biography import LABELS, level_name
from interp.findings.collect import Study, StudyRun, runs_fields
from interp.runs import build_dataset
from interp.stats import rate_estimate

# The forward targets (Q-probe of the attributes at A's last token, mean of the four, and
# forward extraction on people never questioned in training).
TARGET_Q, TARGET_EXTRACTION = 0.8, 0.8


def _items(k: int | float, n: int | float) -> list[float]:
    """n items (people, or person-questions) of which k were right, as 0/1 values."""
    return [1.0] * int(k) + [0.0] * (int(n) - int(k))


def _node(groups: list[list[float]], items: str, **extra: Any) -> dict[str, Any]:
    """A rate over runs and their items, as a findings node (fractions; text in percent)."""
    e = rate_estimate(groups)
    node = {
        "estimate": e.estimate,
        "low": e.low,
        "high": e.high,
        "n_runs": e.n_runs,
        "n_items": e.n_items,
        "text": e.fmt(pct=True, items=items),
    } | runs_fields(e)
    return node | extra


def _hits(r: dict[str, Any], key: str) -> list[float]:
    """A probe's best-layer accuracy over the run's probed people, as 0/1 items."""
    n = r["n_people"]
    return _items(round(r["summary"][f"{key}_best"] * n), n)


def _mean(results: list[dict[str, Any]], key: str) -> float:
    return sum(r["summary"][key] for r in results) / len(results)


def _q_items(results: list[dict[str, Any]]) -> tuple[list[list[float]], str]:
    """The Q-probe's items per run: each person's share of the four attributes read right at
    each probe's best layer (runs nested, then people), or, for results written before each
    person's correctness was kept, person x attribute pairs (a little narrow: the four
    attributes of one person are not independent)."""
    probes = [[r.get("probes", {}).get(f"q_{lab}", {}) for lab in LABELS] for r in results]
    if all("correct_best" in p for ps in probes for p in ps):
        return [list(np.mean([p["correct_best"] for p in ps], axis=0)) for ps in probes], "people"
    return [sum((_hits(r, f"q_{lab}") for lab in LABELS), []) for r in results], (
        "person-attributes"
    )


def cell_findings(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's numbers from its runs' storage results (`analysis/storage.json` data)."""
    q, q_items = _q_items(results)
    cell: dict[str, Any] = {
        "n_runs": len(results),
        "n_people": [r["n_people"] for r in results],
        "q_probe": _node(
            q,
            q_items,
            null95=_mean(results, "q_mean_null95"),
            control=_mean(results, "q_mean_control_best"),
            chance=_mean(results, "chance_q_mean"),
            p_per_attribute={lab: [r["summary"][f"q_{lab}_p"] for r in results] for lab in LABELS},
        ),
    }
    cell["reverse_q"] = _node(
        [_hits(r, "rq_first_class") for r in results],
        "people",
        null95=_mean(results, "rq_first_class_null95"),
        p=[r["summary"]["rq_first_class_p"] for r in results],
        chance=_mean(results, "chance_rq_first_class"),
    )
    for key in ("pos_role_from_work", "pos_first_class_from_name"):
        cell[key] = _node([_hits(r, key) for r in results], "people")
    for subset, name in (("qa_test", "unseen"), ("qa_train", "trained")):
        fwd = [
            sum((_items(*r["extraction"][lab][subset][3:5]) for lab in LABELS), []) for r in results
        ]
        cell[f"extract_forward_{name}"] = _node(fwd, "person-questions")
        inv = [_items(*r["extraction"]["inverse"][subset][3:5]) for r in results]
        cell[f"extract_inverse_{name}"] = _node(inv, "people")
    return cell


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
    """The forward targets: Q-probe (mean of the four attributes at A's last token) and forward
    extraction on unseen people both at least 0.8."""
    return q_mean >= TARGET_Q and forward_unseen >= TARGET_EXTRACTION


def scale_row(run: StudyRun, r: dict[str, Any]) -> dict[str, Any]:
    """One run at a scale setting: its size, training loss beside the memorisation floor,
    training seconds, Q-probe and forward extraction on unseen people, and the targets."""
    cfg = run.spec.config
    log = [json.loads(ln) for ln in (run.path / "train_log.jsonl").read_text().splitlines()]
    cell = cell_findings([r])
    fwd = cell["extract_forward_unseen"]
    return {
        "scale": run.spec.labels.get("scale", ""),
        "objective": r["objective"],
        "level": level_name(r["augmentation"]),
        "d_model": cfg.model.d_model,
        "steps": cfg.train.steps,
        "people": r["n_people"],
        "loss": float(np.mean([e["loss"] for e in log[-10:]])),
        "floor": memorisation_floor([d.tokens for d in build_dataset(cfg).train_docs]),
        "train_seconds": float(log[-1]["elapsed_s"]),
        "q_probe": cell["q_probe"],
        "q_per_attribute": {lab: r["summary"][f"q_{lab}_best"] for lab in LABELS},
        "pos_role_from_work": cell["pos_role_from_work"],
        "pos_first_class_from_name": cell["pos_first_class_from_name"],
        "extract_forward_unseen": fwd,
        "extract_inverse_unseen": cell["extract_inverse_unseen"],
        "targets_met": targets_met(cell["q_probe"]["estimate"], fwd["estimate"]),
    }


def collect_storage(study: Study) -> dict[str, Any]:
    """{levels, objectives, seeds, cells: {level: {objective: cell}}, scale: [rows]} from the
    runs' storage results; runs at a scale setting go to `scale`, one row each."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    scale_rows = []
    for run in study.runs:
        res = study.result(run, "storage")
        if res is None:
            continue
        r = res.data
        if run.spec.labels.get("scale"):
            scale_rows.append(scale_row(run, r))
        else:
            grouped.setdefault((run.spec.labels["level"], r["objective"]), []).append(r)
    cells: dict[str, dict[str, Any]] = {}
    for (level, objective), results in grouped.items():
        cell = cell_findings(results)
        cell["augmentation"] = level_name(results[0]["augmentation"])
        cells.setdefault(level, {})[objective] = cell
    level_axis = next(a for a in study.plan.preset.axes if a.name == "level")
    return {
        "levels": list(level_axis.labels),
        "objectives": list(study.plan.objectives),
        "seeds": list(study.plan.seeds),
        "cells": cells,
        "scale": scale_rows,
    }
