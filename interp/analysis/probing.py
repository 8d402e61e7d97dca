"""Linear probing: does the representation of one entity carry an attribute of the other?

Method. A linear probe (Alain & Bengio 2016) is a logistic-regression classifier trained on a
model's activations to predict a label; if a *linear* read-out of the activation predicts the
label on inputs it was not trained on, the activation encodes the label in a form the model's
later linear maps could use. Here the probes test the reversal-curse hypothesis directly
(Berglund et al. 2023, SCIENCE.md section 4): a next-token update on "A is B" should write B
into A's representation, and nothing should write A into B's.

- `a_to_b`: input "<bos> A" (the name alone), activation at A's last token, label = B's
  attribute (`Person.role`, the role word that only B's text holds);
- `b_to_a`: input "<bos> the B" (the description, after the "the" that precedes it in every
  training text), activation at B's last token, label = A's
  attribute (`Person.first_class`, the first-name class that only A's text holds).

The probes are the cross-entity ones on purpose: the description text contains the role word
itself, so B's own activations trivially hold `role` and A's own activations trivially hold
`first_class`; only A -> role and B -> first_class can be read off a representation that training
wrote the other entity into. Activations are taken at every depth of the residual stream (layer
0 = the embeddings, `blocks.0.hook_resid_pre`; layer l+1 = `blocks.l.hook_resid_post`) and at
every MLP output (`blocks.l.hook_mlp_out`, stored at layer l+1, "after block l"), per subset
(n2d, d2n, both). Every subset and both directions go through the same code: the analysis never
looks at which direction a person was trained in. The hypothesis predicts, for a causal model,
role readable from A for n2d and both people and not for d2n, first-name class readable from B
for d2n and both and not for n2d; the code does not know this prediction. One asymmetry of the
inputs is worth knowing: "<bos> A" is exactly the start of the n2d template "<A> is the <B> .",
and "<bos> the B" the start of the d2n template "the <B> is called <A> ." (before 2026-12-06 the
probe read "<bos> B", without the "the" that B always follows in training).

Evaluation is k-fold cross-validation over people within a subset (seeded, stratified by label):
every person is tested exactly once by a probe that never saw that person, so a probe can only
succeed through a direction shared across people, not by memorising individuals. Accuracy pools
the test predictions of all folds. Features are standardised with statistics of the training
fold only.

Reference site. The same probes also read the residual stream at the final position of a question
whose answer is the other entity (`prompt_final`: training template 0, "<bos> A is the" for
A -> role and "<bos> the B is called" for B -> first-name class), for every subset alike. Where
the model answers the question, the attribute must be there by the last layer, so this site
shows that a probe of this size finds the attribute when the model holds it, and where the
entity-alone probes are at chance it tells apart "the fact is not stored" from "the fact is
retrieved later, at the question's final position, not written into the entity's own tokens".

Controls.
- Random initialisation: the same probes on the run's own initial weights (`build_model` with
  `train.seed`, i.e. the model before its first step). Anything it decodes comes from the input
  tokens, not from training.
- Control task (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"):
  the trained model's activations with each person's label replaced by a random label of the
  entity's last token *type* (the last name for A, the last title word for B), as many classes
  as the real task. Folds are over people but token types recur across people, so a probe can
  score on it only by memorising token identity: the probe's capacity to memorise, at this
  sample size. Selectivity = the real task's best-layer accuracy minus the control task's
  best-layer accuracy (each a maximum over the same layers). (Before 2026-12-06 the control
  was a permutation of the labels over people, and selectivity was read at the real task's
  best layer.)
- Chance: the majority-class rate of the real labels in the subset, the best a label-blind
  guess can do. A probe that has learned nothing scores nearer the proportional chance
  sum_c p_c^2 (guessing in proportion to the classes), which is also recorded.
"Best" accuracies take the maximum over layers for the real task and for every control alike,
so the selection bias of a maximum over layers is the same on both sides of a comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.linear_probe import (
    control_task_labels,
    cross_validated_correct,
    majority_rate,
    proportional_chance,
)
from interp.analysis.options import SEED_MAX, Options, option
from interp.data.dataset import FactDataset, entity_alone, pad_batch
from interp.data.example import Example
from interp.data.world import SUBSETS, Person
from interp.errors import UserError
from interp.model import build_bridge, resid_at, resid_hook_names, residual_stack
from interp.results import Result, Section, Summary, number, section, summary_json, write_result
from interp.runs import Run
from interp.stats import UNIT, run_seed

SITES = ("resid", "mlp_out", "prompt_final")
PROBE_DIRECTIONS = ("a_to_b", "b_to_a")
CONDITIONS = ("trained", "randinit", "randlabel")
ENTITY = {"a_to_b": "a", "b_to_a": "b"}  # which entity is the input of each probe direction
LEAD = {"a": "", "b": "the"}  # what precedes the entity in every training text ("is the <B>")
LABEL = {"a_to_b": "role", "b_to_a": "first_class"}  # the other entity's attribute it predicts
ANSWER_ORDER = {"a_to_b": "n2d", "b_to_a": "d2n"}  # prompt order whose answer holds the attribute
SITE_TAG = {"resid": "", "mlp_out": "mlp_", "prompt_final": "prompt_"}  # in summary keys


NAME = "probing"


@dataclass(frozen=True)
class BySubset(Section):
    """A rate per subset of people (a probe's accuracy, an exact match)."""

    n2d: float | None = number("n2d people", UNIT, headline=True)
    d2n: float | None = number("d2n people", UNIT, headline=True)
    both: float | None = number("both people", UNIT, headline=True)


@dataclass(frozen=True)
class ByProbe(Section):
    """The two cross-entity probes, each on an entity alone."""

    a_to_b: BySubset = section(BySubset, "A alone -> B's role")
    b_to_a: BySubset = section(BySubset, "B alone -> A's first-name class")


@dataclass(frozen=True)
class ProbingSummary(Summary):
    """Probing's headline numbers (`result.summary` of `run_analysis`): best-layer accuracy of
    the cross-entity probes on an entity's own representation (entity alone), per subset, with
    the control task; chance is `chance_a_to_b` / `chance_b_to_a`. Every site
    (resid, mlp_out, prompt_final) and control is in `best` and `selectivity` (details)."""

    probe: ByProbe = section(
        ByProbe, "the probes on the trained model, residual stream, best layer", "_best"
    )
    control_randlabel: ByProbe = section(
        ByProbe, "the same probes on the control task (a random label per token type)", "_best"
    )
    chance_a_to_b: float | None = number(
        "chance accuracy of the A -> role probe (majority class), mean over subsets", UNIT
    )
    chance_b_to_a: float | None = number("the same for the B -> first-name probe", UNIT)

    def best(self, site: str = "resid", condition: str = "probe") -> dict[tuple[str, str], float]:
        """Best-layer accuracy by (direction, subset) at `site` (resid, mlp_out, prompt_final),
        for `condition` "probe" (trained model), "control_randinit" or "control_randlabel"."""
        return self.cells(
            f"{condition}_{SITE_TAG[site]}{{direction}}_{{subset}}_best",
            direction=PROBE_DIRECTIONS,
            subset=SUBSETS,
        )

    def selectivity(self, site: str = "resid") -> dict[tuple[str, str], float]:
        """The real task's best-layer accuracy minus the control task's, by (direction,
        subset)."""
        return self.cells(
            f"selectivity_{SITE_TAG[site]}{{direction}}_{{subset}}",
            direction=PROBE_DIRECTIONS,
            subset=SUBSETS,
        )

    def chance(self) -> dict[tuple[str, str], float]:
        """Chance accuracy by (direction, subset)."""
        return self.cells("chance_{direction}_{subset}", direction=PROBE_DIRECTIONS, subset=SUBSETS)


@dataclass(frozen=True)
class ProbingOptions(Options):
    """How the probes are fitted and cross-validated (each help line is also the CLI's --help)."""

    folds: int = option(5, "k of k-fold cross-validation over people within a subset", min=2)
    C: float = option(
        1.0,
        "inverse L2 strength of the logistic-regression probe (on standardised features)",
        min=0,
        min_open=True,
    )
    seed: int = option(
        0,
        "offset on the run's item seed (stats.run_seed) of the fold assignment and of the "
        "control task's labels",
        min=0,
        max=SEED_MAX,
    )

    def validate(self, n_people: int) -> None:
        """The checks that need the run: at most one fold per person."""
        if self.folds > n_people:
            raise UserError(
                f"--folds {self.folds} exceeds the {n_people} people per subset: "
                f"use --folds {n_people} or fewer"
            )


@torch.no_grad()
def entity_activations(
    model: TransformerBridge, dataset: FactDataset, people: Sequence[Person], which: str
) -> dict[str, Float[Tensor, "layer person d_model"]]:
    """Activations at the entity's last token, the entity alone as input ("<bos> A" /
    "<bos> the B": B as training always has it, after "the").

    Returns {"resid": [n_layers + 1, ...] (0 = embeddings, l + 1 = after block l),
             "mlp_out": [n_layers + 1, ...] (0 = NaN: no MLP before the first block)}.
    """
    examples, read_at = entity_inputs(dataset, people, which)
    last = torch.tensor(read_at)
    device = next(model.parameters()).device
    tokens, _ = pad_batch([e.tokens for e in examples], device=device)
    n_layers = model.cfg.n_layers
    names = [*resid_hook_names(n_layers), *(f"blocks.{l}.hook_mlp_out" for l in range(n_layers))]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    rows, last = torch.arange(len(examples)), last.to(device)
    resid = residual_stack(model, cache)[:, rows, last].float().cpu()
    mlp = [cache[f"blocks.{l}.hook_mlp_out"][rows, last].float().cpu() for l in range(n_layers)]
    mlp_out = torch.stack([torch.full_like(mlp[0], float("nan")), *mlp])
    return {"resid": resid, "mlp_out": mlp_out}


@torch.no_grad()
def prompt_activations(
    model: TransformerBridge,
    dataset: FactDataset,
    people: Sequence[Person],
    order: str,
    template: int = 0,
) -> dict[str, Float[Tensor, "layer person d_model"]]:
    """Residual stream at the final position of each person's training-template prompt of `order`
    (whose answer is the other entity): {"prompt_final": [n_layers + 1, person, d_model]}."""
    index = {
        (e.person, e.order): e
        for e in dataset.prompts
        if e.templates == "train" and e.template == template
    }
    missing = [p.id for p in people if (p.id, order) not in index]
    if missing:
        raise UserError(
            f"people {missing[:3]} have no {order} training prompt {template}: "
            "the dataset lacks the prompts probing needs; rebuild the run"
        )
    examples = [index[(p.id, order)] for p in people]
    final = [e.prompt_len - 1 for e in examples]
    return {"prompt_final": resid_at(model, [e.prompt for e in examples], final)}


def labels(people: Sequence[Person], direction: str) -> Int[np.ndarray, " person"]:
    """The other entity's attribute for each person: role for a_to_b, first_class for b_to_a."""
    return np.array([getattr(p, LABEL[direction]) for p in people], dtype=np.int64)


def entity_inputs(
    dataset: FactDataset, people: Sequence[Person], which: str
) -> tuple[list[Example], list[int]]:
    """Each person's entity alone ("<bos> A" / "<bos> the B") and the position a probe reads
    (the entity's last token)."""
    examples = [entity_alone(dataset, p, which, LEAD[which]) for p in people]
    return examples, [e.a_last if which == "a" else e.b_last for e in examples]


def entity_token_types(
    dataset: FactDataset, people: Sequence[Person], which: str
) -> Int[np.ndarray, " person"]:
    """The token id each probe reads (`entity_inputs`' position): the *type* Hewitt & Liang's
    control task gives a label of its own."""
    examples, read_at = entity_inputs(dataset, people, which)
    return np.array([e.tokens[i] for e, i in zip(examples, read_at, strict=True)], dtype=np.int64)


def control_labels(
    types: Int[np.ndarray, " n"], y: Int[np.ndarray, " n"], seed: int
) -> Int[np.ndarray, " n"]:
    """Hewitt & Liang's control task: a random label per input token type (the entity's last
    token), as many classes as the real task: a probe scores above chance on it only by
    memorising token identity across people who share the token."""
    return control_task_labels(types, int(y.max()) + 1, seed)


def probe_people(dataset: FactDataset) -> dict[str, list[Person]]:
    """The trained people of each subset; refuses datasets without the synthetic attributes."""
    if dataset.world is None or not dataset.people:
        raise UserError(
            "probing needs the synthetic world's attributes (role, first-name class): "
            "run it on a run with world.source=synthetic"
        )
    return {s: [p for p in dataset.people if p.subset == s] for s in SUBSETS}


def probe_model(
    model: TransformerBridge,
    dataset: FactDataset,
    by_subset: dict[str, list[Person]],
    opts: ProbingOptions,
    control: bool = False,
    sites: Sequence[str] = SITES,
) -> Float[np.ndarray, "site direction subset layer person"]:
    """Cross-validated probes of one model at every site x direction x subset x layer.

    Returns, per person, 1.0 / 0.0 for a right / wrong held-out prediction (NaN where the site
    has no activation: mlp_out at layer 0). With `control`, the labels are the control task's
    (`control_labels`: one per token type, seeded by `opts.seed`, the direction and the subset;
    at the prompt_final site too, keyed by the entity's token).
    """
    n_layers = model.cfg.n_layers
    n_people = len(by_subset[SUBSETS[0]])
    out = np.full((len(sites), len(PROBE_DIRECTIONS), len(SUBSETS), n_layers + 1, n_people), np.nan)
    for di, d in enumerate(PROBE_DIRECTIONS):
        for si, s in enumerate(SUBSETS):
            people = by_subset[s]
            y = labels(people, d)
            if control:
                types = entity_token_types(dataset, people, ENTITY[d])
                y = control_labels(types, y, seed=opts.seed * 1_000 + 10 * di + si)
            pid = np.array([p.id for p in people])
            feats = entity_activations(model, dataset, people, ENTITY[d])
            if "prompt_final" in sites:
                feats |= prompt_activations(model, dataset, people, ANSWER_ORDER[d])
            for ti, site in enumerate(sites):
                for layer in range(1 if site == "mlp_out" else 0, n_layers + 1):
                    x = feats[site][layer].double().numpy()
                    out[ti, di, si, layer] = cross_validated_correct(
                        x, y, pid, opts.folds, opts.seed, opts.C
                    )
    return out


def check_people(dataset: FactDataset, opts: ProbingOptions) -> dict[str, list[Person]]:
    """The people to probe per subset, validated against the options (same count per subset)."""
    by_subset = probe_people(dataset)
    n_people = min(len(v) for v in by_subset.values())
    opts.validate(n_people)
    if any(len(v) != n_people for v in by_subset.values()):
        raise UserError("probing expects the same number of people in every subset")
    return by_subset


def chance_levels(
    by_subset: dict[str, list[Person]], proportional: bool = False
) -> Float[np.ndarray, "direction subset"]:
    """Majority-class rate (with `proportional`, sum_c p_c^2) of each probe's labels, per subset."""
    rate = proportional_chance if proportional else majority_rate
    return np.array([[rate(labels(by_subset[s], d)) for s in SUBSETS] for d in PROBE_DIRECTIONS])


def run_analysis(
    run: Run, options: ProbingOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """Probe the trained model and both controls; with `write`, save analysis/probing.json and
    .npz (`interp.results.write_result`). A biography-world run has its own probes
    (`interp.analysis.storage`).

    Arrays (in the .npz) are indexed [condition, site, direction, subset, layer] with the names
    in CONDITIONS, SITES, PROBE_DIRECTIONS, SUBSETS and layer 0..n_layers (0 = embeddings; the
    mlp_out row at layer 0 is NaN). `correct` adds a last axis over the people of the subset
    (`people` holds their ids): 1 / 0 for each person's held-out prediction right / wrong.
    """
    asked = options or ProbingOptions()
    # item draws differ per (world, seed) run: the folds and labels use the run's item seed
    opts = replace(asked, seed=run_seed(run.config, asked.seed))
    by_subset = check_people(run.dataset, opts)
    cfg, ds = run.config, run.dataset
    n_layers = cfg.model.n_layers
    device = next(run.model.parameters()).device
    randinit = build_bridge(cfg.model, ds.d_vocab, cfg.train.seed, str(device))
    randinit.eval()
    jobs = {
        "trained": (run.model, False),
        "randinit": (randinit, False),
        "randlabel": (run.model, True),
    }
    bar = tqdm(CONDITIONS, desc="probing", disable=not progress, dynamic_ncols=True)
    correct = np.stack(
        [probe_model(jobs[c][0], ds, by_subset, opts, control=jobs[c][1]) for c in bar]
    )  # [condition, site, direction, subset, layer, person]
    acc = correct.mean(-1)
    chance = chance_levels(by_subset)
    chance_prop = chance_levels(by_subset, proportional=True)
    person_ids = np.array([[p.id for p in by_subset[s]] for s in SUBSETS])
    n_people = person_ids.shape[1]

    data = {
        "options": asked.to_json(),  # as asked: the seed is an offset on the run's item seed
        "n_people_per_subset": n_people,
        "layers": "0 = embeddings (resid_pre of block 0); l + 1 = after block l "
        "(resid_post / mlp_out of block l)",
        "accuracy": _nested(acc, n_layers),
        "chance": {
            d: {s: float(chance[i, j]) for j, s in enumerate(SUBSETS)}
            for i, d in enumerate(PROBE_DIRECTIONS)
        },
        "chance_proportional": {
            d: {s: float(chance_prop[i, j]) for j, s in enumerate(SUBSETS)}
            for i, d in enumerate(PROBE_DIRECTIONS)
        },
        "best_layer": {
            site: {
                d: {s: int(np.nanargmax(acc[0, ti, di, si])) for si, s in enumerate(SUBSETS)}
                for di, d in enumerate(PROBE_DIRECTIONS)
            }
            for ti, site in enumerate(SITES)
        },
        "summary": summary_json(summarise(acc, chance), details(acc, chance)),
    }
    arrays = dict(
        accuracy=acc,
        correct=correct,
        chance=chance,
        chance_proportional=chance_prop,
        people=person_ids,
        conditions=np.array(CONDITIONS),
        sites=np.array(SITES),
        directions=np.array(PROBE_DIRECTIONS),
        subsets=np.array(SUBSETS),
    )
    result: Result[ProbingSummary] = Result(NAME, data, arrays, summary_type=ProbingSummary)
    if write:
        write_result(run.path, result)
    return result


def _nested(
    acc: Float[np.ndarray, "condition site direction subset layer"], n_layers: int
) -> dict[str, Any]:
    """Accuracies as {condition: {site: {direction: {subset: [per layer]}}}}.

    mlp_out starts at layer 1."""
    first = {site: 1 if site == "mlp_out" else 0 for site in SITES}
    return {
        c: {
            site: {
                d: {
                    s: [float(v) for v in acc[ci, ti, di, si, first[site] :]]
                    for si, s in enumerate(SUBSETS)
                }
                for di, d in enumerate(PROBE_DIRECTIONS)
            }
            for ti, site in enumerate(SITES)
        }
        for ci, c in enumerate(CONDITIONS)
    }


def summarise(
    acc: Float[np.ndarray, "condition site direction subset layer"],
    chance: Float[np.ndarray, "direction subset"],
) -> ProbingSummary:
    """The declared numbers: best-layer accuracy of each cross-entity probe per subset on the
    residual stream, trained and with random labels, and chance per probe (mean over subsets)."""
    site = SITES.index("resid")

    def best(condition: int) -> ByProbe:
        return ByProbe(
            **{
                d: BySubset(
                    **{
                        s: float(np.nanmax(acc[condition, site, di, si]))
                        for si, s in enumerate(SUBSETS)
                    }
                )
                for di, d in enumerate(PROBE_DIRECTIONS)
            }
        )

    return ProbingSummary(
        probe=best(CONDITIONS.index("trained")),
        control_randlabel=best(CONDITIONS.index("randlabel")),
        chance_a_to_b=float(chance[0].mean()),
        chance_b_to_a=float(chance[1].mean()),
    )


def details(
    acc: Float[np.ndarray, "condition site direction subset layer"],
    chance: Float[np.ndarray, "direction subset"],
) -> dict[str, float]:
    """The other sites' best-layer accuracies and every site's random-init control, the
    selectivities and chance per subset. Keys (resid; the mlp_out ones insert `mlp_`, e.g.
    `probe_mlp_a_to_b_n2d_best`, the prompt_final ones `prompt_`): probe_{dir}_{subset}_best,
    control_randinit_{dir}_{subset}_best, control_randlabel_{dir}_{subset}_best,
    selectivity_{dir}_{subset} (the real task's best-layer accuracy minus the control task's
    best-layer accuracy, each a maximum over layers), chance_{dir}_{subset}; resid's probe and
    control-task numbers are declared (`summarise`)."""
    out: dict[str, float] = {}
    for ti, site in enumerate(SITES):
        tag = SITE_TAG[site]
        for di, d in enumerate(PROBE_DIRECTIONS):
            for si, s in enumerate(SUBSETS):
                real, rinit, rlab = acc[0, ti, di, si], acc[1, ti, di, si], acc[2, ti, di, si]
                if site != "resid":
                    out[f"probe_{tag}{d}_{s}_best"] = float(np.nanmax(real))
                out[f"control_randinit_{tag}{d}_{s}_best"] = float(np.nanmax(rinit))
                if site != "resid":
                    out[f"control_randlabel_{tag}{d}_{s}_best"] = float(np.nanmax(rlab))
                out[f"selectivity_{tag}{d}_{s}"] = float(np.nanmax(real) - np.nanmax(rlab))
    for di, d in enumerate(PROBE_DIRECTIONS):
        for si, s in enumerate(SUBSETS):
            out[f"chance_{d}_{s}"] = float(chance[di, si])
    return out


def format_summary(result: Result) -> str:
    """A plain-text table of best-layer accuracies with their controls and chance."""
    sm = result["summary"]
    lines = [
        f"{'site':<12} {'probe':<22} {'subset':<6} {'trained':>8} {'rand-init':>9} "
        f"{'rand-label':>10} {'chance':>7} {'select.':>8}"
    ]
    for site, tag in SITE_TAG.items():
        for d in PROBE_DIRECTIONS:
            name = "A -> role (B's attr)" if d == "a_to_b" else "B -> first (A's attr)"
            for s in SUBSETS:
                lines.append(
                    f"{site:<12} {name:<22} {s:<6} {sm[f'probe_{tag}{d}_{s}_best']:>8.1%} "
                    f"{sm[f'control_randinit_{tag}{d}_{s}_best']:>9.1%} "
                    f"{sm[f'control_randlabel_{tag}{d}_{s}_best']:>10.1%} "
                    f"{sm[f'chance_{d}_{s}']:>7.1%} {sm[f'selectivity_{tag}{d}_{s}']:>+8.1%}"
                )
    lines.append(
        f"({result['n_people_per_subset']} people per subset, "
        f"{result['options']['folds']}-fold cross-validation over people; best layer)"
    )
    return "\n".join(lines)
