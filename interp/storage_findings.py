"""The storage study's findings: the numbers its README block quotes, and the papers' checks.

    runs' analysis/storage.json -> OUT/<preset>/findings.json -> README block `storage`

A cell is one (augmentation level, objective) at the preset's own size; its runs are (world,
seed) pairs. Every rate (probe accuracy, extraction) is a study-level estimate from the items
nested in the runs (`interp.stats.rate_estimate`: the hierarchical bootstrap, runs then
items, widened to the Wilson interval of the pooled items, so one run still gets the interval
its people allow and 0 of 100 is [0, 3.7]%, not a point). The items are:

- Q-probe: person x attribute (the four attributes of one person are pooled as four items, so
  the interval is a little narrow), at each attribute's best layer;
- reverse Q-probe and the positive controls: one person each;
- extraction: one (person, question) each, on people never questioned in training ("unseen")
  and on the people whose QA was trained.

A probe's best layer is a maximum over layers, so it is set beside the permutation null's
95th percentile of the same maximum (labels permuted, every layer refit), and beside the
control task's best layer (a random label per last-name token: the probe's capacity to
memorise the input's identity; Hewitt & Liang). The papers' predictions (Allen-Zhu & Li,
Part 3.1 and 3.2) are judged by `storage_checks` under the rules of `interp.findings`, with
two more: a null prediction about a probe holds when its best layer is not above its null's
95th percentile, and a target (the issue's >= 0.8) is met when the estimate reaches it, missed
when the interval's upper end is below it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interp.data.biography import LABELS
from interp.findings import (
    _cell,
    _check,
    _pct,
    _vs,
    code_sha256,
    config_without_device,
    runs_sha256,
    verdict_lift,
    verdict_near,
)
from interp.stats import rate_estimate
from interp.storage_study import TARGET_EXTRACTION, TARGET_Q, memorisation_floor, targets_met

CITATIONS = {
    "allen_zhu_31": "Allen-Zhu & Li 2023, Physics of Language Models Part 3.1: Knowledge "
    "Storage and Extraction, arXiv 2309.14316",
    "allen_zhu_32": "Allen-Zhu & Li 2023, Physics of Language Models Part 3.2: Knowledge "
    "Manipulation, arXiv 2309.14402",
}


def storage_sha256(plan: Any) -> str:
    """SHA-256 of what a storage study runs: every run's config (the device left out) with its
    level and scale, and the probes' options (`interp.findings.runs_sha256`)."""
    runs = [
        {"level": level, "scale": scale, "config": config_without_device(cfg)}
        for level, scale, cfg in plan.configs()
    ]
    return runs_sha256(runs, plan.options)


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
    }
    return node | extra


def _hits(r: dict[str, Any], key: str) -> list[float]:
    """A probe's best-layer accuracy over the run's probed people, as 0/1 items."""
    n = r["n_people"]
    return _items(round(r["summary"][f"{key}_best"] * n), n)


def _mean(results: list[dict[str, Any]], key: str) -> float:
    return sum(r["summary"][key] for r in results) / len(results)


