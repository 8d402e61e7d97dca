"""Step-size-free alignment (influence) and first-order attribution for the gradient-update test.

Method. A step Delta theta on the training loss L of "A is B" changes any log-probability f by
grad f . Delta theta to first order. For plain SGD, Delta theta = -lr * grad L, so the change
per unit step is the *alignment* -grad L . grad f: an influence score in the sense of Koh & Liang
(2017) and Grosse et al. (2023, who report influence near zero when the order of the key phrases
is flipped). It needs no learning rate, and it splits exactly over parameter groups (a dot
product is a sum over coordinates). Per new fact i:
- f = log p(B_i | A_i's forward prompts) and log p(A_i | B_i's reverse prompts) (summed over the
  answer's tokens, averaged over the person's prompts of that direction: the quantity the
  update test measures as `full_correct`), and the same for every other pool person j (their
  own prompts and answers): the control is the mean over j != i, which catches a step that
  raises every fact of the frame alike;
- the inner product per parameter group (each block's attention, MLP, LayerNorms, embeddings,
  unembedding) and its cosine.
The hypothesis (SCIENCE.md section 5) predicts a large positive forward alignment and a reverse
alignment no higher than its control under the causal step.

Attribution. For the update actually taken (any optimiser, any number of steps),
grad f . Delta theta per group sums exactly to the total first-order change, which is compared
with the measured change; the "revert one group" / "only one group" tables are kept only where
their sum is within 20% of the full effect (the linear regime), else reported as dropped.

Conditions (what the step's loss is), `CONDITIONS`:
- "causal": plain next-token SGD on the fact's forward documents, the same for every objective's
  trained weights (the main condition: the same step, so objectives are compared on equal terms);
- "b_only": the same documents, the loss only on B's tokens (predicting B from A and its own
  prefix): the term the hypothesis is about, without A's own bigram;
- "objective": the run's own objective's step (reverse training adds the reversed copies; the
  masked objectives average their loss over `n_mask_draws` mask draws seeded per fact and run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.dataset import DIRECTIONS, Example, FactDataset, pad_batch
from interp.objectives import get_objective
from interp.objectives.base import next_token_loss
from interp.objectives.masking import MaskedObjective

CONDITIONS = ("causal", "b_only", "objective")


@dataclass(frozen=True)
class FactItems:
    """One person's fact: the documents a step trains on and the prompts it is judged by."""

    person: int
    docs: list[Example]  # the training documents of the step (forward "A is B" order)
    prompts: dict[str, list[Example]]  # direction ("same" / "reverse") -> prompts with answers


def subset_items(
    dataset: FactDataset, subset: str, orders: tuple[str, ...] = ("n2d",)
) -> list[FactItems]:
    """The people of `subset` ("new", or a trained subset such as "both") as FactItems, with
    their documents of the given text orders (("n2d",): "A is B" only; ("n2d", "d2n"): every
    document of a Both person) and their test prompts of both directions."""
    docs_src = dataset.new_docs if subset == "new" else dataset.train_docs
    prompts_src = dataset.new_prompts if subset == "new" else dataset.prompts
    people = [p.id for p in dataset.people if p.subset == subset]
    docs: dict[int, list[Example]] = {p: [] for p in people}
    prompts: dict[int, dict[str, list[Example]]] = {p: {d: [] for d in DIRECTIONS} for p in people}
    for e in docs_src:
        if e.person in docs and e.order in orders:
            docs[e.person].append(e)
    for e in prompts_src:
        if e.person in prompts:
            prompts[e.person][e.direction].append(e)
    for p in people:
        for es in prompts[p].values():
            es.sort(key=lambda e: (e.templates != "train", e.template))
    return [FactItems(p, docs[p], prompts[p]) for p in people if docs[p]]


# ---------------------------------------------------------------------------------------------
# Losses.


def fact_generator(seed: int, person: int, draw: int) -> torch.Generator:
    """The generator of mask draw `draw` for `person`'s step, seeded per (run, fact, draw)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + person * 7_919 + draw * 104_729 + 17)


def b_only_loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    docs: Sequence[Example],
) -> Tensor:
    """Mean cross-entropy of B's tokens only (position t predicts token t+1 inside B's span)."""
    target_pos = torch.arange(1, tokens.shape[1], device=tokens.device)  # [pos-1]
    starts = torch.tensor([d.b_span[0] for d in docs], device=tokens.device)
    ends = torch.tensor([d.b_span[1] for d in docs], device=tokens.device)
    inside = (target_pos[None] >= starts[:, None]) & (target_pos[None] < ends[:, None])
    targets = tokens[:, 1:].masked_fill(~inside, -100)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )


def step_docs(
    docs: Sequence[Example], condition: str, objective: str, dataset: FactDataset
) -> list[Example]:
    """The batch the step trains on: the fact's documents, plus what the objective adds (reversed
    copies) under the "objective" condition."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition {condition!r}: use one of {CONDITIONS}")
    if condition == "objective":
        return get_objective(objective).documents(list(docs), dataset)
    return list(docs)


def step_loss(
    net: torch.nn.Module,
    docs: Sequence[Example],
    condition: str,
    objective: str,
    dataset: FactDataset,
    seed: int,
    person: int,
    n_draws: int,
) -> Tensor:
    """The loss whose gradient the update follows, under `condition` (see the module doc)."""
    device = next(net.parameters()).device
    obj = get_objective(objective)
    docs = step_docs(docs, condition, objective, dataset)
    tokens, lengths = pad_batch([d.tokens for d in docs], device=device)
    if condition == "causal":
        return next_token_loss(net(tokens), tokens, lengths)
    if condition == "b_only":
        return b_only_loss(net(tokens), tokens, docs)
    draws = n_draws if isinstance(obj, MaskedObjective) else 1
    losses = [obj.loss(net, tokens, lengths, fact_generator(seed, person, d)) for d in range(draws)]
    return torch.stack(losses).mean()


