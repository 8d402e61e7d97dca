"""Selective prediction: does anything inside the model know when its answer is wrong?

Method (ASPIRE, Chen et al., Findings of EMNLP 2023, adapted to small from-scratch models). For
each test question the model answers by beam search (k beams, as many tokens as the answer
entity has); every beam is a candidate answer with its length-normalised log-likelihood, and it
is labelled correct or not by the paper's exact-match rule. A selective predictor answers only
when a score says it is confident; sweeping the threshold traces the accuracy-coverage curve.
ASPIRE's score comes from *self-evaluation*: a few learned soft-prompt vectors (the model itself
frozen) are placed after "question + answer", and trained so that the model's next-token
distribution at the last soft position prefers a "correct" token over an "incorrect" token when
the answer is right. The final selector is (1 - alpha) * likelihood + alpha * log P(correct),
with alpha chosen on a validation split.

Here the question is sharp: under the reversal curse the model answers reversed questions
wrongly; does its likelihood know it, does a learned self-evaluation, does a linear probe on its
hidden state? Scores compared (higher = more confident):
- `likelihood`: length-normalised log-likelihood of the chosen (top) beam;
- `entropy`: minus the entropy of the beams' probabilities renormalised over the k beams
  (constant, so uninformative, with 1 beam);
- `probe`: logistic regression on the last layer's residual stream (`blocks.{L-1}.hook_resid_post`)
  at the LAST ANSWER TOKEN of "question + candidate": the position that has read both the
  question and the whole answer, the same information the self-evaluation sees (but whose
  stream is busy predicting the next template word);
- `probe_question`: the same probe at the question's final position (before any answer token:
  does the model know, before answering, whether it can?); `probe_first_answer`: at the first
  answer token (it has read the first token of the candidate);
- `self_eval`: log P(correct) from the learned soft prompt, where P(correct) is the softmax over
  just two logits at the last soft position: the correct token (default ".", a statement) and
  the incorrect token (default "?", a doubt). Both exist in every tokenizer the kit builds and
  are predicted often in training, so their unembedding rows are well trained; any two tokens
  would do, since only the learned prompt gives them meaning;
- `aspire`: (1 - alpha) * likelihood + alpha * self_eval.
The metrics (AUROC, AUACC, their intervals), `SelectiveSummary` and the text table are
:mod:`interp.analysis.selective_metrics`, re-exported here.

The self-evaluation is only evidence if it can learn: its best validation loss (class-balanced
cross-entropy) is reported against ln 2, the loss of a constant predictor, and a POSITIVE CONTROL
trains the same learner on the same rows with a label it can read from them (does the question
ask for the name?): if the control beats ln 2 and the real label does not, the learner works and
the model's state does not carry correctness in a form it can reach.
Controls: `oracle` (the correctness itself: the best possible curve), the chance selector (a
random score has AUROC 0.5 and AUACC equal to plain accuracy, reported as `accuracy_<set>`), and
`probe_shuffled` / `self_eval_shuffled`, the same learners trained on shuffled labels (they should
sit near chance; if they do not, the learner is reading something other than correctness).

Data: the test prompts of the run (training templates by default), forward = direction "same",
reverse = "reverse", all three subsets mixed (for the `both` subset reversed questions are
answerable, so the reverse set usually has both classes). People are split, within each subset,
into train / validation / test (seeded, disjoint): the probe and self-evaluation learn on all k
candidates of the training people's questions, early stopping and alpha use the validation
people, and every metric is on the test people's chosen answers. No score sees the direction or
subset labels. Metrics per question set (mixed, forward, reverse): AUROC (the probability that a
correct answer outscores a wrong one; NaN, with a reason, when a set has one class only) and
AUACC, the mean of the accuracy-coverage curve over coverages 1/n, ..., n/n (ties broken at
random in expectation, so a constant score gives a flat curve at plain accuracy).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch.nn import functional as F
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.options import SEED_MAX, Options, option
from interp.analysis.selective_metrics import (  # the metrics and numbers, re-exported
    CONTROLS,
    LN2,
    SCORES,
    auroc,
    metric_intervals,
    set_masks,
    set_metrics,
)
from interp.analysis.selective_metrics import (
    SETS as SETS,
)
from interp.analysis.selective_metrics import (
    SelectiveSummary as SelectiveSummary,
)
from interp.analysis.selective_metrics import (
    accuracy_coverage as accuracy_coverage,
)
from interp.analysis.selective_metrics import (
    auacc as auacc,
)
from interp.analysis.selective_metrics import (
    format_summary as format_summary,
)
from interp.analysis.soft_prompt import (
    SelfEvalFit,
    SelfEvalMargins,
    self_eval_margins,
    train_self_eval,
)
from interp.beam import Candidate, beam_search
from interp.data.dataset import Example, FactDataset, pad_batch
from interp.data.tokenizer import encode
from interp.errors import UserError
from interp.evaluate import is_exact_match, match_rule
from interp.model import raw_forward
from interp.results import Result, split_summary, summary_json, write_result
from interp.runs import Run
from interp.stats import run_seed

NAME = "selective"
# Where each probe reads the last block's residual stream, relative to the question's length
# (`Example.prompt_len`) or the row's end: the last answer token (-1 from the end) has read the
# whole answer but predicts the next template word; the question's final position has read only
# the question (it predicts the first answer token: a probe there asks whether the model "knows
# that it knows" before answering); the first answer token has read one answer token.
PROBES = {
    "probe": ("end", -1),
    "probe_question": ("prompt", -1),
    "probe_first_answer": ("prompt", 0),
}
CONFIDENCE = "probe_question_logprobs"  # the learner's positive control on a confidence label
SPLITS = ("train", "val", "test")
BATCH = 256


@dataclass(frozen=True)
class SelectiveOptions(Options):
    """Options of the selective-prediction analysis (each help line is also the CLI's --help)."""

    beams: int = option(4, "beams of the beam search; every beam is a candidate answer", min=1)
    templates: str = option(
        "train", "question templates: train, heldout or all", choices=("train", "heldout", "all")
    )
    n_soft: int = option(4, "learned soft-prompt vectors placed after question + answer", min=1)
    correct_token: str = option(".", "vocabulary token whose logit means 'my answer is correct'")
    incorrect_token: str = option("?", "vocabulary token whose logit means 'my answer is wrong'")
    val_fraction: float = option(
        0.25,
        "fraction of each subset's people in the validation split",
        min=0,
        max=1,
        min_open=True,
    )
    test_fraction: float = option(
        0.25, "fraction of each subset's people in the test split", min=0, max=1, min_open=True
    )
    seed: int = option(
        0,
        "offset on the run's item seed (stats.run_seed) of the people split, soft prompts and "
        "controls",
        min=0,
        max=SEED_MAX,
    )
    lr: float = option(0.01, "Adam learning rate of the soft prompt", min=0, max=10, min_open=True)
    batch_size: int = option(64, "candidates per self-evaluation training batch", min=1)
    max_epochs: int = option(15, "most epochs of self-evaluation training", min=1)
    patience: int = option(3, "stop after this many epochs without a better validation loss", min=1)
    controls: bool = option(True, "also train the shuffled-label probe and self-evaluation")
    positive_control_epochs: int = option(
        5,
        "most epochs of the positive control's learner (within --max-epochs); it reaches a "
        "validation loss near 0.01 by its third epoch on the default preset, so more epochs "
        "only polish a control",
        min=1,
    )

    def check(self) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise UserError("--val-fraction and --test-fraction must sum below 1")

    def validate(self, d_vocab: int) -> None:
        """The checks that need the run: a beam per vocabulary entry at most."""
        if self.beams > d_vocab:
            raise UserError(f"--beams must be in 1..{d_vocab} (the vocabulary), got {self.beams}")


# ---------------------------------------------------------------------------------------------
# Metrics


# ---------------------------------------------------------------------------------------------
# Linear probe on the final hidden state


@torch.no_grad()
def final_hidden(
    model: TransformerBridge,
    seqs: list[tuple[int, ...]],
    batch_size: int = BATCH,
    positions: list[int] | None = None,
) -> Float[np.ndarray, "n d_model"]:
    """The last block's resid_post of each sequence at its last token (the last answer token).

    With `positions` (one per row), the states at those positions instead.
    """
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(seqs), batch_size):
        toks, lens = pad_batch(seqs[s : s + batch_size], device=device)
        at = lens - 1 if positions is None else torch.tensor(positions[s : s + batch_size])
        _, cache = model.run_with_cache(toks, names_filter=name)
        out.append(cache[name][torch.arange(len(lens), device=device), at.to(device)].float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def state_logprobs(
    model: TransformerBridge, hidden: Float[np.ndarray, "n d_model"]
) -> Float[np.ndarray, "n d_vocab"]:
    """The log-probabilities the model reads off final-block states (`final_hidden`): its final
    LayerNorm, unembedding and log-softmax, the logit lens at the last layer."""
    device = next(model.parameters()).device
    h = torch.as_tensor(hidden, dtype=torch.float32, device=device)[:, None, :]
    logits = model.unembed(model.ln_final(h))[:, 0]
    return logits.float().log_softmax(-1).cpu().double().numpy()


def probe_positions(rows: Rows, questions: list[Example], where: tuple[str, int]) -> list[int]:
    """Per row, the position a probe reads (`PROBES`): from the row's end or the question's."""
    base, offset = where
    if base == "end":
        return [len(s) + offset for s in rows.seqs]
    return [questions[q].prompt_len + offset for q in rows.question]


def fit_probe(
    x: Float[np.ndarray, "n d"],
    y: Bool[np.ndarray, " n"],
    xv: Float[np.ndarray, "m d"],
    yv: Bool[np.ndarray, " m"],
) -> tuple[Any, float]:
    """Standardised, class-balanced logistic regression; C picked on validation log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best: tuple[float, Any, float] | None = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        )
        clf.fit(x, y)
        loss = log_loss(yv, clf.predict_proba(xv)[:, 1], labels=[False, True]) if len(yv) else 0.0
        if best is None or loss < best[0]:
            best = (loss, clf, c)
    assert best is not None
    return best[1], best[2]


# ---------------------------------------------------------------------------------------------
# The analysis


def split_people(
    prompts: list[Example], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Seeded split of the people into train / val / test, within each subset (disjoint)."""
    by_subset: dict[str, list[int]] = defaultdict(list)
    for pid, subset in sorted({(e.person, e.subset) for e in prompts}):
        by_subset[subset].append(pid)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for subset, people in sorted(by_subset.items()):
        people = list(rng.permutation(people))
        n_val = max(1, round(len(people) * val_fraction))
        n_test = max(1, round(len(people) * test_fraction))
        if len(people) - n_val - n_test < 1:
            raise UserError(
                f"subset {subset} has {len(people)} people, too few to split into "
                "train / val / test: use a world with more people"
            )
        out["test"] += people[:n_test]
        out["val"] += people[n_test : n_test + n_val]
        out["train"] += people[n_test + n_val :]
    return {k: sorted(int(p) for p in v) for k, v in out.items()}


def _vocab_id(ds: FactDataset, text: str, flag: str) -> int:
    ids = encode(ds.tokenizer, text)
    if len(ids) != 1 or ids[0] == ds.tokenizer.token_to_id("<unk>"):
        raise UserError(
            f"{flag} {text!r} is not one vocabulary token: pick a word of the world, "
            "e.g. '.' or '?'"
        )
    return ids[0]


@dataclass(frozen=True)
class Rows:
    """Labelled "question + candidate answer" token rows of one split."""

    seqs: list[tuple[int, ...]]
    correct: Bool[np.ndarray, " n"]
    question: list[int]  # index of each row's question


@dataclass(frozen=True)
class Answers:
    """Every question with its beam candidates (best first) and their exact-match labels."""

    questions: list[Example]
    candidates: list[list[Candidate]]
    correct: list[list[bool]]

    def rows(self, people: list[int], top_only: bool) -> Rows:
        """Rows of the questions about `people`: all candidates, or only the chosen (top) one."""
        keep = set(people)
        seqs, ys, qs = [], [], []
        for q, (e, cs, ls) in enumerate(
            zip(self.questions, self.candidates, self.correct, strict=True)
        ):
            if e.person in keep:
                for c, y in list(zip(cs, ls, strict=True))[: 1 if top_only else None]:
                    seqs.append(tuple(e.prompt) + c.tokens)
                    ys.append(y)
                    qs.append(q)
        return Rows(seqs, np.array(ys, dtype=bool), qs)


def answer_is_name(rows: Rows, questions: list[Example]) -> Bool[np.ndarray, " n"]:
    """The positive control's label: is the row's question asking for the name A (its answer
    span holds A)? Every candidate of a question carries the question's label."""
    return np.array([questions[q].a_span[0] >= questions[q].prompt_len for q in rows.question])


def answer_questions(
    net: torch.nn.Module,
    ds: FactDataset,
    questions: list[Example],
    beams: int,
    progress: bool = False,
) -> Answers:
    """Beam-search each question for as many tokens as its answer has; label by exact match."""
    cands = beam_search(
        raw_forward(net),
        [e.prompt for e in questions],
        [len(e.answer) for e in questions],
        beams,
        progress=progress,
    )
    label = [
        [is_exact_match(ds.text(c.tokens), ds.text(e.answer), match_rule(ds)) for c in cs]
        for cs, e in zip(cands, questions, strict=True)
    ]
    return Answers(questions, cands, label)


def beam_scores(candidates: list[list[Candidate]]) -> dict[str, np.ndarray]:
    """`likelihood` (top beam, length-normalised) and `entropy` (minus the beams' entropy)."""
    ll = np.array([cs[0].normalized for cs in candidates], dtype=float)
    neg_entropy = []
    for cs in candidates:
        lp = np.array([c.logprob for c in cs])
        p = np.exp(lp - lp.max())
        p /= p.sum()  # beam probabilities renormalised over the k beams
        neg_entropy.append(float((p * np.log(np.clip(p, 1e-300, None))).sum()))
    return {"likelihood": ll, "entropy": np.array(neg_entropy)}


def choose_alpha(
    likelihood: Float[np.ndarray, " n"],
    self_eval: Float[np.ndarray, " n"],
    correct: Bool[np.ndarray, " n"],
) -> tuple[float, list[float | None], str]:
    """ASPIRE's alpha: the grid value with the best validation AUROC (smallest on ties).

    Returns (alpha, AUROC per grid value, reason when undefined); 0.5 when validation has one class.
    """
    grid = np.linspace(0, 1, 21)
    val = np.array([auroc((1 - a) * likelihood + a * self_eval, correct) for a in grid])
    curve = [None if math.isnan(v) else float(v) for v in val]
    if np.isnan(val).all():
        return 0.5, curve, "validation answers are all correct or all wrong: alpha left at 0.5"
    return float(grid[np.nanargmax(val)]), curve, ""


def run_analysis(
    run: Run, options: SelectiveOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """Selective prediction on `run`; with `write`, save analysis/selective.json and .npz."""
    asked = options or SelectiveOptions()
    # item draws (people split, soft-prompt init, shuffled labels) differ per (world, seed) run
    opts = replace(asked, seed=run_seed(run.config, asked.seed))
    ds, model = run.dataset, run.model
    opts.validate(ds.d_vocab)
    model.eval()
    net = model.original_model  # same parameters, no hook dispatch
    token_ids = (
        _vocab_id(ds, opts.correct_token, "--correct-token"),
        _vocab_id(ds, opts.incorrect_token, "--incorrect-token"),
    )
    if token_ids[0] == token_ids[1]:
        raise UserError("--correct-token and --incorrect-token must differ")
    questions = [e for e in ds.prompts if opts.templates in ("all", e.templates)]
    if not questions:
        raise UserError(f"the run has no test prompts with --templates {opts.templates}")
    longest = max(len(e.tokens) for e in questions) + opts.n_soft
    if longest > model.cfg.n_ctx:
        raise UserError(
            f"question + answer + {opts.n_soft} soft tokens need {longest} positions "
            f"but the model has n_ctx={model.cfg.n_ctx}: lower --n-soft"
        )
    people = split_people(questions, opts.val_fraction, opts.test_fraction, opts.seed)

    # 1. Answers: k beams per question, each labelled by exact match.
    answers = answer_questions(net, ds, questions, opts.beams, progress)
    train, val = answers.rows(people["train"], False), answers.rows(people["val"], False)
    val_top, test = answers.rows(people["val"], True), answers.rows(people["test"], True)
    shuffled = np.random.default_rng(opts.seed + 1).permutation(train.correct)

    # 2. Self-evaluation, and the linear probes on the last block's residual stream.
    margins = (
        SelfEvalMargins(net, train.seqs, token_ids),
        SelfEvalMargins(net, val.seqs, token_ids),
    )
    hidden = {
        name: tuple(
            final_hidden(model, r.seqs, positions=probe_positions(r, questions, where))
            for r in (train, val, test)
        )
        for name, where in PROBES.items()
    }
    # the real labels, and the shuffled-label controls: same training, same validation labels
    variants = {"": train.correct, **({"_shuffled": shuffled} if opts.controls else {})}
    fits, probes = {}, {}
    for suffix, y in variants.items():
        fits[f"self_eval{suffix}"] = train_self_eval(
            net, (train.seqs, y), (val.seqs, val.correct), token_ids, opts, opts.seed, progress,
            margins,
        )  # fmt: skip
        for name, (x_train, x_val, _) in hidden.items():
            if suffix == "" or name == "probe":
                probes[f"{name}{suffix}"] = fit_probe(x_train, y, x_val, val.correct)
    if opts.controls:
        # Positive control: the same learner, the same rows, a label readable from them (is the
        # answer a name?). If it cannot learn this, a failure on correctness says nothing.
        fits["self_eval_positive_control"] = train_self_eval(
            net, (train.seqs, answer_is_name(train, questions)),
            (val.seqs, answer_is_name(val, questions)), token_ids,
            replace(opts, max_epochs=min(opts.max_epochs, opts.positive_control_epochs)),
            opts.seed, progress, margins,
        )  # fmt: skip

    def log_p_correct(fit: SelfEvalFit, seqs: list[tuple[int, ...]]) -> np.ndarray:
        with torch.no_grad():
            margin = self_eval_margins(net, fit.soft, seqs, token_ids)
        return F.logsigmoid(margin).double().cpu().numpy()

    # 3. Scores of the chosen answers; alpha on validation.
    alpha, val_auroc, alpha_reason = choose_alpha(
        beam_scores([answers.candidates[q] for q in val_top.question])["likelihood"],
        log_p_correct(fits["self_eval"], val_top.seqs),
        val_top.correct,
    )
    scores = beam_scores([answers.candidates[q] for q in test.question])
    for name in PROBES:
        scores[name] = probes[name][0].decision_function(hidden[name][2])
    scores["self_eval"] = log_p_correct(fits["self_eval"], test.seqs)
    scores["aspire"] = (1 - alpha) * scores["likelihood"] + alpha * scores["self_eval"]
    scores["oracle"] = test.correct.astype(float)
    # The learner on a confidence label: the model's own correctness of its chosen answers
    # (which likelihood separates), read from the question's final state through the model's
    # own output map (its log-probabilities there). A linear read of the state itself stays at
    # chance on this label too: correctness sits in how peaked the state's output is.
    train_top = answers.rows(people["train"], True)
    at = PROBES["probe_question"]
    confidence = [
        state_logprobs(
            model, final_hidden(model, r.seqs, positions=probe_positions(r, questions, at))
        )
        for r in (train_top, val_top)
    ]
    probes[CONFIDENCE] = fit_probe(confidence[0], train_top.correct, confidence[1], val_top.correct)
    scores[CONFIDENCE] = probes[CONFIDENCE][0].decision_function(
        state_logprobs(model, hidden["probe_question"][2])
    )
    if opts.controls:
        scores["probe_shuffled"] = probes["probe_shuffled"][0].decision_function(hidden["probe"][2])
        scores["self_eval_shuffled"] = log_p_correct(fits["self_eval_shuffled"], test.seqs)

    # 4. Metrics per question set.
    test_q = [questions[q] for q in test.question]
    summary, undefined, curves = set_metrics(scores, test.correct, set_masks(test_q))
    summary["alpha"] = alpha
    summary.update(metric_intervals(scores, test.correct, set_masks(test_q), opts.seed, undefined))
    if alpha_reason:
        undefined["alpha"] = alpha_reason
    fit = fits["self_eval"]
    summary["self_eval_train_loss_start"] = fit.train_loss[0]
    summary["self_eval_train_loss_best"] = fit.train_loss[fit.best_epoch]
    summary["self_eval_val_loss_start"] = fit.val_loss[0]
    summary["self_eval_val_loss_best"] = fit.val_loss[fit.best_epoch]
    summary["self_eval_val_loss_minus_ln2"] = fit.val_loss[fit.best_epoch] - LN2
    if opts.controls:
        pc = fits["self_eval_positive_control"]
        summary["positive_control_val_loss_best"] = pc.val_loss[pc.best_epoch]
        summary["positive_control_auroc_test"] = auroc(
            log_p_correct(pc, test.seqs), answer_is_name(test, questions)
        )
        summary["self_eval_shuffled_val_loss_best"] = min(fits["self_eval_shuffled"].val_loss)
    cells = sorted({(e.subset, e.direction) for e in test_q})
    typed, details = split_summary(SelectiveSummary, summary)
    data: dict[str, Any] = {
        "summary": summary_json(typed, details),
        "options": asked.to_json(),  # as asked: the seed is an offset on the run's item seed
        "method": "ASPIRE-style selective prediction (Chen et al. 2023): beam answers, "
        "learned soft-prompt self-evaluation, likelihood/entropy/probe baselines",
        "scores": list(SCORES),
        "controls": [c for c in CONTROLS if c in scores],
        "sets": {
            "mixed": "all test questions",
            "forward": "direction 'same'",
            "reverse": "direction 'reverse'",
        },
        "undefined": undefined,
        "tokens": {
            "correct": [opts.correct_token, token_ids[0]],
            "incorrect": [opts.incorrect_token, token_ids[1]],
            "score": "log softmax over the two logits at the last soft position",
        },
        "splits": {
            "people": people,
            "n_questions": {s: len(answers.rows(people[s], True).seqs) for s in SPLITS},
            "n_train_candidates": len(train.seqs),
            "train_candidate_accuracy": float(train.correct.mean()),
        },
        "test_accuracy_by_subset_direction": {
            f"{s}_{d}": float(
                test.correct[[(e.subset, e.direction) == (s, d) for e in test_q]].mean()
            )
            for s, d in cells
        },
        "alpha": {
            "chosen": alpha,
            "grid": np.linspace(0, 1, 21).tolist(),
            "val_auroc": val_auroc,
            "rule": "largest validation AUROC (mixed), smallest alpha on ties",
        },
        "self_eval": {
            k: {"train_loss": f.train_loss, "val_loss": f.val_loss, "best_epoch": f.best_epoch}
            for k, f in fits.items()
        },
        "ln2": LN2,
        "positive_control": {
            "label": "the answer is the name (A), not the description: readable from the rows",
            "score": "AUROC of log P(correct) on the test people's chosen answers",
        },
        "probe": {
            "hook": f"blocks.{model.cfg.n_layers - 1}.hook_resid_post",
            "position": {
                "probe": "last answer token",
                "probe_question": "question's final position",
                "probe_first_answer": "first answer token",
            },
            "C": {name: probes[name][1] for name in (*PROBES, CONFIDENCE)},
            CONFIDENCE: "the same learner on the log-probabilities the model itself reads off "
            "the question's final state (ln_final, unembed, log-softmax), trained on the training "
            "people's chosen answers labelled by their correctness (a confidence label)",
        },
    }
    arrays = {
        **curves,
        "correct": test.correct,
        "direction": np.array([e.direction for e in test_q]),
        "subset": np.array([e.subset for e in test_q]),
        "person": np.array([e.person for e in test_q]),
        **{f"score_{k}": v for k, v in scores.items()},
    }
    result: Result[SelectiveSummary] = Result(NAME, data, arrays, summary_type=SelectiveSummary)
    if write:
        write_result(run.path, result)
    return result
