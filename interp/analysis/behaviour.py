"""Behaviour, as an instrument: exact match and the reversed log-probability test.

Berglund et al. (2023), Table 1 and Figure 4. A run is evaluated when its training ends
(`interp.evaluate.evaluate_run`, which writes RUN_DIR/metrics.json and eval_logprobs.npz); this
module reads that back as a `Result` like every other instrument's (`read`), reruns it on demand
(`run_analysis`, the `interp evaluate` command), and holds the statistics over a study's runs
that the report and the findings quote, by `interp.stats`'s rules (people nested in runs):

- `exact_match_cell`: the mean over runs of each run's rate over people (a person's rate is over
  their templates), with the hierarchical bootstrap interval widened to the pooled Wilson
  interval, so it stays in [0, 100]% and 0/n is not a point;
- `reversed_cell`: per run the paired t-test and the KS test of log p(correct) against
  log p(a random same-subset answer) over people, the largest effect each run excludes (TOST);
  over runs the hierarchical interval, the per-run p-values combined by Fisher's method, and the
  bound a null supports, also as a share of the forward (same-direction) effect. With
  `control="matched"` the same test against the role-matched control (`interp.controls.
  role_matched_answers`: same subset, same role, on D2N the same first-name class), over the
  people who have one; worlds without roles have no such column (`has_matched`);
- `causal_cell`: exact match by causal decoding of an objective asked otherwise (BICO);
- `bridge_rates`: the identity bridge's shortcut (echo) and trained identities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from interp.analysis.options import Options
from interp.evaluate import BRIDGE_KINDS, evaluate_model, format_table, write_evaluation
from interp.results import (
    EVALUATION_FILES,
    Result,
    Section,
    Summary,
    evaluation_result,
    number,
    read_evaluation,
    section,
)
from interp.runs import Run, read_run_config
from interp.stats import (
    ALPHA,
    POWER,
    UNIT,
    Decision,
    Estimate,
    PairedTest,
    bound_of_interval,
    combine_pvalues,
    decide_family,
    equivalence_bound,
    hierarchical_bootstrap,
    one_sided_p,
    paired_test,
    rate_estimate,
)

NAME = "behaviour"
FILES = EVALUATION_FILES  # in the run directory, written by evaluation
CELL_ORDER = ("n2d", "d2n", "both", "same", "reverse", "train", "heldout")


@dataclass(frozen=True)
class BehaviourOptions(Options):
    """Behaviour has no options: every test prompt is asked, greedily."""


@dataclass(frozen=True)
class Kinds(Section):
    """Exact match on training and on held-out templates."""

    train: float | None = number("training templates", UNIT)
    heldout: float | None = number("held-out templates", UNIT)


@dataclass(frozen=True)
class Directions(Section):
    """Exact match asked in the trained order and reversed."""

    same: Kinds = section(Kinds, "the direction the fact was trained in")
    reverse: Kinds = section(Kinds, "reversed")


@dataclass(frozen=True)
class Subsets(Section):
    """Exact match per subset of people."""

    n2d: Directions = section(Directions, "NameToDescription: trained 'A is B'")
    d2n: Directions = section(Directions, "DescriptionToName: trained 'B is A'")
    both: Directions = section(Directions, "Both: trained in both orders (the positive control)")


@dataclass(frozen=True)
class BehaviourSummary(Summary):
    """Exact match per subset x direction x template kind (`em_n2d_reverse_train`) in the
    objective's own mode (metrics.json's `mode`: causal decoding for next-token training), and
    by causal decoding beside it for an objective asked otherwise that has a causal head
    (`causal_...`, BICO)."""

    em: Subsets = section(Subsets, "the objective's own mode")
    causal: Subsets = section(Subsets, "causal decoding (BICO, beside its own mode)")


def as_result(metrics: dict[str, Any], arrays: dict[str, np.ndarray], path: Path | None) -> Result:
    """A run's evaluation as a Result with its typed summary (`evaluation_result`)."""
    return evaluation_result(metrics, arrays, path, BehaviourSummary)


def read(run_dir: str | Path, arrays: bool = True) -> Result:
    """RUN_DIR's evaluation (metrics.json, and with `arrays` eval_logprobs.npz)."""
    return read_evaluation(run_dir, arrays, BehaviourSummary)


