"""The gradient-update test: does one step on "A is B" write B into A, and A into B?

Method. Berglund et al. (2023, "The Reversal Curse", section 4) explain the curse by the shape of
the gradient: next-token prediction on "A is B" asks for B's tokens given A, so an update can
change A's representation to carry B, but no term of the loss asks B's representation to
predict anything about A (SCIENCE.md section 5). This module takes that explanation literally on
a trained model. For each held-out `new` person i (never seen in training, written with known
tokens) it starts from the trained weights, takes k optimiser steps on i's "A is B" training
documents (every training template of the n2d order, one batch: one fact at a time), measures,
and restores the weights bitwise before the next fact. Measured, per fact:

1. Behaviour. Delta log p(B_i | forward prompt "A_i is the") and Delta log p(A_i | reverse prompt
   "the B_i is called"), summed over the answer tokens (`interp.evaluate.completion_logprobs`),
   averaged over the person's prompts of that direction (training and held-out templates).
   Control, on the same prompts: the mean Delta log p of every *other* new person's answer in the
   same frame (Delta log p(B_j | "A_i is the"), j != i; Delta log p(A_j | "the B_i is called")).
   A generic shift ("after 'is the' say any description", "after 'is called' say a name") moves
   the control as much as the correct answer; only a fact-specific change separates them. The
   test is paired over facts (t-test and Wilcoxon signed-rank) on correct vs control.
   A second control, the cue control, swaps the other side: Delta log p(A_i | "the B_j is
   called"), i's answer in every other new person's prompts. An update that makes A_i's tokens
   likelier everywhere (a unigram or within-name boost) raises it as much as the correct score;
   only an answer tied to its own cue beats it. The reversal question needs both controls.
   A confound the summed score carries: the update document contains A's own tokens in order,
   so it teaches the bigram "dira -> haweyu" inside A, which raises log p(A | reverse prompt)
   after its first token without any reversal knowledge. The first-token scores (log p of the
   answer's first token only: B's role word forward, A's first name in reverse; control = the
   mean over the distinct first tokens of other people's answers) are free of it, and are the
   cleaner reverse test.
   Spill-over: Delta log p of every other new person's own answer in their own prompts.
2. Where the update lands in activations. The residual stream at A's last token ("<bos> A" alone,
   and in the forward prompts) and at B's last token ("<bos> B" alone, and in the reverse
   prompts), at every depth (layer 0 = embeddings, `blocks.0.hook_resid_pre`; layer l+1 =
   `blocks.l.hook_resid_post`), before and after: the relative change |Delta h| / |h| and the
   projection of Delta h on the unembedding direction of the *other* entity's first token (at A:
   B's role word; at B: A's first name). The direction is the one the final LayerNorm reads,
   u_t = centre(gamma * W_U[:, t]) / norm (centring only for LN/LNPre, which subtract the mean),
   taken from the weights before the update, so Delta h . u_t is the linearised change of the
   logit-lens logit of t. Controls matched to the answer class: at A the other role words, at B
   the other first names (`matched_controls`); next to the projection, the answer token's actual
   logit change at that site (`dlogit`) against the same controls' logit changes.
3. Which parameters carry it. The update Delta theta split into groups (token and position
   embeddings; each block's attention, MLP and LayerNorms; the final LayerNorm; the unembedding):
   its norm per group (squares add up to the total), and the first-order attribution
   grad log p . Delta theta per group, which sums exactly to the total first-order change
   (`interp.analysis.alignment`). The "revert one group" / "only one group" tables are written
   only where the group-alone effects sum to within 20% of the full effect (the linear regime).
4. Alignment (influence): -grad L . grad log p per unit step, per group, against the same for
   every other new person's own prompts; full answer and first token; checked against the
   measured change (they agree within 10% at a small lr). The positive control: the same on the
   Both subset, learned in both orders (`both_*`), and with both orders' documents in the step
   (`both_all_*`).
5. Where the update is written: each MLP weight gradient split exactly into per-position terms
   by role (A, B, the position before B, template), with each role's share of the update and of
   its first-order effect, and the written values read on the vocabulary
   (`interp.analysis.decomposition`).

Conditions (`--condition`): the main one, "causal", is the same plain next-token SGD step on the
new fact's forward documents for every objective's trained weights, so objectives are compared
under one step; "objective" is the objective's own step (reverse training's batch holds the
reversed copy, so its reverse change is partly by construction; the masked objectives average
their loss over `n_mask_draws` masks seeded per fact and run); "b_only" puts the loss on B's
tokens only (predicting B from A, without A's own bigram).

Optimiser. Plain SGD by default: Delta theta = -lr * gradient is the update the hypothesis talks
about, and its group norms reflect gradient magnitudes. A fresh AdamW (`optimizer="adamw"`, the
training's betas, weight decay on matrices only as in training) is offered too, but its first
step moves every parameter with a non-zero gradient by about lr (m / sqrt(v) = sign(g)), so its
group norms count parameters rather than measure where the gradient points.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.alignment import (
    CONDITIONS,
    FactItems,
    alignment_rows,
    answer_gradients,
    flat_grad,
    group_dot,
    record_alignments,
    segments,
    step_docs,
    step_loss,
    subset_items,
)
from interp.analysis.decomposition import ROLES, mlp_terms, role_shares, token_rank
from interp.analysis.options import SEED_MAX, Options, option
from interp.analysis.own_step import own_step_arrays
from interp.analysis.params import (
    group_norms,
    load_params,
    parameter_groups,
    restored,
    snapshot,
    trainable,
)
from interp.analysis.update_measures import (  # the measurements, re-exported
    MEASURES,
    all_fact_logprobs,
    correct_logprobs,
    entity_directions,
    entity_sites,
    fact_logprobs,
    footprint,
    layout,
    site_activations,
    site_logits,
    unembed_directions,
)
from interp.analysis.update_measures import (
    Layout as Layout,
)
from interp.analysis.update_measures import (
    matched_controls as matched_controls,
)
from interp.analysis.update_summary import (
    CONTEXTS,
    ENTITIES,
    per_fact_scores,
    summarise,
)
from interp.analysis.update_summary import (
    UpdateSummary as UpdateSummary,
)
from interp.analysis.update_summary import (
    format_summary as format_summary,  # the instrument's formatter, re-exported
)
from interp.data.dataset import DIRECTIONS, Example, FactDataset
from interp.errors import UserError
from interp.model import raw_forward
from interp.objectives import OBJECTIVES
from interp.results import Result, write_result
from interp.runs import Run
from interp.stats import run_seed
from interp.train import make_optimizer

OPTIMIZERS = ("sgd", "adamw")
# Default learning rate per optimiser. SGD 0.01: on the tiny preset one step lowers the fact's
# loss by about a quarter; it is not in the linear regime (first order overestimates the forward
# change by ~1.3x, the group-alone effects add up to ~1.3x the full effect), so the step-size-free
# alignment and the attribution carry the decomposition; at lr 1e-4 first order agrees within 1%.
# AdamW 1e-3: the training's peak lr (default preset).
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}


NAME = "update"


@dataclass(frozen=True)
class UpdateOptions(Options):
    """How the update is taken and measured (each help line is also the CLI's --help)."""

    steps: int = option(1, "optimiser steps per fact, each on all its training documents", min=1)
    lr: float | None = option(
        None,
        "learning rate of the update (default: 0.01 for sgd, 1e-3 for adamw)",
        min=0,
        max=10,
        min_open=True,
    )
    optimizer: str = option(
        "sgd",
        "plain SGD (Delta theta = -lr * grad) or a fresh AdamW (training's betas)",
        choices=OPTIMIZERS,
    )
    weight_decay: float = option(0.0, "AdamW weight decay on matrices during the update", min=0)
    condition: str = option(
        "causal",
        "the step's loss: 'causal' (plain next-token on the forward documents, the same for "
        "every objective: the main condition), 'b_only' (loss on B's tokens only) or "
        "'objective' (the objective's own step)",
        choices=CONDITIONS,
    )
    objective: str = option(
        "run",
        "objective of --condition objective: 'run' (the run's own) or an objective's name",
    )
    n_mask_draws: int = option(
        16, "mask draws averaged per fact by a masked objective's own step", min=1
    )
    n_facts: int | None = option(
        None, "update on the first N new people only (default: all; controls use all)", min=1
    )
    n_both: int = option(
        16,
        "Both-subset people in the positive control (alignment of their forward step with "
        "their reverse log-prob; 0: skip)",
        min=0,
    )
    own: bool = option(
        True,
        "also each objective's own step read in its own mode, with the positive control on "
        "both orders (interp.analysis.own_step)",
    )
    seed: int = option(
        0,
        "offset on the run's item seed (stats.run_seed) of the mask draws",
        min=0,
        max=SEED_MAX,
    )

    def check(self) -> None:
        if self.objective != "run" and self.objective not in OBJECTIVES:
            raise UserError(
                f"--objective {self.objective!r} unknown: use 'run' or one of {sorted(OBJECTIVES)}"
            )

    def resolved(self) -> UpdateOptions:
        """The options with the learning rate filled in (what the result records)."""
        return self if self.lr is not None else replace(self, lr=DEFAULT_LR[self.optimizer])

    def validate(self, n_new: int) -> None:
        """The checks that need the run's world: enough new people."""
        if n_new < 2:
            raise UserError(
                f"the run's world has {n_new} new people; the update test needs at "
                "least 2 (a fact and a control): retrain with world.n_new_people >= 2"
            )
        if self.n_facts is not None and not 1 <= self.n_facts <= n_new:
            raise UserError(
                f"--n-facts must be in 1..{n_new} (the run's new people), got {self.n_facts}"
            )


# ---------------------------------------------------------------------------------------------
# The update.


def objective_name(opts: UpdateOptions, run: Run) -> str:
    """The objective whose loss the step uses under --condition objective."""
    return run.config.train.objective if opts.objective == "run" else opts.objective


def take_steps(
    model: TransformerBridge, docs: Sequence[Example], opts: UpdateOptions, run: Run
) -> tuple[float, float]:
    """Take `opts.steps` optimiser steps on `docs` (one batch); return (loss before, loss after).

    The loss is the condition's (`alignment.step_loss`: causal next-token by default, the same
    for every objective); the optimiser is fresh, so every fact starts from the same state. A
    masked objective's own step averages its loss over `n_mask_draws` masks seeded per fact.
    """
    params = list(trainable(model).values())
    lr = opts.resolved().lr
    assert lr is not None  # resolved() fills in DEFAULT_LR[optimizer]
    if opts.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr)
    else:
        cfg = dataclasses.replace(run.config.train, lr=lr, weight_decay=opts.weight_decay)
        opt = make_optimizer(model, cfg)
    net = raw_forward(model)  # same parameters and function, no hook dispatch
    person = docs[0].person

    def loss() -> Tensor:
        return step_loss(
            net,
            docs,
            opts.condition,
            objective_name(opts, run),
            run.dataset,
            opts.seed,
            person,
            opts.n_mask_draws,
        )

    model.train()
    losses = []
    for _ in range(opts.steps):
        value = loss()
        losses.append(value.item())
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        after = loss().item()
    return losses[0], after


