"""Selective prediction's metrics and numbers: AUROC and the accuracy-coverage curve (AUACC),
their bootstrap intervals, the per-set summary, `SelectiveSummary` and the text table.

The analysis (beam answers, probes, the soft-prompt self-evaluation) is
:mod:`interp.analysis.selective`, which re-exports everything here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Bool, Float
from scipy.stats import rankdata

from interp.data.dataset import Example
from interp.errors import UserError
from interp.results import Result, Section, Summary, number, section
from interp.stats import NONNEGATIVE, REAL, UNIT, hierarchical_bootstrap

SETS = ("mixed", "forward", "reverse")


SCORES = (
    "likelihood",
    "entropy",
    "probe",
    "probe_question",
    "probe_first_answer",
    "self_eval",
    "aspire",
)


CONTROLS = ("oracle", "probe_shuffled", "self_eval_shuffled", "probe_question_logprobs")
LN2 = math.log(2)  # class-balanced cross-entropy of a constant predictor: the bar to beat


@dataclass(frozen=True)
class Accuracy(Section):
    """Exact match of the chosen (top) beam."""

    mixed: float | None = number("mixed questions (forward + reverse)", UNIT, headline=True)
    forward: float | None = number("forward questions", UNIT)
    reverse: float | None = number("reverse questions", UNIT)


@dataclass(frozen=True)
class MixedAurocs(Section):
    """AUROC of each score on the mixed questions (0.5 = chance)."""

    likelihood_mixed: float | None = number(
        "the length-normalised log-likelihood of the chosen beam", UNIT, headline=True
    )
    entropy_mixed: float | None = number("minus the entropy over the beams", UNIT, headline=True)
    probe_mixed: float | None = number(
        "the linear probe at the last answer token", UNIT, headline=True
    )
    probe_question_mixed: float | None = number(
        "the linear probe at the question's final position (before answering)", UNIT, headline=True
    )
    probe_first_answer_mixed: float | None = number(
        "the linear probe at the first answer token", UNIT, headline=True
    )
    probe_question_logprobs_mixed: float | None = number(
        "positive control on a confidence label: the same learner on the question's final "
        "state's own log-probabilities, trained on the chosen answers' correctness",
        UNIT,
        headline=True,
    )
    self_eval_mixed: float | None = number(
        "the learned soft-prompt self-evaluation, log P(correct)", UNIT, headline=True
    )
    aspire_mixed: float | None = number(
        "ASPIRE's selector (1 - alpha) likelihood + alpha log P(correct)", UNIT, headline=True
    )
    self_eval_shuffled_mixed: float | None = number(
        "the self-evaluation trained on shuffled labels (control, about 0.5)", UNIT, headline=True
    )


@dataclass(frozen=True)
class ValLoss(Section):
    """The self-evaluation's validation loss (learned only below ln 2 = 0.693)."""

    best: float | None = number("best over epochs", NONNEGATIVE, headline=True)
    minus_ln2: float | None = number("that loss minus ln 2 (negative: learned)", REAL)


@dataclass(frozen=True)
class PositiveControl(Section):
    """The same learner on a label it can read (is the answer a name?)."""

    val_loss_best: float | None = number("best validation loss", NONNEGATIVE, headline=True)
    auroc_test: float | None = number(
        "test AUROC (near 1 when the learner works)", UNIT, headline=True
    )


@dataclass(frozen=True)
class SelectiveSummary(Summary):
    """Selective prediction's headline numbers (`result.summary` of `run_analysis`), on the
    test people's mixed (forward + reverse) questions: accuracy and the AUROC of each score
    (0.5 = chance; None where undefined, e.g. every answer right: the JSON's `undefined` says
    why), the soft-prompt self-evaluation's fit against ln 2, and its positive control. Every
    score x set, with AUACC and intervals, is a detail (`auroc`, `auacc`)."""

    accuracy: Accuracy = section(Accuracy, "exact match of the chosen beam")
    n_mixed: float | None = number("test questions, mixed", NONNEGATIVE)
    auroc: MixedAurocs = section(MixedAurocs, "AUROC of each score")
    alpha: float | None = number("ASPIRE's alpha, chosen on the validation people", UNIT)
    self_eval_val_loss: ValLoss = section(ValLoss, "the self-evaluation's fit")
    positive_control: PositiveControl = section(PositiveControl, "the learner's positive control")

    def aurocs(self, question_set: str = "mixed") -> dict[str, float]:
        """AUROC of every score and control on `question_set` (mixed, forward, reverse)."""
        return self.cells(f"auroc_{{score}}_{question_set}", score=(*SCORES, *CONTROLS))

    def auaccs(self, question_set: str = "mixed") -> dict[str, float]:
        """Area under the accuracy-coverage curve of every score and control."""
        return self.cells(f"auacc_{{score}}_{question_set}", score=(*SCORES, *CONTROLS))

    def interval(self, metric: str, score: str, question_set: str = "mixed") -> tuple[Any, Any]:
        """The 95% bootstrap interval (low, high) of `metric` (auroc, auacc) of `score`."""
        key = f"{metric}_{score}_{question_set}"
        return self.get(f"{key}_low"), self.get(f"{key}_high")


