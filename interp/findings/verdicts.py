"""Every rule that judges a claim, in one vocabulary.

A rule compares the study's numbers (findings nodes: an estimate with its 95% interval) and says
what they show: the effect (`SHOWN`), the opposite (`OPPOSITE`), neither (`UNCLEAR`) or nothing,
for want of the numbers (`MISSING`). A claim's kind turns that into its word: a prediction of the
hypothesis *held*, *failed* or is *inconclusive*; a paper's result is *reproduced*, *not
reproduced* or *inconclusive*; either is *not measured* without its numbers, and a method that did
not learn its own objective is *not tested* (never "not reproduced"). One table of words, one
function (`verdict`) that applies a named rule:

- `above`: x above y: the intervals disjoint with x above (x below: the opposite).
- `positive`: an effect above 0: its interval above 0 (below 0: the opposite); for a node of
  a declared family (the reversed log-prob tests) the family's decision (`effect`) instead.
- `null`: no effect above 0: the interval does not lie above 0 (it does: the opposite); for a
  family's node, no effect by the family's decision. The bound it supports is said beside it.

The one rule of a family (`interp.stats.decide_family`): each claim's one-sided p, combined over
runs by Fisher's method, Holm-adjusted over the family, an effect at alpha 0.05, with the
smallest effect it detects at 80% power. The findings, the report and the README take a family
member's verdict from that decision alone.
- `lift`: x lifts y (exact match, percentage points): the intervals show x above y; the data
  exclude a lift of `LIFT` points (x's high below y's low + LIFT): the opposite.
- `no gain`, `no loss`: the absence of a gain (or a loss) of x over y, by the same margin.
- `near`: a paper's number: the kit's interval meets it +- `BAND` points.
- `nats lift`, `nats no gain`: a log-prob difference against another, by its intervals alone.
- `above null`, `not above null`: a probe's best layer against its permutation null's 95th
  percentile (a maximum over layers against the null's maximum).
- `target`: a target met (the estimate reaches it) or missed (the interval's high below it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

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


def _above(x: Node, y: Node) -> Outcome:
    a, b = interval(x), interval(y)
    if a is None or b is None:
        return Outcome.MISSING
    return Outcome.SHOWN if a[1] > b[2] else Outcome.OPPOSITE if a[2] < b[1] else Outcome.UNCLEAR


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


def _margin(x: Node, y: Node, sign: int) -> Outcome:
    """sign +1: x lifts y by LIFT points; -1: x does not fall below y by LIFT points."""
    a, b = _pp(x), _pp(y)
    if a is None or b is None:
        return Outcome.MISSING
    if sign > 0:
        if a[1] > b[2]:
            return Outcome.SHOWN
        return Outcome.OPPOSITE if a[2] < b[1] + LIFT else Outcome.UNCLEAR
    if a[2] < b[1]:
        return Outcome.OPPOSITE
    return Outcome.SHOWN if a[1] > b[2] - LIFT else Outcome.UNCLEAR


def _flip(o: Outcome) -> Outcome:
    return {Outcome.SHOWN: Outcome.OPPOSITE, Outcome.OPPOSITE: Outcome.SHOWN}.get(o, o)


def _near(x: Node, paper: float | None) -> Outcome:
    a = _pp(x)
    if a is None or paper is None:
        return Outcome.MISSING
    return Outcome.SHOWN if a[1] <= paper + BAND and a[2] >= paper - BAND else Outcome.OPPOSITE


def _nats(x: Node, y: Node, lift: bool) -> Outcome:
    a, b = interval(x), interval(y)
    if a is None or b is None:
        return Outcome.MISSING
    above = a[1] > b[2]
    if lift:
        if above:
            return Outcome.SHOWN
        return Outcome.OPPOSITE if a[0] <= b[2] else Outcome.UNCLEAR
    return Outcome.OPPOSITE if above else Outcome.SHOWN


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
    "nats lift": lambda x, y: _nats(x, y, True),
    "nats no gain": lambda x, y: _nats(x, y, False),
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
