"""Where is a fact stored? P-, Q- and reverse Q-probing and QA extraction on the biography world.

Method (Allen-Zhu & Li, Physics of Language Models Part 3.1, arXiv 2309.14316; Part 3.2, arXiv
2309.14402). On the biography world (`interp.data.biography`) every person has a name and four
classed attributes (role, birth city, birth year, employer) written only in the biographies.

- Q-probing: input "<bos> A" (the name alone), residual stream at the name's last token, per
  layer, predicting every attribute. It succeeds only if training wrote the attributes into the
  name's representation ("stored at the entity").
- Reverse Q-probing: input "<bos> the B" (the person's work alone, "the <role> of <title>"), at
  its last token, predicting the person's first-name class and the first name itself (the name's
  first token): is the person written into the attribute's representation?
- P-probing: the person's first biography, at the position just before each attribute's value,
  predicting that attribute ("is the fact ready before it is written?").
- Extraction: greedy QA on the `qa_train` people (QA trained) and the `qa_test` people (never
  questioned in training), forward ("where was A born ?") and inverse ("who is the <work> ?").
The paper's finding to match: without knowledge augmentation the attributes are not decodable at
the name and extraction on unseen people is poor; with it (multiplicity, permutation, full name)
Q-probing is near perfect and extraction ~96%; inverse search stays ~0%.

The probes read the people never questioned in training (the `qa_test` half; `--people all`
reads everyone). The `qa_train` half's QA documents train the inverse question ("who is the
<work> ? A"), which writes the person into the work's representation for those people. In a
check on the first storage study's plain causal run (a reverse Q-probe fitted to each half
alone, 2026-11-30), it read 0.36 of the first-name class on the QA-trained half against 0.24 on
the unseen half (chance 0.29 and 0.31): probing everyone credits the biographies with what QA
training stored.

Every probe is `interp.analysis.probing`'s L2 logistic regression (scipy L-BFGS, standardised
on the training fold), evaluated by k-fold cross-validation over people (each person one row,
folds stratified by label), with the regularisation C chosen per outer fold by an inner
cross-validation on the outer training people only (nested CV: the test person never informs
C). Accuracy pools the held-out predictions of all folds.

Controls that can fail:
- control task (Hewitt & Liang 2019): each input's label replaced by a random label of its last
  token's *type* (the last-name token for Q-probes, the last title word for reverse probes, the
  read token for P-probes), same number of classes, fitted at the C the real probe chose most
  often at that layer (the same probe capacity). Folds are over people, but token types recur
  across people, so a probe can score on the control task by memorising token identity;
  selectivity = the real probe's best-layer accuracy minus the control task's best-layer
  accuracy (each a maximum over the same layers).
- permutation null: the real labels permuted over people `permutations` times (within each of
  the real probe's folds, so each keeps its class counts), the same folds (at the C the real
  probe chose most often at its best layer) and the same maximum over layers: its 95th
  percentile is the bar a best-layer accuracy must clear, and
  p = (1 + #{null >= observed}) / (1 + permutations).
- positive controls at the entity: B's own role from "<bos> the B" (the role word is in the
  input) and A's own first-name class from "<bos> A": a probe that cannot read these cannot
  support a null anywhere.
- chance: the majority-class rate of each label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.linear_probe import (
    control_task_labels,
    fit_probe,
    fit_probe_batch,
    majority_rate,
    person_folds,
)
from interp.analysis.options import SEED_MAX, Options, option
from interp.data.biography import LABELS, BiographyWorld, BioPerson
from interp.data.biography import level_name as level_name
from interp.data.dataset import FactDataset
from interp.data.tokenizer import BOS, encode
from interp.errors import UserError
from interp.evaluate import exact_match
from interp.model import resid_at
from interp.results import (
    Result,
    Section,
    Summary,
    number,
    section,
    split_summary,
    summary_json,
    write_result,
)
from interp.runs import Run
from interp.stats import NONNEGATIVE, SIGNED_UNIT, UNIT, run_seed, wilson_interval

NAME = "storage"
REVERSE_LABELS = ("first_class", "first")  # the person, read from the work alone
POSITIVE = {"role_from_work": ("work", "role"), "first_class_from_name": ("name", "first_class")}
P_ATTRIBUTES = ("work", "city", "year", "employer")  # P-probe: the value after the position
P_LABEL = {"work": "role", "city": "city", "year": "year", "employer": "employer"}


@dataclass(frozen=True)
class Probe(Section):
    """One storage probe: best-layer accuracy (a maximum over layers) with its controls."""

    best: float | None = number("cross-validated accuracy, best layer", UNIT, headline=True)
    best_layer: float | None = number("that layer (0 = embeddings)", NONNEGATIVE)
    control_best: float | None = number("the control task's best layer", UNIT)
    selectivity: float | None = number("best minus the control task's best", SIGNED_UNIT)
    null95: float | None = number("the permutation null's 95th percentile", UNIT)
    p: float | None = number("permutation p of the best layer", UNIT, pvalue=True)


@dataclass(frozen=True)
class MeanProbe(Section):
    """The Q-probes' numbers, mean of the four attributes."""

    best: float | None = number("best-layer accuracy", UNIT, headline=True)
    control_best: float | None = number("the control task's", UNIT, headline=True)
    null95: float | None = number("the null's 95th percentile", UNIT, headline=True)