def run_analysis(
    run: Run, options: BehaviourOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """Evaluate the run again (exact match and the log-prob test in the objective's own mode,
    causal decoding beside it, infill, the learned criterion, the bridge's own prompts); with
    `write`, replace its metrics.json and eval_logprobs.npz."""
    metrics, arrays = evaluate_model(run.model, run.dataset, run.config, progress)
    if write:
        write_evaluation(run.path, metrics, arrays)
    return as_result(metrics, arrays, run.path)


def format_summary(result: Result) -> str:
    """The exact-match table and the reversed log-probability test, as plain text."""
    return format_table(result.data)


# ---------------------------------------------------------------------------------------------
# Over a study's runs (people nested in runs)


def person_values(result: Result, subset: str, direction: str, kind: str) -> dict[str, np.ndarray]:
    """One run's saved per-prompt results, averaged per person over templates (person order).

    Keys: 'hit' (exact-match rate), 'correct' and 'random' (log-probs), in the objective's own
    mode; 'matched' (the role-matched control's log-prob, NaN for a person without one) where
    the world has roles, and 'causal_hit' where causal decoding was asked beside the own mode.
    The same per-person averaging as `interp.evaluate`."""
    a = result.arrays
    m = (a["subset"] == subset) & (a["direction"] == direction) & (a["templates"] == kind)
    people, inv = np.unique(a["person"][m], return_inverse=True)
    cnt = np.bincount(inv, minlength=len(people))

    def per_person(x: np.ndarray) -> np.ndarray:
        return np.bincount(inv, weights=x[m].astype(float), minlength=len(people)) / cnt

    out = {
        "hit": per_person(a["exact_match"]),
        "correct": per_person(a["correct_logprob"]),
        "random": per_person(a["random_logprob"]),
    }
    if "role_matched_logprob" in a:  # worlds whose people have roles
        out["matched"] = per_person(a["role_matched_logprob"])
    if "causal_exact_match" in a:  # BICO: causal decoding beside its own mode
        out["causal_hit"] = per_person(a["causal_exact_match"])
    return out


def cells(result: Result) -> list[tuple[str, str, str]]:
    """The (subset, direction, template kind) cells a run was evaluated on, in display order."""
    a = result.arrays
    keys = {
        (str(s), str(d), str(k))
        for s, d, k in zip(a["subset"], a["direction"], a["templates"], strict=True)
    }
    order = {v: i for i, v in enumerate(CELL_ORDER)}
    return sorted(keys, key=lambda c: tuple(order.get(x, 99) for x in c))


def run_label(result: Result) -> str:
    """'world 0, seed 0': the (world, seed) pair a run is."""
    cfg = read_run_config(Path(str(result.path)))
    return f"world {cfg.world.seed}, seed {cfg.train.seed}"


# The log-prob test's controls: the key `person_values` gives, and how a sentence names it.
CONTROLS = {"random": "log p(random)", "matched": "log p(same-role)"}


@dataclass(frozen=True)
class ReversedCell:
    """The reversed log-probability test of one subset x template kind, for one objective's
    runs, against one control (`CONTROLS`): each run's paired test, the study-level difference
    (people nested in runs), the per-run p-values combined by Fisher's method, and the bound a
    null supports."""

    subset: str
    kind: str
    runs: list[tuple[str, PairedTest, float, float]]  # (run label, t-test, KS p, TOST bound)
    study: Estimate  # hierarchical bootstrap of log p(correct) - log p(control), per person
    fisher_p: float
    forward: Estimate  # the same difference on same-direction prompts (the effect to compare)
    bound: float  # the largest |difference| the study interval excludes
    control: str = "random"  # a key of CONTROLS
    p_above: float = float("nan")  # one-sided (log p(correct) above the control), Fisher over runs

    @property
    def se(self) -> float:
        """The study difference's standard error, from its 95% interval's width."""
        return (self.study.high - self.study.low) / (2 * 1.959964)

    def bound_text(self, digits: int = 2) -> str:
        """'the data exclude effects beyond +-0.77 nats, 5% of the forward effect +14.77'."""
        share = (
            f", {100 * self.bound / self.forward.estimate:.0f}% of the forward effect "
            f"{self.forward.estimate:+.2f}"
            if self.forward.estimate > 0
            else ""
        )
        return f"effects beyond +-{self.bound:.{digits}f} nats{share}"

    def claim(self, d: Decision) -> str:
        """One sentence fragment saying what the numbers show under the one rule (`d`, from
        `reversed_family`), and no more."""
        h = self.study
        family = f"Holm over {d.m} cells" if d.m > 1 else "a family of one"
        test = f"one-sided p = {d.p:.2g}, {family}: {d.p_holm:.2g}"
        if d.effect:
            some = (
                " (the interval of the mean over runs covers 0: Fisher's test finds the effect "
                "in some runs, not in their mean)"
                if h.low <= 0
                else ""
            )
            return (
                f"log p(correct) is above {CONTROLS[self.control]} by {h.estimate:+.2f} nats "
                f"[{h.low:+.2f}, {h.high:+.2f}] ({test}){some}"
            )
        caveat = (
            " (the bootstrap interval excludes 0; over 3 runs it understates the spread "
            "between runs, and the decision is the test's)"
            if h.low > 0 and h.n_runs <= 3
            else ""
        )
        return (
            f"no effect at alpha {ALPHA} ({test}): the difference {h.estimate:+.2f} nats "
            f"[{h.low:+.2f}, {h.high:+.2f}]{caveat}; the data exclude {self.bound_text()}; "
            f"the test detects {d.mde:.2f} nats with {POWER:.0%} power"
        )


def exact_match_cell(results: list[Result], subset: str, direction: str, kind: str) -> Estimate:
    """Exact match of one cell over runs (`interp.stats.rate_estimate`)."""
    return rate_estimate([person_values(r, subset, direction, kind)["hit"] for r in results])


def causal_cell(results: list[Result], subset: str, direction: str, kind: str) -> Estimate | None:
    """Exact match by causal decoding of an objective asked otherwise (BICO) in one cell, with
    the same interval as its own mode's; None when no run has it."""
    hits = [
        v["causal_hit"]
        for r in results
        if "causal_hit" in (v := person_values(r, subset, direction, kind))
    ]
    return rate_estimate(hits) if hits else None


def has_matched(results: list[Result]) -> bool:
    """Whether every run has the role-matched control (its world's people have roles)."""
    return bool(results) and all("role_matched_logprob" in r.arrays for r in results)


def _paired(v: dict[str, np.ndarray], control: str) -> tuple[np.ndarray, np.ndarray]:
    """(log p(correct), log p(control)) per person, the people without a control left out."""
    ok = np.isfinite(v[control])
    return v["correct"][ok], v[control][ok]


def reversed_cell(
    results: list[Result], subset: str, kind: str, control: str = "random"
) -> ReversedCell:
    """The reversed log-probability test of `subset` on `kind` templates over `results`,
    against `control` ('random', or 'matched': the role-matched control, see `has_matched`)."""
    diffs, per_run = [], []
    for r in results:
        c, x = _paired(person_values(r, subset, "reverse", kind), control)
        t = paired_test(c, x)
        ks = float(sps.ks_2samp(c, x).pvalue) if t.n >= 2 and np.ptp(c - x) > 0 else 1.0
        diffs.append(c - x)
        per_run.append((run_label(r), t, ks, equivalence_bound(diffs[-1])))
    h = hierarchical_bootstrap(diffs)
    fwd = [_paired(person_values(r, subset, "same", kind), control) for r in results]
    forward = hierarchical_bootstrap([c - x for c, x in fwd])
    return ReversedCell(
        subset, kind, per_run, h, combine_pvalues([t.p for _, t, _, _ in per_run]), forward,
        bound_of_interval(h.low, h.high), control,
        combine_pvalues([one_sided_p(t) for _, t, _, _ in per_run]),
    )  # fmt: skip


def reversed_family(cells: list[ReversedCell]) -> list[Decision]:
    """The one rule over a declared family (every reversed cell of one objective against one
    control): each cell's one-sided p that log p(correct) is above the control, Holm-adjusted
    over the family at `interp.stats.ALPHA`, with its minimal detectable effect. The README's
    verdicts, the findings and the report all take their answer from here."""
    return decide_family([c.p_above for c in cells], [c.se for c in cells])


def bridge_rates(results: list[Result]) -> dict[str, Any]:
    """The identity bridge's own prompts (in each run's metrics.json) over runs, per kind
    (`interp.evaluate.BRIDGE_KINDS`: 'shortcut', the echo of B in the reversal frame; 'bridge'
    and 'identity', the trained identities asked as trained): {"condition", "<kind>": Estimate},
    each prompt an item nested in its run. {} when no run has them."""
    per_kind: dict[str, list[np.ndarray]] = {}
    condition = ""
    for r in results:
        b = r.data.get("bridge") or {}
        condition = b.get("condition", condition)
        for kind in BRIDGE_KINDS:
            if kind in b:
                n, k = int(b[kind]["n"]), round(float(b[kind]["rate"]) * int(b[kind]["n"]))
                per_kind.setdefault(kind, []).append(np.r_[np.ones(k), np.zeros(n - k)])
    out: dict[str, Any] = {"condition": condition} if per_kind else {}
    for kind, hits in per_kind.items():
        out[kind] = rate_estimate(hits)
    return out