def cell_findings(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's numbers from its runs' storage results (`analysis/storage.json` data)."""
    q = [
        sum((_hits(r, f"q_{lab}") for lab in LABELS), [])
        for r in results
    ]  # fmt: skip
    cell: dict[str, Any] = {
        "n_runs": len(results),
        "n_people": [r["n_people"] for r in results],
        "q_probe": _node(
            q,
            "person-attributes",
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
    )  # fmt: skip
    for key in ("pos_role_from_work", "pos_first_class_from_name"):
        cell[key] = _node(
            [_hits(r, key) for r in results],
            "people",
        )  # fmt: skip
    for subset, name in (("qa_test", "unseen"), ("qa_train", "trained")):
        fwd = [
            sum((_items(*r["extraction"][lab][subset][3:5]) for lab in LABELS), []) for r in results
        ]
        cell[f"extract_forward_{name}"] = _node(fwd, "person-questions")
        inv = [_items(*r["extraction"]["inverse"][subset][3:5]) for r in results]
        cell[f"extract_inverse_{name}"] = _node(inv, "people")
    return cell


def storage_findings(
    run_dirs: list[Path], scales: list[str], plan: Any, preset: str
) -> dict[str, Any]:
    """{preset, provenance, cells: {level: {objective: cell}}, scale: [rows]} from the runs'
    saved results; runs at a scale setting (`storage_scale`) go to `scale`, one row each."""
    from interp.plots.storage import level_name
    from interp.results import read_result
    from interp.runs import versions

    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    scale_rows = []
    for rd, scale in zip(run_dirs, scales, strict=True):
        r = read_result(rd, "storage", arrays=False).data
        level = "augmented" if r["augmentation"]["multiplicity"] > 1 else "plain"
        if scale:
            row = {
                "scale": scale,
                "objective": r["objective"],
                "level": level_name(r["augmentation"]),
            }
            scale_rows.append(row | scale_row(rd, r))
        else:
            grouped.setdefault((level, r["objective"]), []).append(r)
    cells: dict[str, dict[str, Any]] = {}
    for (level, objective), results in grouped.items():
        cell = cell_findings(results)
        cell["augmentation"] = level_name(results[0]["augmentation"])
        cells.setdefault(level, {})[objective] = cell
    v = versions()
    return {
        "preset": preset,
        "levels": list(plan.levels),
        "objectives": list(plan.objectives),
        "seeds": list(plan.seeds),
        "provenance": {
            "code_sha256": code_sha256(),
            "study_sha256": storage_sha256(plan),
            "torch": v["torch"],
            "transformer_lens": v["transformer-lens"],
        },
        "cells": cells,
        "scale": scale_rows,
    }


def scale_row(run_dir: Path, r: dict[str, Any]) -> dict[str, Any]:
    """One `storage_scale` run: its size, training loss beside the memorisation floor, training
    seconds, Q-probe and forward extraction on unseen people, and whether the targets are met."""
    import numpy as np

    from interp.runs import build_dataset, load_config

    cfg = load_config(run_dir)
    log = [json.loads(ln) for ln in (run_dir / "train_log.jsonl").read_text().splitlines()]
    cell = cell_findings([r])
    fwd = cell["extract_forward_unseen"]
    return {
        "d_model": cfg.model.d_model,
        "steps": cfg.train.steps,
        "people": r["n_people"],
        "loss": float(np.mean([e["loss"] for e in log[-10:]])),
        "floor": memorisation_floor([d.tokens for d in build_dataset(cfg).train_docs]),
        "train_seconds": float(log[-1]["elapsed_s"]),
        "q_probe": cell["q_probe"],
        "q_per_attribute": {lab: r["summary"][f"q_{lab}_best"] for lab in LABELS},
        "extract_forward_unseen": fwd,
        "extract_inverse_unseen": cell["extract_inverse_unseen"],
        "targets_met": targets_met(cell["q_probe"]["estimate"], fwd["estimate"]),
    }


# ---------------------------------------------------------------------------------------------
# The papers' predictions, judged


def verdict_null(x: dict[str, Any] | None, want_null: bool) -> str:
    """A probe's best layer against its permutation null's 95th percentile (a maximum over
    layers against the null's maximum): above it the probe reads the label. `want_null`: the
    prediction is that it does not."""
    if not x or x.get("estimate") is None or x.get("null95") is None:
        return "not measured"
    above = x["estimate"] > x["null95"]
    return (
        ("not reproduced" if above else "reproduced")
        if want_null
        else ("reproduced" if above else "not reproduced")
    )


def verdict_target(x: dict[str, Any] | None, target: float) -> str:
    """A target: met when the estimate reaches it, missed when the interval's upper end is below
    it, inconclusive between."""
    if not x or x.get("estimate") is None:
        return "not measured"
    if x["estimate"] >= target:
        return "reproduced"
    return "not reproduced" if x["high"] < target else "inconclusive"


def _with_null(x: dict[str, Any] | None) -> str:
    if not x:
        return "-"
    return f"{_pct(x)} (null95 {100 * x['null95']:.1f}%)"


def storage_checks(f: dict[str, Any]) -> list[dict[str, str]]:
    """Allen-Zhu & Li's predictions for the storage study, each judged by its rule."""

    def cell(level: str, objective: str, key: str) -> dict[str, Any] | None:
        node: dict[str, Any] | None = f.get("cells", {}).get(level, {}).get(objective, {}).get(key)
        return node

    out = []
    q_plain, q_aug = cell("plain", "causal", "q_probe"), cell("augmented", "causal", "q_probe")
    out.append(_check(
        "Without augmentation (one biography, fixed order), the attributes are not linearly "
        "decodable at the name: the Q-probe's best layer is not above its permutation null",
        "allen_zhu_31", "near chance (bioS single)", _with_null(q_plain),
        verdict_null(q_plain, want_null=True),
    ))  # fmt: skip
    tr, un = (
        cell("plain", "causal", "extract_forward_trained"),
        cell("plain", "causal", "extract_forward_unseen"),
    )
    out.append(_check(
        "Without augmentation the facts are memorised but not extractable: forward QA on "
        "QA-trained people above QA on people never questioned",
        "allen_zhu_31", "memorised, extraction low", _vs(tr, un), verdict_lift(tr, un),
    ))  # fmt: skip
    out.append(_check(
        "Augmentation (x5 biographies, permuted, full name) lifts the Q-probe at the name",
        "allen_zhu_31", "near chance -> near-perfect", _vs(q_aug, q_plain),
        verdict_lift(q_aug, q_plain),
    ))  # fmt: skip
    un_aug = cell("augmented", "causal", "extract_forward_unseen")
    out.append(_check(
        "Augmentation lifts forward extraction on people never questioned",
        "allen_zhu_31", "low -> ~96%", _vs(un_aug, un), verdict_lift(un_aug, un),
    ))  # fmt: skip
    out.append(_check(
        f"With augmentation the Q-probe at the name reaches the target {TARGET_Q:.0%} (mean of "
        "the four attributes)",
        "allen_zhu_31", "near-perfect", _with_null(q_aug), verdict_target(q_aug, TARGET_Q),
    ))  # fmt: skip
    out.append(_check(
        f"With augmentation forward extraction on unseen people reaches the target "
        f"{TARGET_EXTRACTION:.0%}",
        "allen_zhu_31", "~96%", _pct(un_aug), verdict_target(un_aug, TARGET_EXTRACTION),
    ))  # fmt: skip
    for level in ("plain", "augmented"):
        inv = cell(level, "causal", "extract_inverse_unseen")
        out.append(_check(
            f"Inverse search (the person from an attribute) stays near 0% under next-token "
            f"training ({level}, unseen people)",
            "allen_zhu_32", "about 0% in every regime", _pct(inv), verdict_near(inv, 0.0),
        ))  # fmt: skip
    rq = cell("augmented", "causal", "reverse_q")
    out.append(_check(
        "The person is not decodable from the attribute alone under next-token training "
        "(augmented; reverse Q-probe: the work -> first-name class, not above its null)",
        "allen_zhu_32", "(the mechanism of inverse search failing)", _with_null(rq),
        verdict_null(rq, want_null=True),
    ))  # fmt: skip
    base = cell("augmented", "causal", "extract_inverse_unseen")
    for objective in ("reverse_entity", "mlm_u"):
        x = cell("augmented", objective, "extract_inverse_unseen")
        out.append(_check(
            f"{objective} lifts inverse search above next-token training (augmented, unseen "
            "people, causal decoding)",
            "allen_zhu_32", "(the issue: measurably higher)", _vs(x, base), verdict_lift(x, base),
        ))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Tables for the README block


def cells_table(f: dict[str, Any]) -> str:
    """Per level x objective: Q-probe, reverse Q, positive controls, extraction."""
    rows = [
        "| augmentation | objective | runs x people | Q-probe at the name (null95 / control / "
        "chance) | reverse Q-probe (null95, p) | positive controls: role from work / "
        "first-name class from name | forward QA, unseen (QA-trained) | inverse QA, unseen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level in f.get("levels", []):
        for objective in f.get("objectives", []):
            c = f.get("cells", {}).get(level, {}).get(objective)
            if c is None:
                continue
            q, rq = c["q_probe"], c["reverse_q"]
            p = ", ".join(f"{x:.3f}" for x in rq["p"])
            rows.append(
                f"| {level} ({c['augmentation']}) | {objective} | {c['n_runs']} x "
                f"{'/'.join(str(n) for n in c['n_people'])} | {_pct(q)} ({100 * q['null95']:.1f}"
                f" / {100 * q['control']:.1f} / {100 * q['chance']:.1f}%) | {_pct(rq)} "
                f"({100 * rq['null95']:.1f}%, p {p}) | {_pct(c['pos_role_from_work'])} / "
                f"{_pct(c['pos_first_class_from_name'])} | {_pct(c['extract_forward_unseen'])} "
                f"({_pct(c['extract_forward_trained'])}) | {_pct(c['extract_inverse_unseen'])} |"
            )
    return "\n".join(rows)


def scale_table(f: dict[str, Any] | None) -> str:
    """The `storage_scale` ladder: what width, steps and people bought against the targets."""
    if not f or not f.get("scale"):
        return "*Not run: `make study PRESET=storage_scale` makes it.*"
    rows = [
        "| scale | d_model | steps | people probed (unseen) | loss / memorisation floor | "
        "train s | Q-probe "
        "(role / city / year / employer) | Q-probe mean | forward QA, unseen | inverse QA, "
        "unseen | targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in f["scale"]:
        per = " / ".join(f"{r['q_per_attribute'][lab]:.2f}" for lab in LABELS)
        rows.append(
            f"| {r['scale']} | {r['d_model']} | {r['steps']} | {r['people']} | "
            f"{r['loss']:.3f} / {r['floor']:.3f} | {r['train_seconds']:.0f} | {per} | "
            f"{_pct(r['q_probe'])} | {_pct(r['extract_forward_unseen'])} | "
            f"{_pct(r['extract_inverse_unseen'])} | {'yes' if r['targets_met'] else 'no'} |"
        )
    return "\n".join(rows)


def checks_table(f: dict[str, Any]) -> str:
    """The papers' predictions judged (`storage_checks`), with the rules and sources."""
    rows = [
        "| prediction | source | paper | this kit | verdict |",
        "|---|---|---|---|---|",
        *(
            f"| {_cell(c['claim'])} | {c['source']} | {_cell(c['paper'])} | "
            f"{_cell(c['ours'])} | **{c['verdict']}** |"
            for c in storage_checks(f)
        ),
    ]
    return "\n".join(rows)


CHECK_RULES = (
    "Verdicts (computed by `interp.storage_findings.storage_checks`, percentage points): a "
    "predicted lift is *reproduced* when the 95% intervals show it and *not reproduced* when "
    "the data exclude a lift of 10 points (`interp.findings.verdict_lift`); a paper's number is "
    "reproduced when the kit's interval meets it +-10 points; a probe predicted to read "
    "nothing is *reproduced* when its best layer is not above its permutation null's 95th "
    "percentile; a target is *reproduced* when the estimate reaches it and *not reproduced* "
    "when the interval's upper end is below it. The papers' models are larger and their "
    "biographies richer, so a verdict says whether the effect appears at the kit's size."
)


def sources() -> str:
    return "Sources: " + "; ".join(f"{k}: {v}" for k, v in CITATIONS.items()) + "."


def findings_markdown(f: dict[str, Any]) -> str:
    """findings.md beside a storage study: its tables and checks, without the README's prose."""
    out = [f"# Storage study ({f['preset']}): findings", ""]
    if f.get("cells"):
        out += [cells_table(f), "", CHECK_RULES, "", checks_table(f), "", sources(), ""]
    if f.get("scale"):
        out += ["## What it takes", "", scale_table(f), ""]
    if f.get("timing"):
        out += [f"Wall time: {f['timing']['text']}.", ""]
    p = f["provenance"]
    out.append(f"Made by code sha256 `{p['code_sha256']}` for study configs sha256 "
               f"`{p['study_sha256']}` (torch {p['torch']}).")  # fmt: skip
    return "\n".join(out) + "\n"