@dataclass(frozen=True)
class Extraction(Section):
    """Greedy QA exact match."""

    qa_train: float | None = number("people whose QA was trained", UNIT, headline=True)
    qa_test: float | None = number("people never questioned (unseen)", UNIT, headline=True)


@dataclass(frozen=True)
class Chance(Section):
    """Majority-class accuracy of each probe's label."""

    q_role: float | None = number("role", UNIT)
    q_city: float | None = number("city", UNIT)
    q_year: float | None = number("year", UNIT)
    q_employer: float | None = number("employer", UNIT)
    q_mean: float | None = number("mean of the four", UNIT)
    rq_first_class: float | None = number("first-name class", UNIT)
    rq_first: float | None = number("first name", UNIT)


@dataclass(frozen=True)
class StorageSummary(Summary):
    """The storage probes' headline numbers (`result.summary` of `run_analysis`): Q-probes at
    the name (`q_*`: the name alone -> an attribute), reverse Q-probes at the work (`rq_*`),
    positive controls (`pos_*`), P-probes (`p_*`) and QA extraction (`extract_*`)."""

    q_role: Probe = section(Probe, "Q-probe: the name alone -> role")
    q_city: Probe = section(Probe, "Q-probe: -> birth city")
    q_year: Probe = section(Probe, "Q-probe: -> birth year")
    q_employer: Probe = section(Probe, "Q-probe: -> employer")
    q_mean: MeanProbe = section(MeanProbe, "the four Q-probes' mean")
    rq_first_class: Probe = section(Probe, "reverse Q-probe: the work alone -> first-name class")
    rq_first: Probe = section(Probe, "reverse Q-probe: the work alone -> first name")
    pos_role_from_work: Probe = section(Probe, "positive control: the work -> its role word")
    pos_first_class_from_name: Probe = section(Probe, "positive control: the name -> its class")
    p_work: Probe = section(Probe, "P-probe before the work")
    p_city: Probe = section(Probe, "P-probe before the city")
    p_year: Probe = section(Probe, "P-probe before the year")
    p_employer: Probe = section(Probe, "P-probe before the employer")
    chance: Chance = section(Chance, "chance")
    extract_forward: Extraction = section(Extraction, "forward QA, mean of the four questions")
    extract_inverse: Extraction = section(Extraction, "the inverse question")
    extract_role: Extraction = section(Extraction, "forward QA: role")
    extract_city: Extraction = section(Extraction, "forward QA: city")
    extract_year: Extraction = section(Extraction, "forward QA: year")
    extract_employer: Extraction = section(Extraction, "forward QA: employer")


@dataclass(frozen=True)
class StorageOptions(Options):
    """How the storage probes are fitted and controlled (each help line is also a CLI flag)."""

    folds: int = option(5, "k of the outer k-fold cross-validation over people", min=2)
    inner_folds: int = option(3, "k of the inner cross-validation that chooses C", min=2)
    Cs: tuple[float, ...] = option(
        (0.05, 0.5, 5.0),
        "inverse L2 strengths the inner cross-validation chooses from (standardised features)",
        min=0,
        min_open=True,
    )
    permutations: int = option(100, "label permutations of the best-layer null", min=0)
    people: str = option(
        "unseen",
        "whose representations the probes read: 'unseen' (the qa_test half, never questioned: "
        "what the biographies stored) or 'all' (the qa_train half's QA, inverse questions "
        "included, also writes the person into the work)",
        choices=("unseen", "all"),
    )
    seed: int = option(
        0,
        "offset on the run's item seed (stats.run_seed) of folds, control labels, permutations",
        min=0,
        max=SEED_MAX,
    )


# Activations


