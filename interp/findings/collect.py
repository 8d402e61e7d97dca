"""Collecting a study's numbers from its runs' saved results, and nothing else.

`Study` is a plan's runs on disk, each result read once. `collect` writes what the findings hold:
provenance, and (unless the preset collects its own way, as the storage study does by level)
per objective:

- behaviour: exact match per subset x direction x template kind (people nested in runs, rates
  bounded to [0, 100]%) in each objective's own mode, causal decoding beside it where asked,
  in-document infill and whether each run learned its own objective (`learned`: the criterion
  every comparison of objectives reads), the identity bridge's own prompts, and the
  reversed log-probability test per subset x template kind (study-level difference with its
  hierarchical interval, Fisher-combined p, the bound a null supports, and a one-line `claim`
  saying what the numbers show and no more) against the random same-subset control
  (`reversed`) and, where the world's people have roles, against the role-matched one
  (`reversed_role_matched`), all from `interp.analysis.behaviour`;
- every instrument's declared headline numbers: mean and 95% interval over runs inside the
  number's declared range (`interp.stats.runs_interval`) with n, p-values listed per run and
  Fisher-combined, never averaged;
- the steps each objective trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from interp.analysis import INSTRUMENTS
from interp.analysis.behaviour import FILES as BEHAVIOUR_FILES
from interp.analysis.behaviour import (
    ReversedCell,
    bridge_rates,
    causal_cell,
    cells,
    exact_match_cell,
    has_matched,
    reversed_cell,
    reversed_family,
)
from interp.findings.provenance import provenance
from interp.plan import Plan, RunSpec
from interp.results import Declared, Result
from interp.stats import Decision, Estimate, combine_pvalues, fmt_pvalues, runs_interval

T = TypeVar("T")


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: its directory and what the plan made it."""

    path: Path
    spec: RunSpec


@dataclass
class Study:
    """A plan's runs in OUT/runs, each result read at most once."""

    plan: Plan
    runs: list[StudyRun]
    _cache: dict[tuple[Path, str], Result[Any] | None] = field(default_factory=dict, repr=False)
    _stats: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, plan: Plan, out: str | Path) -> Study:
        return cls(plan, [StudyRun(Path(out) / "runs" / s.name, s) for s in plan.runs()])

    def groups(self) -> dict[str, list[StudyRun]]:
        """Runs that replicate one another (axis labels and objective), in plan order."""
        out: dict[str, list[StudyRun]] = {}
        for r in self.runs:
            out.setdefault(r.spec.group, []).append(r)
        return out

    def result(self, run: StudyRun, instrument: str) -> Result[Any] | None:
        """`instrument`'s result on `run`, or None where the run lacks it."""
        key = (run.path, instrument)
        if key not in self._cache:
            ins = INSTRUMENTS[instrument]
            files = (
                BEHAVIOUR_FILES if instrument == "behaviour" else (f"analysis/{instrument}.json",)
            )
            have = all((run.path / f).is_file() for f in files)
            self._cache[key] = ins.read(run.path) if have else None
        return self._cache[key]

    def results(self, runs: list[StudyRun], instrument: str) -> list[Result[Any]]:
        """The results of `instrument` of those of `runs` that have it."""
        return [r for run in runs if (r := self.result(run, instrument)) is not None]

    def behaviour(self, group: str, statistic: Callable[..., T], *cell: str) -> T:
        """`statistic(results, *cell)` over a group's behaviour results, computed once per study
        (the findings and the report quote the same bootstraps)."""
        key = (group, statistic.__name__, *cell)
        if key not in self._stats:
            results = self.results(self.groups()[group], "behaviour")
            self._stats[key] = statistic(results, *cell)
        out: T = self._stats[key]
        return out


def finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def runs_fields(e: Estimate) -> dict[str, Any]:
    """Each run's items summarised (mean, standard deviation, number), in run order: what the
    one rule for comparing two nodes tests run by run (`interp.findings.verdicts`)."""
    if not e.runs:
        return {}
    means, sds, ns = zip(*e.runs, strict=True)
    return {"per_run": list(means), "per_run_sd": list(sds), "per_run_n": list(ns)}


