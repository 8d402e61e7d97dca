"""The gradient-update test across objectives: each objective's own step, read in its own mode.

Shin et al. (arXiv 2602.02133) predict that in a masked-diffusion model (MLM-U) one step on the
forward loss of a fact lowers its reverse loss, because the same weights serve every
factorisation, while under next-token training it does not. The update test's main condition
(`interp.analysis.update`) takes the same causal step for every objective and reads causal
log-probabilities, which is the right comparison for causal models and meaningless for a model
that was never asked causally. Here each objective takes *its own* step on a new fact's "A is B"
documents (`alignment.step_loss` under the "objective" condition: a masked objective averages
its loss over `n_mask_draws` masks seeded per fact) and the change is read *in its own mode*
(`interp.objectives.base.Mode`: causal log-probabilities for next-token training, the chain rule
left to right over the masked answer for MLM-U, bidirectional for BICO):

    own alignment = -grad L_own(fact i's documents) . grad log p_mode(answer | prompt)

per unit step, forward (B given "A is the") and reverse (A given "the B is called"), full answer
and first token, each against its control: the mean over every other new person j of the same
step's alignment with j's own prompts and answers (a step that raises every fact of a frame
alike moves the control as much). Tags in the result's arrays: `own_*`.

The positive control on the same new people (`pair_*`): the objective's own step on both
orders' documents ("A is B" and "B is A", rendered from the world's templates), where the
reverse term is in the loss, so the reverse alignment must come out clearly above its control
and comparable to the forward one; without that, a null reverse own-step alignment would say
nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from interp.analysis.alignment import (
    FactItems,
    flat_grad,
    record_alignments,
    step_loss,
)
from interp.data.dataset import DIRECTIONS, Example, FactDataset, documents
from interp.data.tokenizer import MASK
from interp.data.world import World
from interp.modes import prompt_suffixes
from interp.objectives import get_objective
from interp.objectives.base import Mode
from interp.objectives.masking import bidirectional, keyed_forward


def mode_answer_logprob(
    net: torch.nn.Module,
    prompts: Sequence[Example],
    mode: Mode,
    suffixes: Sequence[tuple[int, ...]],
    first: bool = False,
) -> Tensor:
    """Mean over `prompts` of log p(answer | prompt) in `mode`, differentiable: summed over the
    answer's tokens (token j given the prompt and the answer's first j tokens; in a masked mode
    the rest of the answer masked, then the suffix), or its first token only (`first`). Under
    causal decoding, one teacher-forced pass per prompt."""
    device = next(net.parameters()).device
    total = []
    for e, suffix in zip(prompts, suffixes, strict=True):
        p, answer = len(e.prompt), e.answer
        n = 1 if first else len(answer)
        if mode.is_causal:
            toks = torch.tensor([e.tokens], device=device)
            logp = net(toks)[0, p - 1 : p - 1 + n].log_softmax(-1)
            total.append(logp.gather(1, torch.tensor(answer[:n], device=device)[:, None]).sum())
            continue
        parts = []
        for j in range(n):
            if mode.answer_masked:
                seq = (*e.prompt, *answer[:j], *[MASK] * (len(answer) - j), *suffix)
                at = p + j - mode.shift
            else:
                seq, at = (*e.prompt, *answer[:j]), p + j - 1
            toks = torch.tensor([seq], device=device)
            with bidirectional(net):
                logits = net(toks) if mode.masks_attended else keyed_forward(
                    net, toks, (toks != MASK).long()
                )  # fmt: skip
            parts.append(logits[0, at].log_softmax(-1)[answer[j]])
        total.append(torch.stack(parts).sum())
    return torch.stack(total).mean()


def mode_answer_gradients(
    net: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    items: Sequence[FactItems],
    mode: Mode,
    dataset: FactDataset,
    first: bool = False,
) -> Tensor:
    """grad log p_mode(answer | prompt) of every person's prompts, both directions:
    [person, direction, n_params], float64."""
    out = []
    for it in items:
        rows = []
        for d in DIRECTIONS:
            prompts = it.prompts[d]
            lp = mode_answer_logprob(net, prompts, mode, prompt_suffixes(dataset, prompts), first)
            rows.append(flat_grad(lp, params))
        out.append(torch.stack(rows))
    return torch.stack(out).double()


def both_orders(dataset: FactDataset, docs: Sequence[Example]) -> list[Example]:
    """A new person's "A is B" documents plus their "B is A" ones, rendered from the world's
    training templates (the positive control's batch)."""
    world = dataset.world
    if not isinstance(world, World) or not docs:
        return list(docs)
    person = next(p for p in dataset.people if p.id == docs[0].person)
    reverse = [
        d for d in documents(world, dataset.tokenizer, [replace(person, subset="both")])
        if d.order == "d2n"
    ]  # fmt: skip
    return [*docs, *reverse]


def own_step_arrays(
    net: torch.nn.Module,
    params: list[torch.nn.Parameter],
    seg: Tensor,
    n_groups: int,
    dataset: FactDataset,
    items: Sequence[FactItems],
    n_facts: int,
    objective: str,
    seed: int,
    n_draws: int,
) -> dict[str, np.ndarray]:
    """The own-step alignment (`own_*`) and its positive control (`pair_*`) for the first
    `n_facts` of `items` (the new people; every item serves as a control), each array
    [fact, direction] (full answer; `_first`: its first token), with cosines."""
    mode = get_objective(objective).mode
    grads = {
        "": mode_answer_gradients(net, params, items, mode, dataset),
        "_first": mode_answer_gradients(net, params, items, mode, dataset, first=True),
    }
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for k, it in enumerate(items[:n_facts]):
        for tag, docs in (("own", it.docs), ("pair", both_orders(dataset, it.docs))):
            loss = step_loss(net, docs, "objective", objective, dataset, seed, it.person, n_draws)
            step = -flat_grad(loss, params)
            record_alignments(out, tag, step, grads, k, seg, n_groups)
    return {k: np.stack(v) for k, v in out.items()}
