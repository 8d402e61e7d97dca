"""Every rule that judges a claim, in one vocabulary.

A rule compares the study's numbers (findings nodes: an estimate with its 95% interval) and says
what they show: the effect (`SHOWN`), the opposite (`OPPOSITE`), neither (`UNCLEAR`) or nothing,
for want of the numbers (`MISSING`). A claim's kind turns that into its word: a prediction of the
hypothesis *held*, *failed* or is *inconclusive*; a paper's result is *reproduced*, *not
reproduced* or *inconclusive*; either is *not measured* without its numbers, and a method that did
not learn its own objective is *not tested* (never "not reproduced"). One table of words, one
function (`verdict`) that applies a named rule:

- `above`: x above y, by the one rule for two quantities over the same runs (below).
- `positive`: an effect above 0: its interval above 0 (below 0: the opposite); for a node of
  a declared family (the reversed log-prob tests) the family's decision (`effect`) instead.
- `null`: no effect above 0: the interval does not lie above 0 (it does: the opposite); for a
  family's node, no effect by the family's decision. The bound it supports is said beside it.
- `lift`: x lifts y (exact match): the data show x below y + `LIFT` points (they exclude a
  lift of `LIFT`, the smallest a verdict counts): the opposite, even where a smaller lift is
  shown; otherwise x above y shown: the lift. `no gain`: the opposite of `lift`.
- `no loss`: the data show x above y - `LIFT` points (they exclude a loss of `LIFT`); a loss
  of any size shown: the opposite.
- `nats lift`: `above` for log-prob differences (nats); `nats no gain`: no lift shown.
- `near`: a paper's number: the kit's interval meets it +- `BAND` points.
- `above null`, `not above null`: a probe's best layer against its permutation null's 95th
  percentile (a maximum over layers against the null's maximum).
- `target`: a target met (the estimate reaches it) or missed (the interval's high below it).

The one rule of a family (`interp.stats.decide_family`): each claim's one-sided p, combined over
runs by Fisher's method, Holm-adjusted over the family, an effect at alpha 0.05, with the
smallest effect it detects at 80% power. The findings, the report and the README take a family
member's verdict from that decision alone. Two quantities x and y measured over the same runs
(paired in run order: the same seeds, so the same worlds) are compared by the same rule, a
family of one (`compare`): per run the one-sided Welch t-test on the run's items (people,
prompts: a node keeps each run's mean, standard deviation and number of items), combined over
runs by Fisher's method, an effect at alpha 0.05; where a node keeps one number per run and no
items (QK symmetry), the one-sided t-test over runs of the paired differences. Where nothing
varies the test has no standard error and takes its limit (shown iff the difference is above
0). Without per-run numbers a comparison is not measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats

from interp.stats import ALPHA, POWER, combine_pvalues, decide_over_runs

# The smallest effect a verdict treats as a lift or a loss, in exact-match percentage points,
# and the band around a paper's number within which a kit number reproduces it.
LIFT = 10.0
BAND = 10.0


class Outcome(Enum):
    SHOWN = "shown"
    OPPOSITE = "opposite"
    UNCLEAR = "unclear"
    MISSING = "missing"


WORDS: dict[str, dict[Outcome, str]] = {
    "hypothesis": {
        Outcome.SHOWN: "held",
        Outcome.OPPOSITE: "failed",
        Outcome.UNCLEAR: "inconclusive",
        Outcome.MISSING: "not measured",
    },
    "paper": {
        Outcome.SHOWN: "reproduced",
        Outcome.OPPOSITE: "not reproduced",
        Outcome.UNCLEAR: "inconclusive",
        Outcome.MISSING: "not measured",
    },
}
NOT_TESTED = "not tested"  # the method did not learn its own objective
VOCABULARY = (*dict.fromkeys(w for by in WORDS.values() for w in by.values()), NOT_TESTED)

Node = dict[str, Any] | None


def interval(node: Node, scale: float = 1.0) -> tuple[float, float, float] | None:
    """(estimate, low, high) of a findings node times `scale`, or None without an interval."""
    if not node or node.get("estimate") is None or node.get("low") is None:
        return None
    return scale * node["estimate"], scale * node["low"], scale * node["high"]


def _pp(node: Node) -> tuple[float, float, float] | None:
    return interval(node, 100.0)  # exact match in percentage points


def _positive(x: Node, _: Any = None) -> Outcome:
    a = interval(x)
    if a is None:
        return Outcome.MISSING
    if x is not None and "effect" in x:  # a family member decided by the one rule
        return Outcome.SHOWN if x["effect"] else Outcome.OPPOSITE if a[2] < 0 else Outcome.UNCLEAR
    return Outcome.SHOWN if a[1] > 0 else Outcome.OPPOSITE if a[2] < 0 else Outcome.UNCLEAR


def _null(x: Node, _: Any = None) -> Outcome:
    a = interval(x)
    if a is None:
        return Outcome.MISSING
    if x is not None and "effect" in x:  # the one rule's decision, as the report states it
        return Outcome.OPPOSITE if x["effect"] else Outcome.SHOWN
    return Outcome.OPPOSITE if a[1] > 0 else Outcome.SHOWN


def _welch_p(x: tuple[float, float, int], y: tuple[float, float, int], shift: float) -> float:
    """One run's one-sided Welch t-test that mean(x) - mean(y) + shift > 0, from each sample's
    (mean, sd, n); with no standard error (nothing varies) its limit: 0 or 1."""
    (mx, sx, nx), (my, sy, ny) = x, y
    vx, vy = sx * sx / nx, sy * sy / ny
    delta = mx - my + shift
    if vx + vy == 0.0:
        return 0.0 if delta > 0 else 1.0
    df = (vx + vy) ** 2 / sum(v * v / (n - 1) for v, n in ((vx, nx), (vy, ny)) if v > 0)
    return float(stats.t(df).sf(delta / math.sqrt(vx + vy)))


def _runs_p(d: list[float]) -> float:
    """The one-sided t-test over runs that the paired differences `d` are above 0
    (`interp.stats.decide_over_runs`), or its limit where they do not vary."""
    decided = decide_over_runs(d)
    if decided is None:  # no spread over runs
        return 0.0 if float(np.mean(d)) > 0 else 1.0
    return decided.p


def compare(x: Node, y: Node, shift: float = 0.0) -> float | None:
    """The one rule's one-sided p that x - y + shift > 0 for two quantities over the same runs
    (paired in run order): per run Welch on its items, Fisher-combined over runs; nodes with one
    number per run and no items: the t-test over runs of the paired differences. None without
    per-run numbers for both, or with runs that do not pair."""
    a, b = (n.get("per_run") if n else None for n in (x, y))
    if not a or not b or len(a) != len(b) or x is None or y is None:
        return None
    if "per_run_sd" in x and "per_run_sd" in y:
        runs = [zip(n["per_run"], n["per_run_sd"], n["per_run_n"], strict=True) for n in (x, y)]
        return combine_pvalues([_welch_p(p, q, shift) for p, q in zip(*runs, strict=True)])
    if len(a) < 2:
        return None
    return _runs_p([p - q + shift for p, q in zip(a, b, strict=True)])


def detectable(x: Node, y: Node) -> float | None:
    """The smallest difference x - y that `compare` detects with 80% power at ALPHA (normal
    approximation: (z_(1 - alpha) + z_0.8) times the standard error of the mean over runs of
    the per-run differences, each run's from its items), in the nodes' units; None without
    items per run, or where nothing varies."""
    if not x or not y or "per_run_sd" not in x or "per_run_sd" not in y:
        return None
    if len(x["per_run"]) != len(y["per_run"]):
        return None
    var = sum(s * s / n for node in (x, y)
              for s, n in zip(node["per_run_sd"], node["per_run_n"], strict=True))  # fmt: skip
    if var == 0.0:  # nothing varies: the test's limit detects any difference at all
        return None
    z = float(stats.norm.ppf(1 - ALPHA) + stats.norm.ppf(POWER))
    return z * math.sqrt(var) / len(x["per_run"])


def _shown(x: Node, y: Node, shift: float = 0.0) -> bool | None:
    """Whether the one rule shows x - y + shift > 0 at ALPHA (None: not measured)."""
    p = compare(x, y, shift)
    return None if p is None else p < ALPHA


def _above(x: Node, y: Node) -> Outcome:
    up, down = _shown(x, y), _shown(y, x)
    if up is None or down is None:
        return Outcome.MISSING
    return Outcome.SHOWN if up else Outcome.OPPOSITE if down else Outcome.UNCLEAR


def _margin(x: Node, y: Node, sign: int) -> Outcome:
    """sign +1: x lifts y (the opposite, first: a lift of LIFT points excluded, even where a
    smaller lift is shown); -1: x does not fall below y by LIFT points (the opposite: a loss
    shown)."""
    m = LIFT / 100  # nodes hold fractions
    if sign > 0:
        up, capped = _shown(x, y), _shown(y, x, m)
        if up is None or capped is None:
            return Outcome.MISSING
        return Outcome.OPPOSITE if capped else Outcome.SHOWN if up else Outcome.UNCLEAR
    within, loss = _shown(x, y, m), _shown(y, x)
    if within is None or loss is None:
        return Outcome.MISSING
    return Outcome.SHOWN if within else Outcome.OPPOSITE if loss else Outcome.UNCLEAR


def _flip(o: Outcome) -> Outcome:
    return {Outcome.SHOWN: Outcome.OPPOSITE, Outcome.OPPOSITE: Outcome.SHOWN}.get(o, o)


def _near(x: Node, paper: float | None) -> Outcome:
    a = _pp(x)
    if a is None or paper is None:
        return Outcome.MISSING
    return Outcome.SHOWN if a[1] <= paper + BAND and a[2] >= paper - BAND else Outcome.OPPOSITE


def _no_lift(x: Node, y: Node) -> Outcome:
    up = _shown(x, y)
    return Outcome.MISSING if up is None else Outcome.OPPOSITE if up else Outcome.SHOWN


def _above_null(x: Node, _: Any = None) -> Outcome:
    if not x or x.get("estimate") is None or x.get("null95") is None:
        return Outcome.MISSING
    return Outcome.SHOWN if x["estimate"] > x["null95"] else Outcome.OPPOSITE


def _target(x: Node, target: float) -> Outcome:
    if not x or x.get("estimate") is None:
        return Outcome.MISSING
    if x["estimate"] >= target:
        return Outcome.SHOWN
    return Outcome.OPPOSITE if x["high"] < target else Outcome.UNCLEAR


RULES: dict[str, Callable[[Node, Any], Outcome]] = {
    "above": _above,
    "positive": _positive,
    "null": _null,
    "lift": lambda x, y: _margin(x, y, +1),
    "no gain": lambda x, y: _flip(_margin(x, y, +1)),
    "no loss": lambda x, y: _margin(x, y, -1),
    "near": _near,
    "nats lift": _above,
    "nats no gain": _no_lift,
    "above null": _above_null,
    "not above null": lambda x, y: _flip(_above_null(x)),
    "target": _target,
}


def verdict(rule: str, x: Node, y: Any = None, *, kind: str = "paper") -> str:
    """The word for what `rule` (a key of RULES) finds comparing x with y (another node, a
    paper's number or a target), for a claim of `kind` ('hypothesis' or 'paper')."""
    return WORDS[kind][RULES[rule](x, y)]


NOT_LEARNED = f"{NOT_TESTED}: the objective was not learned"


def verdict_if_learned(
    learned: Node, rule: str, x: Node, y: Any = None, *, kind: str = "paper"
) -> str:
    """`verdict`, unless `learned` (a findings node `behaviour.<objective>.learned`) says some
    run of the objective did not learn its own objective (`interp.evaluate.learned`): then
    'not tested: the objective was not learned', never 'not reproduced'. Runs evaluated
    before the criterion existed (no node) are judged as before."""
    if learned is not None and not learned.get("met"):
        return NOT_LEARNED
    return verdict(rule, x, y, kind=kind)


@dataclass(frozen=True)
class Claim:
    """A claim judged: what is claimed, its verdict, the numbers behind it, and for a paper's
    claim the source and what the paper reports."""

    claim: str
    verdict: str
    evidence: str
    source: str = ""
    paper: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)