def name_inputs(ds: FactDataset, people: Sequence[BioPerson]) -> list[tuple[int, ...]]:
    """ "<bos> A" per person (the Q-probe's input; its last token is the last name)."""
    return [(BOS, *encode(ds.tokenizer, p.name)) for p in people]


def work_inputs(ds: FactDataset, people: Sequence[BioPerson]) -> list[tuple[int, ...]]:
    """ "<bos> the B" per person (the reverse probe's input; B = "<role> of <title>")."""
    return [(BOS, *encode(ds.tokenizer, "the " + p.description)) for p in people]


def first_biographies(ds: FactDataset) -> dict[int, Any]:
    """Each person's first biography (template 0), which carries every attribute's span."""
    return {e.person: e for e in ds.train_docs if e.order == "bio" and e.template == 0}


# Probes


def nested_cv_correct(
    x: Float[np.ndarray, "n d"],
    y: Int[np.ndarray, " n"],
    people: Int[np.ndarray, " n"],
    opts: StorageOptions,
    seed: int,
) -> tuple[np.ndarray, list[float]]:
    """Held-out correctness of every row and the C each outer fold chose.

    Outer folds over people (stratified by `y`); within each outer training set an inner
    person-disjoint cross-validation picks the C of `opts.Cs` with the best accuracy (ties: the
    smallest C, the strongest regularisation). With one C there is no inner loop."""
    correct = np.zeros(len(y), dtype=bool)
    chosen = []
    for train, test in person_folds(people, opts.folds, seed, strata=y):
        C = opts.Cs[0]
        n_inner = min(opts.inner_folds, len(np.unique(people[train])))
        if len(opts.Cs) > 1 and n_inner >= 2:
            scores = []
            for c in opts.Cs:
                hits = 0
                for itr, ite in person_folds(people[train], n_inner, seed + 1, strata=y[train]):
                    pred = fit_probe(x[train][itr], y[train][itr], x[train][ite], c)
                    hits += int((pred == y[train][ite]).sum())
                scores.append(hits)
            C = opts.Cs[int(np.argmax(scores))]
        chosen.append(C)
        correct[test] = fit_probe(x[train], y[train], x[test], C) == y[test]
    return correct, chosen


def permutation_null(
    feats: Float[np.ndarray, "layer n d"],
    y: Int[np.ndarray, " n"],
    people: Int[np.ndarray, " n"],
    folds: int,
    C: float,
    n_perm: int,
    seed: int,
) -> Float[np.ndarray, " perm"]:
    """The best-layer accuracy (max over layers) of probes on permuted labels, `n_perm` times.

    A restricted permutation test: the folds are the real probe's (over people, stratified by
    the real labels) and each permutation shuffles the labels among the people of each fold, so
    every fold keeps its exact class counts (the stratification the real probe had) while the
    link between person and label is destroyed; under the null (activations independent of the
    labels) every such relabelling is equally likely. The permutations are fitted together
    (`fit_probe_batch`)."""
    if n_perm == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    splits = person_folds(people, folds, seed, strata=y)
    Y = np.tile(y, (n_perm, 1))
    for _, test in splits:
        for i in range(n_perm):
            Y[i, test] = y[test][rng.permutation(len(test))]
    hits = np.zeros((len(feats), n_perm))
    for li, f in enumerate(feats):
        for train, test in splits:
            pred = fit_probe_batch(f[train], Y[:, train], f[test], C)
            hits[li] += (pred == Y[:, test]).sum(1)
    out: np.ndarray = (hits / len(y)).max(0)
    return out


@dataclass
class ProbeResult:
    """One probe (real task) with its control task and null: accuracies per layer."""

    accuracy: np.ndarray  # [layer]
    control: np.ndarray  # [layer]: control-task accuracy
    chance: float
    Cs: list[list[float]]  # C chosen per layer per outer fold
    null: np.ndarray  # [perm] best-layer accuracies under permuted labels (may be empty)
    correct: np.ndarray  # [person]: held-out correctness at the best layer (intervals by person)

    def summary(self, key: str) -> dict[str, float]:
        best = int(np.argmax(self.accuracy))
        out = {
            f"{key}_best": float(self.accuracy.max()),
            f"{key}_best_layer": best,
            f"{key}_control_best": float(self.control.max()),
            f"{key}_selectivity": float(self.accuracy.max() - self.control.max()),
            f"chance_{key}": self.chance,
        }
        if len(self.null):
            out[f"{key}_null95"] = float(np.quantile(self.null, 0.95))
            out[f"{key}_p"] = float(
                (1 + (self.null >= self.accuracy.max()).sum()) / (1 + len(self.null))
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy.tolist(),
            "control": self.control.tolist(),
            "chance": self.chance,
            "C_chosen": self.Cs,
            "null": self.null.tolist(),
            "correct_best": self.correct.astype(int).tolist(),
        }


