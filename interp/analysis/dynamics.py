"""Training dynamics: behaviour, probes and the logit lens over a run's saved checkpoints.

Method. The instruments that read one trained model are run on every checkpoint of the run, so
the order of events can be seen (SCIENCE.md section 6): does B become linearly readable from A's
representation before, with or after the model starts answering "A is ?" correctly, and does A
ever become readable from B? This is the checkpoint-sweep design of studies of how circuits form
during training (e.g. Olsson et al. 2022 on induction heads; Nanda et al. 2023 on grokking),
here with the instruments of this kit:

- exact match (greedy decoding, the paper's rule) on every training-template prompt, per
  subset x direction (`interp.evaluate`);
- the entity-alone probes of `interp.analysis.probing` on the residual stream at every depth,
  both directions (A -> B's role, B -> A's first-name class), every subset, with the control
  task (a random label per token type) at every checkpoint; reported at the best depth and at
  the last depth;
- the logit lens of `interp.analysis.lens`: median rank of the answer's first token at the final
  prompt position (last layer: the model's own output) and at the in-prompt entity's last token
  (best depth), with the rank of a random other entity's answer as the control.

Step 0 is the run's own initialisation (`build_model` with `train.seed`, exactly the weights
training started from), so every curve starts at its random-init control. Every checkpoint goes
through the same code; nothing depends on which direction a person was trained in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.lens import POSITIONS, TARGETS, cell_stats, control_targets, score_prompts
from interp.analysis.options import SEED_MAX, Options, option
from interp.analysis.probing import (
    PROBE_DIRECTIONS,
    ByProbe,
    BySubset,
    ProbingOptions,
    chance_levels,
    check_people,
    probe_model,
)
from interp.data.dataset import DIRECTIONS, FactDataset
from interp.data.world import SUBSETS
from interp.errors import UserError
from interp.evaluate import exact_match as evaluate_exact_match
from interp.model import build_bridge
from interp.results import Result, Summary, number, section, summary_json, write_result
from interp.runs import Run, checkpoint_steps, load_run
from interp.stats import NONNEGATIVE, run_seed

NAME = "dynamics"


@dataclass(frozen=True)
class DynamicsSummary(Summary):
    """The training dynamics' headline numbers (`result.summary` of `run_analysis`): at the last
    checkpoint, reverse exact match and the cross-entity probes per subset. Per (subset,
    direction) numbers are details in `exact_match` and `lens_final_rank`, the probes' other
    moments and controls in `probe_cells`."""

    n_checkpoints: float | None = number("checkpoints measured (step 0 included)", NONNEGATIVE)
    last_step: float | None = number("the training step of the last checkpoint", NONNEGATIVE)
    em: BySubset = section(BySubset, "exact match of reverse questions", "_reverse_final")
    probe: ByProbe = section(
        ByProbe, "the probes' best layer at the last checkpoint", "_best_final"
    )

    def exact_match(self) -> dict[tuple[str, str], float]:
        """Exact match at the last checkpoint by (subset, direction)."""
        return self.cells("em_{subset}_{direction}_final", subset=SUBSETS, direction=DIRECTIONS)

    def lens_final_rank(self, control: bool = False) -> dict[tuple[str, str], float]:
        """Logit-lens median rank of the answer's first token at the final position, last
        layer and checkpoint, by (subset, direction); `control` for the random other entity."""
        pre = "control_random_entity_" if control else ""
        return self.cells(
            pre + "lens_final_rank_{subset}_{direction}_final",
            subset=SUBSETS,
            direction=DIRECTIONS,
        )

    def probe_cells(self, which: str = "best_final") -> dict[tuple[str, str], float]:
        """Probe accuracy by (direction, subset): `which` is best_final (last checkpoint),
        best_when_learned (where forward exact match first reached 50%), control_randinit (step
        0), control_randlabel (last checkpoint) or chance."""
        pattern = {
            "best_final": "probe_{direction}_{subset}_best_final",
            "best_when_learned": "probe_{direction}_{subset}_best_when_learned",
            "control_randinit": "control_randinit_{direction}_{subset}_best_step0",
            "control_randlabel": "control_randlabel_{direction}_{subset}_best_final",
            "chance": "chance_{direction}_{subset}",
        }[which]
        return self.cells(pattern, direction=PROBE_DIRECTIONS, subset=SUBSETS)


@dataclass(frozen=True)
class DynamicsOptions(Options):
    """What is measured at each checkpoint (each help line is also the CLI's --help)."""

    folds: int = option(5, "k of the probes' cross-validation over people", min=2)
    C: float = option(
        1.0, "inverse L2 strength of the logistic-regression probes", min=0, min_open=True
    )
    seed: int = option(
        0,
        "offset on the run's item seed (stats.run_seed) of the probe folds, the control-task "
        "control and the lens control",
        min=0,
        max=SEED_MAX,
    )
    templates: str = option(
        "train",
        "test-prompt templates for exact match and the lens",
        choices=("train", "heldout"),
    )


def steps_of(run: Run) -> list[int]:
    """Step 0 (the initialisation), every saved checkpoint, and the final weights."""
    steps = [0, *checkpoint_steps(run.path)]
    final = run.config.train.steps
    if final not in steps and (run.path / "model.safetensors").is_file():
        steps.append(final)
    return sorted(set(steps))


def model_at(run: Run, step: int) -> TransformerBridge:
    """The run's model at `step`: its initialisation for 0, else the checkpoint (or the final
    weights)."""
    device = str(next(run.model.parameters()).device)
    if step == 0:
        return build_bridge(
            run.config.model, run.dataset.d_vocab, run.config.train.seed, device
        ).eval()
    if step in checkpoint_steps(run.path):
        return load_run(run.path, checkpoint=step, device=device).model
    return load_run(run.path, device=device).model


@torch.no_grad()
def exact_match(
    model: TransformerBridge, dataset: FactDataset, templates: str
) -> Float[np.ndarray, "subset direction"]:
    """Greedy exact match on every prompt of `templates`, per subset x direction."""
    prompts = [e for e in dataset.prompts if e.templates == templates and e.subset in SUBSETS]
    hits = evaluate_exact_match(model, dataset, prompts)
    out = np.full((len(SUBSETS), len(DIRECTIONS)), np.nan)
    for i, s in enumerate(SUBSETS):
        for j, d in enumerate(DIRECTIONS):
            mask = np.array([e.subset == s and e.direction == d for e in prompts])
            if mask.any():
                out[i, j] = hits[mask].mean()
    return out


def entity_position_ranks(
    median_rank: Float[np.ndarray, "subset direction target position layer"], dataset: FactDataset
) -> Float[np.ndarray, "subset direction target layer"]:
    """Median rank at the last token of the entity each prompt holds (A for n2d-order prompts,
    B for d2n-order ones): the cell of `median_rank` that is not empty."""
    a, b = POSITIONS.index("a_last"), POSITIONS.index("b_last")
    return np.where(
        np.isnan(median_rank[:, :, :, a]), median_rank[:, :, :, b], median_rank[:, :, :, a]
    )


def run_analysis(
    run: Run,
    options: DynamicsOptions | None = None,
    *,
    write: bool = True,
    progress: bool = True,
) -> Result:
    """Exact match, probes and the logit lens at every checkpoint; with `write`, save
    analysis/dynamics.json and .npz. Arrays are indexed by checkpoint first (`steps`), then as in
    each instrument."""
    opts = options or DynamicsOptions()
    templates = opts.templates
    item_seed = run_seed(run.config, opts.seed)  # item draws differ per (world, seed) run
    popts = ProbingOptions(folds=opts.folds, C=opts.C, seed=item_seed)
    ds = run.dataset
    by_subset = check_people(ds, popts)
    steps = steps_of(run)
    if not checkpoint_steps(run.path):
        raise UserError(f"{run.path} has no checkpoints: train with train.checkpoint_every > 0")
    prompts = [e for e in ds.prompts if e.templates == templates and e.subset in SUBSETS]
    targets = np.stack(
        [np.array([e.answer[0] for e in prompts]), control_targets(prompts, item_seed)], axis=1
    )  # [prompt, target]

    em, probe, control, lens_final, lens_entity = [], [], [], [], []
    for step in tqdm(steps, desc="checkpoints", disable=not progress, dynamic_ncols=True):
        model = model_at(run, step)
        em.append(exact_match(model, ds, templates))
        probe.append(np.nanmean(probe_model(model, ds, by_subset, popts, sites=("resid",))[0], -1))
        control.append(
            np.nanmean(
                probe_model(model, ds, by_subset, popts, control=True, sites=("resid",))[0], -1
            )
        )
        ranks, logps = score_prompts(model, prompts, targets)
        stats, _ = cell_stats(ranks, logps, prompts)
        med = stats["median_rank"]  # [subset, direction, target, position, layer]
        lens_final.append(med[:, :, :, POSITIONS.index("final"), -1])
        lens_entity.append(entity_position_ranks(med, ds).min(-1))
        del model
    arrays: dict[str, Any] = {
        "steps": np.array(steps),
        "exact_match": np.array(em),  # [step, subset, direction]
        "probe": np.array(probe),  # [step, probe direction, subset, layer] (resid)
        "probe_control": np.array(
            control
        ),  # the control task (a random label per token type), same axes
        "lens_final_rank": np.array(lens_final),  # [step, subset, direction, target]
        "lens_entity_best_rank": np.array(lens_entity),  # [step, subset, direction, target]
    }
    chance = chance_levels(by_subset)
    data = {
        "options": opts.to_json(),
        "steps": steps,
        "axes": {
            "subset": list(SUBSETS),
            "direction": list(DIRECTIONS),
            "probe_direction": list(PROBE_DIRECTIONS),
            "target": list(TARGETS),
        },
        "n_people_per_subset": len(by_subset[SUBSETS[0]]),
        "d_vocab": ds.d_vocab,
        "chance_rank": (ds.d_vocab + 1) / 2,
        "chance": {
            d: {s: float(chance[i, j]) for j, s in enumerate(SUBSETS)}
            for i, d in enumerate(PROBE_DIRECTIONS)
        },
        "curves": curves(arrays),
        "milestones": milestones(arrays),
        "summary": summary_json(summarise(arrays), details(arrays, chance)),
    }
    result: Result[DynamicsSummary] = Result(NAME, data, arrays, summary_type=DynamicsSummary)
    if write:
        write_result(run.path, result)
    return result


def _list(x: np.ndarray) -> list[float]:
    return [float(v) for v in x]


def curves(a: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-step curves as nested dicts (the figure reads these)."""
    ans, ctl = TARGETS.index("answer"), TARGETS.index("random_entity")
    out: dict[str, Any] = {
        "exact_match": {},
        "probe_best": {},
        "probe_last_layer": {},
        "probe_control_best": {},
        "lens_final_rank": {},
        "lens_final_rank_control": {},
        "lens_entity_best_rank": {},
        "lens_entity_best_rank_control": {},
    }
    for i, s in enumerate(SUBSETS):
        for j, d in enumerate(DIRECTIONS):
            key = f"{s}_{d}"
            out["exact_match"][key] = _list(a["exact_match"][:, i, j])
            out["lens_final_rank"][key] = _list(a["lens_final_rank"][:, i, j, ans])
            out["lens_final_rank_control"][key] = _list(a["lens_final_rank"][:, i, j, ctl])
            out["lens_entity_best_rank"][key] = _list(a["lens_entity_best_rank"][:, i, j, ans])
            out["lens_entity_best_rank_control"][key] = _list(
                a["lens_entity_best_rank"][:, i, j, ctl]
            )
        for k, d in enumerate(PROBE_DIRECTIONS):
            key = f"{d}_{s}"
            out["probe_best"][key] = _list(a["probe"][:, k, i].max(-1))
            out["probe_last_layer"][key] = _list(a["probe"][:, k, i, -1])
            out["probe_control_best"][key] = _list(a["probe_control"][:, k, i].max(-1))
    return out


def milestones(a: dict[str, np.ndarray]) -> dict[str, int | None]:
    """First checkpoint step at which same-direction exact match reaches 50%, per subset (None if
    never): the moment a fact is learned, to read the probe curves against."""
    out: dict[str, int | None] = {}
    for i, s in enumerate(SUBSETS):
        hit = np.flatnonzero(a["exact_match"][:, i, DIRECTIONS.index("same")] >= 0.5)
        out[f"first_step_em_same_{s}_50"] = int(a["steps"][hit[0]]) if len(hit) else None
    return out


def summarise(a: dict[str, np.ndarray]) -> DynamicsSummary:
    """The declared numbers: at the last checkpoint, reverse exact match and the cross-entity
    probes' best-layer accuracy per subset."""
    reverse = DIRECTIONS.index("reverse")
    probes = {
        d: BySubset(**{s: float(a["probe"][-1, k, i].max()) for i, s in enumerate(SUBSETS)})
        for k, d in enumerate(PROBE_DIRECTIONS)
    }
    return DynamicsSummary(
        n_checkpoints=float(len(a["steps"])),
        last_step=float(a["steps"][-1]),
        em=BySubset(**{s: float(a["exact_match"][-1, i, reverse]) for i, s in enumerate(SUBSETS)}),
        probe=ByProbe(**probes),
    )


def details(
    a: dict[str, np.ndarray], chance: Float[np.ndarray, "direction subset"]
) -> dict[str, float]:
    """Numbers per (subset, direction) at the last checkpoint and at step 0 (the random-init
    control), and the probe accuracy at the checkpoint where same-direction exact match first
    reached 50%."""
    out: dict[str, float] = {}
    ans, ctl = TARGETS.index("answer"), TARGETS.index("random_entity")
    for i, s in enumerate(SUBSETS):
        for j, d in enumerate(DIRECTIONS):
            if d != "reverse":
                out[f"em_{s}_{d}_final"] = float(a["exact_match"][-1, i, j])
            out[f"lens_final_rank_{s}_{d}_final"] = float(a["lens_final_rank"][-1, i, j, ans])
            out[f"control_random_entity_lens_final_rank_{s}_{d}_final"] = float(
                a["lens_final_rank"][-1, i, j, ctl]
            )
        learned = np.flatnonzero(a["exact_match"][:, i, DIRECTIONS.index("same")] >= 0.5)
        for k, d in enumerate(PROBE_DIRECTIONS):
            best = a["probe"][:, k, i].max(-1)  # [step]
            out[f"control_randinit_{d}_{s}_best_step0"] = float(best[0])
            out[f"control_randlabel_{d}_{s}_best_final"] = float(a["probe_control"][-1, k, i].max())
            out[f"chance_{d}_{s}"] = float(chance[k, i])
            if len(learned):
                out[f"probe_{d}_{s}_best_when_learned"] = float(best[learned[0]])
    return out


def format_summary(result: Result) -> str:
    """Per checkpoint: same/reverse exact match and best-layer probe accuracy, per subset."""
    c = result["curves"]
    lines = [
        f"{'step':>6} {'subset':<6} {'EM same':>8} {'EM rev':>7} {'A->role':>8} "
        f"{'B->first':>9} {'ctl A->r':>9} {'ctl B->f':>9} {'rank fin':>9}"
    ]
    for t, step in enumerate(result["steps"]):
        for s in SUBSETS:
            lines.append(
                f"{step:>6} {s:<6} {c['exact_match'][f'{s}_same'][t]:>8.0%} "
                f"{c['exact_match'][f'{s}_reverse'][t]:>7.0%} "
                f"{c['probe_best'][f'a_to_b_{s}'][t]:>8.0%} "
                f"{c['probe_best'][f'b_to_a_{s}'][t]:>9.0%} "
                f"{c['probe_control_best'][f'a_to_b_{s}'][t]:>9.0%} "
                f"{c['probe_control_best'][f'b_to_a_{s}'][t]:>9.0%} "
                f"{c['lens_final_rank'][f'{s}_same'][t]:>9.1f}"
            )
    lines.append(
        f"(probes: best depth of the residual stream; chance A->role "
        f"{np.mean(list(result['chance']['a_to_b'].values())):.0%}, B->first "
        f"{np.mean(list(result['chance']['b_to_a'].values())):.0%}; rank fin = median "
        f"rank of the answer's first token, same direction, final position, last layer)"
    )
    return "\n".join(lines)
