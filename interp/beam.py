"""Beam search over a causal model's continuations (the selective-prediction instrument's
candidate answers): `beams` candidates per prompt, best first, one beam equal to greedy decoding."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp.data.tokenizer import EOS

BATCH = 256  # prompts per forward pass (interp.evaluate.BATCH)


@dataclass(frozen=True)
class Candidate:
    """One beam: its tokens (up to, not including, <eos>), summed log-prob and scored length."""

    tokens: tuple[int, ...]
    logprob: float
    length: int  # generated tokens scored, <eos> included when the beam stopped early

    @property
    def normalized(self) -> float:
        """Length-normalised log-likelihood (mean log-prob per generated token)."""
        return self.logprob / max(1, self.length)


@torch.no_grad()
def beam_search(
    model: Callable[[Tensor], Tensor],
    prompts: list[tuple[int, ...]],
    n_new: list[int],
    beams: int,
    batch_size: int = BATCH,
    progress: bool = False,
) -> list[list[Candidate]]:
    """Beam search of `n_new[i]` tokens after each prompt: `beams` candidates each, best first.

    Beams are ranked by summed log-probability (all candidates of one question have the same
    number of steps). A beam that emits <eos> is finished: it continues with <eos> at no cost,
    the convention of `interp.evaluate.greedy_generate`, so one beam is greedy decoding. Prompts
    are grouped by (prompt length, n_new) so no padding enters a prompt.
    """
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (p, n) in enumerate(zip(prompts, n_new, strict=True)):
        groups[(len(p), n)].append(i)
    out: list[list[Candidate]] = [[] for _ in prompts]
    chunks = [
        (n, idxs[s : s + batch_size])
        for (_, n), idxs in sorted(groups.items())
        for s in range(0, len(idxs), batch_size)
    ]
    for n, chunk in tqdm(chunks, desc="beam search", disable=not progress):
        seqs = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)[:, None]
        b, p_len = seqs.shape[0], seqs.shape[2]
        score = torch.zeros(b, 1, device=device)
        done = torch.zeros(b, 1, dtype=torch.bool, device=device)
        length = torch.zeros(b, 1, dtype=torch.long, device=device)
        for _ in range(n):
            nb, t = seqs.shape[1], seqs.shape[2]
            logp = model(seqs.reshape(b * nb, t))[:, -1].log_softmax(-1).float()
            v = logp.shape[-1]
            logp = logp.reshape(b, nb, v)
            finished = torch.full_like(logp, -math.inf)
            finished[..., EOS] = 0.0
            logp = torch.where(done[..., None], finished, logp)
            total = (score[..., None] + logp).reshape(b, nb * v)  # (batch, beams x vocab)
            top, flat = total.topk(min(beams, nb * v), dim=-1)
            parent, tok = flat // v, flat % v
            kept = seqs.gather(1, parent[..., None].expand(-1, -1, t))
            seqs = torch.cat([kept, tok[..., None]], dim=2)
            length = length.gather(1, parent) + (~done.gather(1, parent)).long()
            done = done.gather(1, parent) | (tok == EOS)
            score = top
        gen = seqs[:, :, p_len:].tolist()
        for row, i in enumerate(chunk):
            for k in range(seqs.shape[1]):
                g = gen[row][k]
                g = g[: g.index(EOS)] if EOS in g else g
                out[i].append(Candidate(tuple(g), float(score[row, k]), int(length[row, k])))
    return out


# The identity bridge (interp.data.bridge): the shortcut, and what the condition trains