def run_probe(
    feats: Float[Tensor, "layer n d_model"],
    y: Int[np.ndarray, " n"],
    token_types: Int[np.ndarray, " n"],
    people: Int[np.ndarray, " n"],
    n_classes: int,
    opts: StorageOptions,
    seed: int,
    null: bool = True,
) -> ProbeResult:
    """The real probe at every layer (nested CV), its control task, and its permutation null."""
    x = feats.double().numpy()
    yc = control_task_labels(token_types, n_classes, seed + 7)
    acc, ctrl, Cs, hits = [], [], [], []
    for layer in range(x.shape[0]):
        correct, chosen = nested_cv_correct(x[layer], y, people, opts, seed)
        acc.append(correct.mean())
        hits.append(correct)
        Cs.append(chosen)
        same_C = replace(opts, Cs=(Counter(chosen).most_common(1)[0][0],))  # same capacity
        ctrl.append(nested_cv_correct(x[layer], yc, people, same_C, seed)[0].mean())
    accuracy = np.array(acc)
    best = int(np.argmax(accuracy))
    C = Counter(Cs[best]).most_common(1)[0][0]
    nl = (
        permutation_null(x, y, people, opts.folds, C, opts.permutations, seed)
        if null and opts.permutations
        else np.zeros(0)
    )
    return ProbeResult(accuracy, np.array(ctrl), majority_rate(y), Cs, nl, hits[best])


# Extraction


def extraction(
    model: TransformerBridge, ds: FactDataset
) -> dict[str, dict[str, list[float | int]]]:
    """Greedy QA exact match per question (the four forward labels and `inverse`) and subset:
    {question: {subset: [rate, low, high, hits, n]}} (Wilson 95% intervals)."""
    prompts = ds.prompts
    hits = exact_match(model, ds, prompts, "word")
    names = [*LABELS, "inverse"]
    out: dict[str, dict[str, list[float | int]]] = {}
    for e_i, q in enumerate(names):
        for s in ("qa_train", "qa_test"):
            m = np.array([e.template == e_i and e.subset == s for e in prompts])
            k, n = int(hits[m].sum()), int(m.sum())
            rate, lo, hi = wilson_interval(k, n)
            out.setdefault(q, {})[s] = [rate, lo, hi, k, n]
    return out


# The instrument


def check_dataset(ds: FactDataset, opts: StorageOptions) -> BiographyWorld:
    if not isinstance(ds.world, BiographyWorld):
        raise UserError(
            "storage probes need the biography world's attributes: train a run with "
            "--set world.source=biography (or use `interp study --preset storage`)"
        )
    n = sum(opts.people == "all" or p.subset == "qa_test" for p in ds.world.people)
    if opts.folds * opts.inner_folds > n:
        raise UserError(
            f"--folds {opts.folds} x --inner-folds {opts.inner_folds} exceeds the {n} people "
            f"probed (--people {opts.people}): lower them"
        )
    return ds.world