def answer_logprob(net: torch.nn.Module, prompts: Sequence[Example], first: bool = False) -> Tensor:
    """Mean over `prompts` of log p(answer | prompt), summed over the answer's tokens (the
    quantity `interp.evaluate.completion_logprobs` measures), differentiable. `first`: the
    answer's first token only (free of the within-entity bigram the documents teach)."""
    device = next(net.parameters()).device
    tokens, lengths = pad_batch([e.tokens for e in prompts], device=device)
    logp = net(tokens).log_softmax(-1)[:, :-1]  # position t predicts token t+1
    target_pos = torch.arange(1, tokens.shape[1], device=device)
    starts = torch.tensor([e.prompt_len for e in prompts], device=device)
    answer = (target_pos[None] >= starts[:, None]) & (target_pos[None] < lengths[:, None])
    if first:
        answer &= target_pos[None] == starts[:, None]
    picked = logp.gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, pos-1]
    return (picked * answer).sum(1).mean()


# ---------------------------------------------------------------------------------------------
# Flat gradients and per-group dot products.


def flat_grad(scalar: Tensor, params: Sequence[torch.nn.Parameter]) -> Float[Tensor, " n_params"]:
    """d scalar / d params, flattened in `params` order (zeros where a parameter is unused)."""
    grads = torch.autograd.grad(scalar, list(params), allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).detach()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def segments(
    params: dict[str, torch.nn.Parameter], groups: dict[str, list[str]]
) -> Int[Tensor, " n_params"]:
    """Group index of every coordinate of the flattened parameters (in `params` order)."""
    index = {k: g for g, keys in enumerate(groups.values()) for k in keys}
    return torch.cat(
        [torch.full((p.numel(),), index[k], dtype=torch.long) for k, p in params.items()]
    )


def group_dot(
    x: Float[Tensor, "*a n_params"], y: Float[Tensor, " n_params"], seg: Tensor, n_groups: int
) -> Float[Tensor, "*a group"]:
    """x . y restricted to each group (float64): the groups sum exactly to the full dot.

    One matrix-vector product per contiguous run of a group's coordinates (a parameter tensor
    or several), not an elementwise product of the whole batch: the update test's hot loop."""
    x, y = x.double(), y.double()
    change = torch.nonzero(seg[1:] != seg[:-1]).flatten() + 1
    bounds = [0, *change.tolist(), len(seg)]
    out = torch.zeros(*x.shape[:-1], n_groups, dtype=torch.float64)
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        out[..., int(seg[start])] += x[..., start:end] @ y[start:end]
    return out


def answer_gradients(
    net: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    items: Sequence[FactItems],
    first: bool = False,
) -> Float[Tensor, "person direction n_params"]:
    """grad log p(answer | prompt) of every person's prompts, both directions (one backward each;
    the model is the same for every fact, so these are computed once and reused; float64)."""
    return torch.stack(
        [
            torch.stack(
                [flat_grad(answer_logprob(net, it.prompts[d], first), params) for d in DIRECTIONS]
            )
            for it in items
        ]
    ).double()


def alignment_rows(
    step: Float[Tensor, " n_params"],
    answer_grads: Float[Tensor, "person direction n_params"],
    k: int,
    seg: Tensor,
    n_groups: int,
) -> dict[str, Float[Tensor, "..."]]:
    """Alignment of one step direction (per unit step, e.g. -grad L) with person k's answer
    gradients and, as the control, the mean over every other person j's.

    Returns per direction and group: `align` (step . grad f_k), `align_control` (mean over j != k
    of step . grad f_j), `cos` / `cos_control` (of the whole vectors), and per group norms."""
    dots = group_dot(answer_grads, step, seg, n_groups)  # [person, direction, group]
    others = [j for j in range(answer_grads.shape[0]) if j != k]
    sn = step.double().norm()
    gn = answer_grads.double().norm(dim=-1)  # [person, direction]
    cos = dots.sum(-1) / (sn * gn).clamp_min(1e-300)
    return {
        "align": dots[k],
        "align_control": dots[others].mean(0),
        "cos": cos[k],
        "cos_control": cos[others].mean(0),
    }


def record_alignments(
    out: dict[str, list[np.ndarray]],
    tag: str,
    step: Tensor,
    grads: dict[str, Tensor],
    k: int,
    seg: Tensor,
    n_groups: int,
) -> None:
    """Append `step`'s alignment rows with each of `grads` (key: "" full answer, "_first" its
    first token) for fact `k` to `out` under `<tag><key>_align`, `_align_control`, `_cos` and
    `_cos_control` (summed over parameter groups where per group): the one bookkeeping of the
    update test's conditions (both control, own step, pair control)."""
    for m, g in grads.items():
        rows = alignment_rows(step, g, k, seg, n_groups)
        out[f"{tag}{m}_align"].append(rows["align"].sum(-1).numpy())
        out[f"{tag}{m}_align_control"].append(rows["align_control"].sum(-1).numpy())
        out[f"{tag}{m}_cos"].append(rows["cos"].numpy())
        out[f"{tag}{m}_cos_control"].append(rows["cos_control"].numpy())