def estimate_node(e: Estimate, text: str) -> dict[str, Any]:
    return {
        "estimate": finite(e.estimate),
        "low": finite(e.low),
        "high": finite(e.high),
        "n_runs": e.n_runs,
        "n_items": e.n_items,
        "text": text,
    } | runs_fields(e)


def over_runs(values: list[float], number: Declared) -> dict[str, Any]:
    """One headline number over runs: mean [95% interval inside the number's declared range]
    (n runs), by `interp.stats.runs_interval` (no interval for 1 run or identical runs), or,
    for a p-value, the per-run p-values listed and Fisher-combined."""
    if number.pvalue:
        return {
            "per_run": values,
            "combined_fisher": finite(combine_pvalues(values)),
            "text": fmt_pvalues(values),
        }
    r = runs_interval(values, number.range)
    text = r.fmt(digits=2)
    if r.method not in ("single", "constant"):  # the README has no legend for the dagger
        why = (
            ", a run on the range's bound: t-interval truncated"
            if r.method == "t-truncated"
            else ""
        )
        text = text.replace("\u2020", "").replace(f"(n={r.n})", f"(n={r.n} runs{why})")
    return {
        "per_run": values,
        "estimate": finite(r.mean),
        "low": finite(r.low) if r.low is not None else None,
        "high": finite(r.high) if r.high is not None else None,
        "interval": r.method,
        "n_runs": r.n,
        "text": text,
    }


def reversed_node(c: ReversedCell, d: Decision) -> dict[str, Any]:
    """A reversed log-prob test as a findings node: the study-level difference, the one rule's
    decision (`reversed_family`: one-sided p over runs, Holm over the family, `effect`, the
    minimal detectable effect), the two-sided Fisher p and per-run p-values, the bound a null
    supports, the forward effect, and its claim."""
    node = estimate_node(c.study, c.study.fmt(items="people"))
    node.update(
        fisher_p=finite(c.fisher_p),
        per_run_p=[t.p for _, t, _, _ in c.runs],
        p_one_sided=finite(d.p),
        p_holm=finite(d.p_holm),
        family_size=d.m,
        effect=d.effect,
        null=not d.effect,
        mde=finite(d.mde),
        bound=finite(c.bound),
        forward=estimate_node(c.forward, c.forward.fmt(items="people")),
        claim=c.claim(d),
    )
    return node


def behaviour_findings(study: Study) -> dict[str, Any]:
    """{objective: {"exact_match": {"<subset>_<direction>_<kind>": ...}, "reversed":
    {"<subset>_<kind>": ...}, "reversed_role_matched" (worlds with roles), "causal_exact_match",
    "infill", "learned", "bridge"}} from the runs' evaluation."""
    out: dict[str, Any] = {}
    for o, runs in study.groups().items():
        results = study.results(runs, "behaviour")
        if not results:
            continue
        cs = cells(results[0])
        em = {}
        causal = {}
        for s, d, k in cs:
            e = study.behaviour(o, exact_match_cell, s, d, k)
            em[f"{s}_{d}_{k}"] = estimate_node(e, e.fmt(pct=True, items="people"))
            n = study.behaviour(o, causal_cell, s, d, k)
            if n is not None:
                causal[f"{s}_{d}_{k}"] = estimate_node(n, n.fmt(pct=True, items="people"))
        rev: dict[str, Any] = {}
        matched: dict[str, Any] = {}
        reverse = [(s, k) for s, d, k in cs if d == "reverse"]
        families = {"random": (rev, [study.behaviour(o, reversed_cell, s, k) for s, k in reverse])}
        if has_matched(results):
            cells_ = [study.behaviour(o, reversed_cell, s, k, "matched") for s, k in reverse]
            families["matched"] = (matched, cells_)
        for nodes, family in families.values():  # the one rule, per declared family
            for c, decision in zip(family, reversed_family(family), strict=True):
                nodes[f"{c.subset}_{c.kind}"] = reversed_node(c, decision)
        out[o] = {"exact_match": em, "reversed": rev}
        if matched:
            out[o]["reversed_role_matched"] = matched
        if causal:
            out[o]["causal_exact_match"] = causal
        out[o].update(learned_findings([r.data for r in results]))
        rates = bridge_rates(results)
        if rates:
            out[o]["bridge"] = {
                k: v if k == "condition" else estimate_node(v, v.fmt(pct=True, items="prompts"))
                for k, v in rates.items()
            }
    return out