# ---------------------------------------------------------------------------------------------
# The analysis.


def run_analysis(
    run: Run, options: UpdateOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """The gradient-update test on every (or the first `n_facts`) new person of `run`.

    With `write`, saves analysis/update.json (options, summary, tests, per-layer and per-group
    tables) and analysis/update.npz (every per-fact array; `summarise` rebuilds the JSON from
    them alone). The model's weights are restored bitwise after every fact. `lr=None` takes
    DEFAULT_LR[optimizer].
    """
    asked = (options or UpdateOptions()).resolved()
    # item draws (any masking) differ per (world, seed) run
    opts = replace(asked, seed=run_seed(run.config, asked.seed))
    ds, model = run.dataset, run.model
    opts.validate(sum(p.subset == "new" for p in ds.people))
    lay = layout(ds, opts.n_facts)
    model.eval()
    groups = parameter_groups(model)
    params = trainable(model)
    plist = list(params.values())
    seg = segments(params, groups)
    net = raw_forward(model)
    F, K, T, D = lay.n_facts, len(lay.pool), lay.n_templates, len(DIRECTIONS)
    G, n_depth, L = len(groups), model.cfg.n_layers + 1, model.cfg.n_layers
    R = len(ROLES)
    target_tok, control_tok, u = entity_directions(model, lay, ds)
    u_all = unembed_directions(model, torch.arange(model.cfg.d_vocab))  # [d_vocab, d_model]
    mlp_keys = [(f"blocks.{l}.mlp.in.weight", f"blocks.{l}.mlp.out.weight") for l in range(L)]
    offsets = param_offsets(params)
    objective = objective_name(opts, run)

    arrays: dict[str, np.ndarray] = {
        f"delta_{m}_{t}": np.zeros((F, D, T, K)) for m in MEASURES for t in ("full", "first")
    }
    arrays["logp0_correct"] = np.zeros((F, D, T))
    for key in ("dh_rel", "proj", "proj_control", "cos", "cos_control"):
        arrays[key] = np.zeros((F, len(CONTEXTS), len(ENTITIES), n_depth))
    for key in ("dlogit", "dlogit_control"):
        arrays[key] = np.zeros((F, len(CONTEXTS), len(ENTITIES)))
    arrays.update(
        group_norm=np.zeros((F, G)),
        total_norm=np.zeros(F),
        revert=np.zeros((F, G, D)),
        only=np.zeros((F, G, D)),
        full_correct=np.zeros((F, D)),
        loss_before=np.zeros(F),
        loss_after=np.zeros(F),
        **{
            f"align{m}{k}": np.zeros((F, D, G) if k in ("", "_control") else (F, D))
            for m in ("", "_first")
            for k in ("", "_control", "_cos", "_cos_control")
        },
        attribution=np.zeros((F, D, G)),
        role_norm_share=np.zeros((F, L, R)),
        role_effect=np.zeros((F, D, L, R)),
        role_effect_first=np.zeros((F, D, L, R)),
        written_cos=np.zeros((F, L, R, len(ENTITIES))),
        written_cos_control=np.zeros((F, L, R, len(ENTITIES))),
        written_rank=np.zeros((F, L, R, len(ENTITIES))),
        written=np.zeros((F, L, R, model.cfg.d_model)),
    )

    pool_items = [
        FactItems(p.id, lay.docs[k], {d: lay.prompts[(k, d)] for d in DIRECTIONS})
        for k, p in enumerate(lay.pool)
    ]
    answer_grads = answer_gradients(net, plist, pool_items)  # [K, D, P]
    first_grads = answer_gradients(net, plist, pool_items, first=True)
    before_tables = all_fact_logprobs(model, lay)
    for k in tqdm(range(F), desc="update test", disable=not progress, dynamic_ncols=True):
        sites = entity_sites(ds, lay, k)
        h0, logits0 = site_activations(model, sites), site_logits(model, sites)
        lp0 = before_tables(k)
        base = correct_logprobs(model, lay, k)
        arrays["logp0_correct"][k] = lp0["row_full"][..., k]
        person = lay.pool[k].id

        def loss_of(k: int = k, person: int = person) -> Tensor:
            return step_loss(
                net, lay.docs[k], opts.condition, objective, ds, opts.seed, person,
                opts.n_mask_draws,
            )  # fmt: skip

        # Alignment: the first-order change per unit SGD step, -grad L . grad f, per group.
        step = -flat_grad(loss_of(), plist)
        for m, grads in (("", answer_grads), ("_first", first_grads)):
            rows = alignment_rows(step, grads, k, seg, G)
            arrays[f"align{m}"][k] = rows["align"].numpy()
            arrays[f"align{m}_control"][k] = rows["align_control"].numpy()
            arrays[f"align{m}_cos"][k] = rows["cos"].numpy()
            arrays[f"align{m}_cos_control"][k] = rows["cos_control"].numpy()
        # Where the step is written: the MLP weight gradients split by position role.
        batch = step_docs(lay.docs[k], opts.condition, objective, ds)
        terms = mlp_terms(net, batch, loss_of, max(len(d.tokens) for d in batch))
        per_dir = {
            f"{d}{m}": [tuple(g[k, di, slice(*offsets[n])].view_as(params[n]) for n in pair)
                        for pair in mlp_keys]
            for m, g in (("", answer_grads), ("_first", first_grads))
            for di, d in enumerate(DIRECTIONS)
        }  # fmt: skip
        shares = role_shares(terms, per_dir)  # type: ignore[arg-type]
        arrays["role_norm_share"][k] = shares["norm_share"].numpy()
        for di, d in enumerate(DIRECTIONS):
            arrays["role_effect"][k, di] = shares[d].numpy()
            arrays["role_effect_first"][k, di] = shares[f"{d}_first"].numpy()
        for e in range(len(ENTITIES)):
            w = terms.written.float()  # [layer, role, d_model]
            wn = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            tc = wn @ u[k, e]  # [layer, role]
            cc = wn @ u_all[control_tok[k][e]].T  # [layer, role, n_control]
            arrays["written_cos"][k, :, :, e] = tc.numpy()
            arrays["written_cos_control"][k, :, :, e] = cc.mean(-1).numpy()
            rank = token_rank(w, u_all, int(target_tok[k, e]))
            arrays["written_rank"][k, :, :, e] = rank.numpy()
        arrays["written"][k] = terms.written.numpy()

        with restored(model) as before:
            arrays["loss_before"][k], arrays["loss_after"][k] = take_steps(
                model, lay.docs[k], opts, run
            )
            after = snapshot(model)
            arrays["group_norm"][k] = group_norms(before, after, groups)
            arrays["total_norm"][k] = group_norms(before, after, {"all": list(after)})[0]
            delta = torch.cat([(after[n] - before[n]).reshape(-1) for n in params])
            arrays["attribution"][k] = group_dot(answer_grads[k], delta, seg, G).numpy()
            for key, v in fact_logprobs(model, lay, k).items():
                arrays[f"delta_{key}"][k] = v - lp0[key]
            arrays["full_correct"][k] = correct_logprobs(model, lay, k) - base
            h1, logits1 = site_activations(model, sites), site_logits(model, sites)
            for c, ctx in enumerate(CONTEXTS):
                for e, ent in enumerate(ENTITIES):
                    uc = u_all[control_tok[k][e]]
                    fp = footprint(h0[(ctx, ent)], h1[(ctx, ent)], u[k, e], uc)
                    for key, v in fp.items():
                        arrays[key][k, c, e] = v
                    dl = (logits1[(ctx, ent)] - logits0[(ctx, ent)]).double()  # [site, d_vocab]
                    arrays["dlogit"][k, c, e] = float(dl[:, int(target_tok[k, e])].mean())
                    arrays["dlogit_control"][k, c, e] = float(dl[:, control_tok[k][e]].mean())
            for g, keys in enumerate(groups.values()):
                load_params(model, {key: before[key] for key in keys})  # revert g alone
                arrays["revert"][k, g] = correct_logprobs(model, lay, k) - base
                load_params(model, before)
                load_params(model, {key: after[key] for key in keys})  # apply g alone
                arrays["only"][k, g] = correct_logprobs(model, lay, k) - base
                load_params(model, after)

    if opts.n_both:
        arrays.update(both_control(net, plist, seg, G, ds, opts, objective))
    if opts.own:  # each objective's own step, read in its own mode (Shin et al.'s prediction)
        arrays.update(own_step_arrays(
            net, plist, seg, G, ds, pool_items, F, run.config.train.objective, opts.seed,
            opts.n_mask_draws,
        ))  # fmt: skip
    arrays.update(
        facts=np.array([p.id for p in lay.pool[:F]]),
        pool=np.array([p.id for p in lay.pool]),
        directions=np.array(DIRECTIONS),
        contexts=np.array(CONTEXTS),
        entities=np.array(ENTITIES),
        roles=np.array(ROLES),
        layers=np.array(layer_labels(model.cfg.n_layers)),
        templates=np.array([e.templates for e in lay.prompts[(0, "same")]]),
        groups=np.array(list(groups)),
        first_tokens=np.array([[lay.first_token(k, d) for d in DIRECTIONS] for k in range(K)]),
        target_tokens=target_tok.numpy(),
        lr=np.array(asked.lr),
    )
    for tokens in ("full", "first"):  # per-fact scores (all templates), for the figure
        scores = per_fact_scores(arrays, tokens)
        for kind in ("correct", "control", "cue_control"):
            arrays[f"score_{tokens}_{kind}"] = np.stack([scores[d][kind] for d in DIRECTIONS], 1)
    result: Result[UpdateSummary] = Result(
        NAME, summarise(arrays, asked.to_json()), arrays, summary_type=UpdateSummary
    )
    if write:
        write_result(run.path, result)
    return result


def param_offsets(params: dict[str, torch.nn.Parameter]) -> dict[str, tuple[int, int]]:
    """[start, end) of each parameter in the flattened parameter vector (in `params` order)."""
    out, start = {}, 0
    for name, p in params.items():
        out[name] = (start, start + p.numel())
        start += p.numel()
    return out


def both_control(
    net: torch.nn.Module,
    plist: list[torch.nn.Parameter],
    seg: Tensor,
    n_groups: int,
    ds: FactDataset,
    opts: UpdateOptions,
    objective: str,
) -> dict[str, np.ndarray]:
    """The positive control: the same alignment on people of the Both subset, whose facts the
    model learned in both orders. `both_*`: the step on their forward documents only (does the
    forward step raise log p(A | B...) where the reverse is known?); `both_all_*`: the step on
    all their documents, both orders, where the reverse term is in the loss, so the instrument
    must report a clearly positive reverse alignment. Controls: the other Both people."""
    items = subset_items(ds, "both")[: opts.n_both]
    if len(items) < 2:
        return {}
    grads = {"": answer_gradients(net, plist, items)}
    grads["_first"] = answer_gradients(net, plist, items, first=True)
    every = {it.person: it for it in subset_items(ds, "both", ("n2d", "d2n"))}
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for k, it in enumerate(items):
        for tag, docs in (("both", it.docs), ("both_all", every[it.person].docs)):
            loss = step_loss(
                net, docs, opts.condition, objective, ds, opts.seed, it.person, opts.n_mask_draws
            )
            step = -flat_grad(loss, plist)
            record_alignments(out, tag, step, grads, k, seg, n_groups)
    return {k: np.stack(v) for k, v in out.items()}  # each [person, direction]


def layer_labels(n_layers: int) -> list[str]:
    """Depth labels: 'embed' (blocks.0.hook_resid_pre), then 'L{l}' (blocks.l.hook_resid_post)."""
    return ["embed", *[f"L{l}" for l in range(n_layers)]]