def run_analysis(
    run: Run, options: StorageOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """Q-, reverse Q- and P-probes with their controls, positive controls and extraction; with
    `write`, save analysis/storage.json and .npz. Arrays: `{probe}_accuracy` and
    `{probe}_control` per layer (0 = embeddings, l + 1 = after block l), `{probe}_null`."""
    asked = options or StorageOptions()
    opts = replace(asked, seed=run_seed(run.config, asked.seed))
    ds, model = run.dataset, run.model
    world = check_dataset(ds, opts)
    people = [p for p in world.people if opts.people == "all" or p.subset == "qa_test"]
    pid = np.array([p.id for p in people])
    names, works = name_inputs(ds, people), work_inputs(ds, people)
    name_x = resid_at(model, names, [len(s) - 1 for s in names])
    work_x = resid_at(model, works, [len(s) - 1 for s in works])
    last_name = np.array([s[-1] for s in names])
    last_title = np.array([s[-1] for s in works])
    jobs: list[tuple[str, Tensor, str, np.ndarray, bool]] = []
    jobs += [(f"q_{lab}", name_x, lab, last_name, True) for lab in LABELS]
    jobs += [(f"rq_{lab}", work_x, lab, last_title, lab == "first_class") for lab in REVERSE_LABELS]
    jobs += [
        (f"pos_{key}", work_x if site == "work" else name_x, lab,
         last_title if site == "work" else last_name, False)
        for key, (site, lab) in POSITIVE.items()
    ]  # fmt: skip
    bios = first_biographies(ds)
    docs = [bios[p.id] for p in people]
    for attr in P_ATTRIBUTES:
        pos = [next(s for lab, s, _ in d.spans if lab == attr) - 1 for d in docs]
        feats = resid_at(model, [d.tokens for d in docs], pos)
        types = np.array([d.tokens[q] for d, q in zip(docs, pos, strict=True)])
        jobs.append((f"p_{attr}", feats, P_LABEL[attr], types, False))
    probes: dict[str, ProbeResult] = {}
    bar = tqdm(jobs, desc="storage probes", disable=not progress, dynamic_ncols=True)
    for i, (key, feats, lab, types, null) in enumerate(bar):
        y = np.array([p.label(lab) for p in people], dtype=np.int64)
        probes[key] = run_probe(
            feats, y, types, pid, world.n_classes(lab), opts, opts.seed * 1_000 + 10 * i, null
        )
    ext = extraction(model, ds)
    summary: dict[str, float] = {}
    for key, pr in probes.items():
        summary |= pr.summary(key)
    for k in ("best", "control_best", "null95"):
        summary[f"q_mean_{k}"] = float(np.mean([summary[f"q_{lab}_{k}"] for lab in LABELS]))
    summary["chance_q_mean"] = float(np.mean([summary[f"chance_q_{lab}"] for lab in LABELS]))
    for s in ("qa_train", "qa_test"):
        for q, by in ext.items():
            summary[f"extract_{q}_{s}"] = by[s][0]
        summary[f"extract_forward_{s}"] = float(np.mean([ext[q][s][0] for q in LABELS]))
        summary[f"extract_inverse_{s}"] = ext["inverse"][s][0]
    w = run.config.world
    data = {
        "options": asked.to_json(),
        "n_people": len(people),
        "augmentation": {
            "multiplicity": w.bio_multiplicity,
            "permute": w.bio_permute,
            "fullname": w.bio_fullname,
        },
        "objective": run.config.train.objective,
        "layers": "0 = embeddings (resid_pre of block 0); l + 1 = after block l (resid_post)",
        "probes": {k: v.to_json() for k, v in probes.items()},
        "extraction": ext,
        "extraction_fields": "[rate, wilson low, wilson high, hits, n]",
        "summary": summary_json(*split_summary(StorageSummary, summary)),
    }
    arrays: dict[str, np.ndarray] = {"people": pid}
    for k, v in probes.items():
        arrays[f"{k}_accuracy"], arrays[f"{k}_control"] = v.accuracy, v.control
        arrays[f"{k}_null"] = v.null
    result: Result[StorageSummary] = Result(NAME, data, arrays, summary_type=StorageSummary)
    if write:
        write_result(run.path, result)
    return result


def format_summary(result: Result) -> str:
    """The probes' best-layer accuracies beside their controls, and extraction."""
    sm = result.summary
    lines = [
        f"{'probe':<26} {'best':>6} {'layer':>5} {'control':>8} {'null95':>7} {'p':>6} "
        f"{'chance':>7}"
    ]
    for key in result["probes"]:
        null = sm.get(f"{key}_null95")
        p = sm.get(f"{key}_p")
        lines.append(
            f"{key:<26} {sm[f'{key}_best']:>6.1%} {sm[f'{key}_best_layer']:>5} "
            f"{sm[f'{key}_control_best']:>8.1%} "
            f"{'' if null is None else f'{null:.1%}':>7} {'' if p is None else f'{p:.3f}':>6} "
            f"{sm[f'chance_{key}']:>7.1%}"
        )
    lines.append("")
    lines.append(f"{'extraction (greedy QA)':<26} {'qa_train':>18} {'qa_test (unseen)':>18}")
    for q, by in result["extraction"].items():
        cells = [
            f"{r:.1%} [{lo:.0%},{hi:.0%}]" for r, lo, hi, _, _ in (by["qa_train"], by["qa_test"])
        ]
        lines.append(f"{q:<26} {cells[0]:>18} {cells[1]:>18}")
    aug = result["augmentation"]
    lines.append(
        f"({result['n_people']} people; multiplicity {aug['multiplicity']}, permute "
        f"{aug['permute']}, fullname {aug['fullname']}; {result['options']['folds']}-fold CV over "
        "people, C by nested CV; best layer)"
    )
    return "\n".join(lines)