def _spread(v: list[float]) -> dict[str, Any]:
    """Per-run rates as a node: their mean, and the lowest and highest run as low and high."""
    m, lo, hi = sum(v) / len(v), min(v), max(v)
    text = f"{100 * m:.1f}% (runs {100 * lo:.1f}-{100 * hi:.1f}%)"
    return {"per_run": v, "estimate": m, "low": lo, "high": hi, "n_runs": len(v), "text": text}


def learned_findings(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether each run learned its own objective (`interp.evaluate.learned`), and its in-document
    infill per subset x entity: {"learned": {"met", "per_run", "criterion"}, "infill":
    {"<subset>_<direction>": {"per_run", "estimate", "low": min, "high": max, "text"}}}.
    Runs evaluated before the criterion existed give {}."""
    found = [m["learned"] for m in metrics if "learned" in m]
    if not found:
        return {}
    met = [bool(x["met"]) for x in found]
    out: dict[str, Any] = {
        "learned": {
            "met": all(met) and len(found) == len(metrics),
            "per_run": met,
            "criterion": found[0]["criterion"],
            "text": f"{sum(met)} of {len(metrics)} runs",
        }
    }
    fills: dict[str, list[float]] = {}
    for x in found:
        for k, v in x.get("infill", {}).items():
            fills.setdefault(k, []).append(float(v))
    if fills:
        out["infill"] = {k: _spread(v) for k, v in fills.items()}
    return out


def instrument_findings(study: Study) -> dict[str, Any]:
    """{instrument: {objective: {headline key: ...}}} from each run's result."""
    out: dict[str, Any] = {}
    for name, ins in INSTRUMENTS.items():
        numbers = ins.summary_type.headlines()
        if not numbers:
            continue
        per_obj: dict[str, Any] = {}
        for o, runs in study.groups().items():
            sums = [r.summary for r in study.results(runs, name)]
            if not sums:
                continue
            keys = {}
            for d in numbers:
                vals = [v for s in sums if (v := s.value(d.key)) is not None]
                if vals:
                    keys[d.key] = over_runs(vals, d)
            per_obj[o] = keys
        if per_obj:
            out[name] = per_obj
    return out


def steps_findings(study: Study) -> dict[str, Any]:
    """{objective: {"per_run": [training steps of each run], "text"}} from the runs' configs."""
    out: dict[str, Any] = {}
    for o, runs in study.groups().items():
        steps = [r.spec.config.train.steps for r in runs if (r.path / "config.json").is_file()]
        if steps:
            lo, hi = min(steps), max(steps)
            out[o] = {"per_run": steps, "text": str(lo) if lo == hi else f"{lo}-{hi}"}
    return out


def collect_by_objective(study: Study) -> dict[str, Any]:
    """Behaviour, instruments and steps per objective (a preset without axes)."""
    return {
        "runs": {o: [r.path.name for r in rs] for o, rs in study.groups().items()},
        "steps": steps_findings(study),
        "behaviour": behaviour_findings(study),
        "instruments": instrument_findings(study),
    }


def collect(study: Study) -> dict[str, Any]:
    """Every finding of a study's runs, with provenance (a JSON-ready dict)."""
    how = study.plan.preset.collect or collect_by_objective
    return {
        "provenance": provenance(study.plan),
        "preset": study.plan.name,
        **how(study),
        # replaced by the ledger's when `interp study` recorded one
        "timing": {
            "wall_seconds": None,
            "text": "not recorded (the findings were written outside `interp study`)",
        },
    }