def auroc(score: Float[np.ndarray, " n"], correct: Bool[np.ndarray, " n"]) -> float:
    """P(score of a correct answer > score of a wrong one), ties counting 1/2 (Mann-Whitney U).

    NaN when one class is empty: no ranking can be judged then.
    """
    n_pos = int(correct.sum())
    n_neg = len(correct) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)  # average ranks for ties
    u = ranks[correct].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy_coverage(
    score: Float[np.ndarray, " n"], correct: Bool[np.ndarray, " n"]
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """The accuracy-coverage curve: keep the i most confident answers, i = 1..n.

    Returns (coverage i/n, accuracy of the kept answers). Tied scores are broken at random in
    expectation: inside a group of equal scores every answer counts with the group's accuracy,
    so the curve does not depend on the order the data came in.
    """
    n = len(score)
    if n == 0:
        raise UserError("accuracy-coverage curve of an empty set: the set has no questions")
    uniq, inverse = np.unique(-score, return_inverse=True)  # groups in descending score
    group_n = np.bincount(inverse, minlength=len(uniq)).astype(float)
    group_c = np.bincount(inverse, weights=correct.astype(float), minlength=len(uniq))
    n_before = np.concatenate([[0.0], np.cumsum(group_n)[:-1]])
    c_before = np.concatenate([[0.0], np.cumsum(group_c)[:-1]])
    kept = np.arange(1, n + 1, dtype=float)
    g = np.searchsorted(np.cumsum(group_n), kept, side="left")  # group holding the i-th answer
    hits = c_before[g] + (kept - n_before[g]) * group_c[g] / group_n[g]
    return kept / n, hits / kept


def auacc(score: Float[np.ndarray, " n"], correct: Bool[np.ndarray, " n"]) -> float:
    """Area under the accuracy-coverage curve (its mean over coverages 1/n .. n/n)."""
    return float(accuracy_coverage(score, correct)[1].mean())


INTERVAL_SETS = ("mixed", "reverse")


N_BOOT = 1000


def metric_intervals(
    scores: dict[str, np.ndarray],
    correct: np.ndarray,
    masks: dict[str, np.ndarray],
    seed: int,
    undefined: dict[str, str],
) -> dict[str, float]:
    """95% bootstrap intervals of AUROC and AUACC (`<metric>_<score>_<set>_low` / `_high`).

    Resamples the test questions of one run (`stats.hierarchical_bootstrap` with one group of
    question indices, `N_BOOT` replicates); the spread over seeds is the study's business. A
    bound is NaN, with a reason, when some replicates hold one class only (AUROC undefined).
    """
    out: dict[str, float] = {}
    for set_name in INTERVAL_SETS:
        mask = masks[set_name]
        c = correct[mask]
        if not mask.any():
            continue
        for name, sc in scores.items():
            if name == "oracle":
                continue
            x = sc[mask]
            for metric, fn in (("auroc", auroc), ("auacc", auacc)):

                def statistic(
                    i: np.ndarray, fn: Any = fn, x: np.ndarray = x, c: np.ndarray = c
                ) -> float:
                    return float(fn(x[i.astype(int)], c[i.astype(int)]))

                est = hierarchical_bootstrap(
                    [np.arange(len(x), dtype=float)], statistic=statistic, n_boot=N_BOOT, seed=seed
                )
                key = f"{metric}_{name}_{set_name}"
                out[f"{key}_low"], out[f"{key}_high"] = est.low, est.high
                if math.isnan(est.low):
                    undefined[f"{key}_interval"] = (
                        f"{set_name}: some bootstrap draws hold one class only"
                    )
    return out


def set_masks(questions: list[Example]) -> dict[str, np.ndarray]:
    d = np.array([e.direction for e in questions])
    return {"mixed": np.ones(len(d), dtype=bool), "forward": d == "same", "reverse": d == "reverse"}


def set_metrics(
    scores: dict[str, np.ndarray], correct: np.ndarray, masks: dict[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, str], dict[str, np.ndarray]]:
    """Summary numbers, reasons for NaNs, and the curves, for every score on every set."""
    summary: dict[str, float] = {}
    undefined: dict[str, str] = {}
    curves: dict[str, np.ndarray] = {}
    for set_name, mask in masks.items():
        c = correct[mask]
        summary[f"n_{set_name}"] = float(mask.sum())
        summary[f"accuracy_{set_name}"] = float(c.mean()) if mask.any() else float("nan")
        if not mask.any():
            undefined[f"{set_name}"] = "no test questions in this set"
            continue
        curves[f"coverage_{set_name}"] = accuracy_coverage(np.zeros(int(mask.sum())), c)[0]
        for name, s in scores.items():
            summary[f"auroc_{name}_{set_name}"] = auroc(s[mask], c)
            summary[f"auacc_{name}_{set_name}"] = auacc(s[mask], c)
            curves[f"accuracy_{set_name}_{name}"] = accuracy_coverage(s[mask], c)[1]
            if math.isnan(summary[f"auroc_{name}_{set_name}"]):
                undefined[f"auroc_{name}_{set_name}"] = (
                    f"all {int(mask.sum())} {set_name} answers are "
                    f"{'correct' if c.all() else 'wrong'}: no ranking to judge"
                )
    return summary, undefined, curves


def format_summary(result: Result) -> str:
    """The AUROC / AUACC table (scores x question sets), with accuracy and the controls."""
    return _format_data(result.data)


def _format_data(data: dict[str, Any]) -> str:
    """`format_summary` of a result's JSON (as read back: undefined numbers are null), with the
    self-evaluation's best validation loss against ln 2 (a constant predictor) when recorded."""
    nan = float("nan")  # undefined numbers are null in the saved JSON (interp.runs.strict_json)
    s = {k: nan if v is None else v for k, v in data["summary"].items()}
    names = [*data["scores"], *data["controls"]]
    lines = [f"{'score':<20}" + "".join(f"{st + ' AUROC':>15}{st + ' AUACC':>15}" for st in SETS)]
    lines.append(
        f"{'accuracy (n)':<20}"
        + "".join(
            f"{'':>15}{s[f'accuracy_{st}']:>9.3f} ({int(s[f'n_{st}'])})".ljust(30) for st in SETS
        )
    )
    for name in names:
        lines.append(
            f"{name:<20}"
            + "".join(
                f"{s.get(f'auroc_{name}_{st}', nan):>15.3f}"
                f"{s.get(f'auacc_{name}_{st}', nan):>15.3f}"
                for st in SETS
            )
        )
    lines.append(
        f"chance: AUROC 0.5, AUACC = accuracy. ASPIRE alpha (validation) = {s['alpha']:.2f}"
    )
    spans = [
        f"{n} [{s[f'auroc_{n}_mixed_low']:.2f}, {s[f'auroc_{n}_mixed_high']:.2f}]"
        for n in names
        if f"auroc_{n}_mixed_low" in s
    ]
    if spans:
        lines.append(
            "mixed AUROC 95% interval (bootstrap over test questions): " + ", ".join(spans)
        )
    if "self_eval_val_loss_best" in s:
        line = (
            f"self-evaluation validation loss {s['self_eval_val_loss_best']:.3f} vs ln 2 = "
            f"{LN2:.3f} (a constant predictor): "
            + ("learned" if s["self_eval_val_loss_best"] < LN2 else "NOT learned")
        )
        if "positive_control_val_loss_best" in s:
            line += (
                "; positive control (is the answer a name?) "
                f"{s['positive_control_val_loss_best']:.3f}, "
                f"test AUROC {s['positive_control_auroc_test']:.3f}; shuffled labels "
                f"{s['self_eval_shuffled_val_loss_best']:.3f}"
            )
        lines.append(line)
    for why in sorted(set(data["undefined"].values())):
        lines.append(f"nan: {why}")
    return "\n".join(lines)
