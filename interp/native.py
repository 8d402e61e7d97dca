"""Native-mode evaluation of the masking objectives (BICO, MLM-U): the question asked the way
the objective was trained, beside the causal decoding every objective is tested with.

Kitouni et al. (2024, arXiv 2406.05183) query an MLM-U model in its own mode: the question with
the answer's tokens masked, attention bidirectional, every masked token read at once. The kit's
default test (`interp.evaluate`) decodes left to right under the causal mask, so for BICO and
MLM-U it measures transfer from the masked objective to causal generation, not the objective
itself. This module measures the objective: for each prompt the input is

    prompt + <mask> x len(answer) + suffix

(`suffix` is the rest of the prompt's own template and <eos>, e.g. " . <eos>", so the masked
answer sits in a whole sentence, as a masked entity of a training document does), attention
is bidirectional with no padding attended, and the answer is the argmax at the positions the
masking objectives train: masked token t is read from the logits at position t - 1 (see
`interp.objectives.masking`). All masked tokens are read in one pass (one-shot parallel
decoding, the simplest reading of "answer masked"; iterative unmasking could only add
information). The answer's length is given by the number of masks, as in Kitouni et al.'s
retrieval queries: this is a property of the mode, stated beside its numbers.

Exact match is token-exact: every masked position's argmax equals the answer's token.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp.data.dataset import DIRECTIONS, TEMPLATE_KINDS, Example, FactDataset
from interp.data.tokenizer import EOS, MASK, encode
from interp.data.world import SUBSETS, World
from interp.objectives.masking import bidirectional

BATCH = 256


def document_suffix(dataset: FactDataset) -> tuple[int, ...]:
    """The most common tail of the training documents after their last entity (". <eos>" on the
    synthetic world; just <eos> where documents end with an entity)."""
    tails: Counter[tuple[int, ...]] = Counter()
    for d in dataset.train_docs:
        end = max(d.a_span[1], d.b_span[1])
        if end > 0:
            tails[tuple(d.tokens[end:])] += 1
    return tails.most_common(1)[0][0] if tails else (EOS,)


def prompt_suffixes(dataset: FactDataset, prompts: list[Example]) -> list[tuple[int, ...]]:
    """What follows each prompt's answer in its full text, <eos> included: on the synthetic
    world the rest of the prompt's own template (" ." for "the <B> is called <A> .", "now enjoys
    a quiet life ." for "... , <A> now enjoys a quiet life ."), so the masked answer sits in the
    sentence it belongs to; elsewhere the documents' most common tail (`document_suffix`)."""
    world = dataset.world
    if not isinstance(world, World):  # the paper's data, or a world without A-is-B templates
        return [document_suffix(dataset)] * len(prompts)
    out = []
    for e in prompts:
        words = world.templates(e.order, e.templates)[e.template].split()
        second = max(i for i, w in enumerate(words) if w in ("<A>", "<B>"))
        tail = " ".join(words[second + 1 :])
        out.append((*(encode(dataset.tokenizer, tail) if tail else ()), EOS))
    return out


@torch.no_grad()
def native_predict(
    model: torch.nn.Module,
    prompts: list[Example],
    suffixes: list[tuple[int, ...]] | None = None,
    batch_size: int = BATCH,
) -> list[tuple[int, ...]]:
    """For each prompt, the argmax token at each of its masked answer positions (one pass,
    bidirectional attention); `suffixes[i]` follows prompt i's masks (default: <eos>).
    Inputs are grouped by total length so no padding is needed."""
    device = next(model.parameters()).device
    tails = suffixes if suffixes is not None else [(EOS,)] * len(prompts)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(prompts):
        groups[len(e.prompt) + len(e.answer) + len(tails[i])].append(i)
    out: list[tuple[int, ...]] = [() for _ in prompts]
    for _, idxs in sorted(groups.items()):
        for s in range(0, len(idxs), batch_size):
            chunk = idxs[s : s + batch_size]
            seqs = [
                tuple(prompts[i].prompt) + (MASK,) * len(prompts[i].answer) + tuple(tails[i])
                for i in chunk
            ]
            toks: Int[Tensor, "batch pos"] = torch.tensor(seqs, dtype=torch.long, device=device)
            with bidirectional(model):
                logits = model(toks)  # [batch, pos, d_vocab]
            pred = logits.argmax(-1).tolist()
            for row, i in enumerate(chunk):
                p, n = len(prompts[i].prompt), len(prompts[i].answer)
                out[i] = tuple(pred[row][p - 1 : p + n - 1])  # masked token t read at t - 1
    return out


def native_exact_match(
    model: torch.nn.Module, dataset: FactDataset
) -> tuple[dict[str, Any], np.ndarray]:
    """Native-mode exact match per subset x direction x template kind (the shape of
    `evaluate`'s `exact_match`), with the counts and the suffix used; and the per-prompt hits
    (in `dataset.prompts` order, for the report's per-person intervals)."""
    prompts = dataset.prompts
    was_training = model.training
    model.eval()
    try:
        pred = native_predict(model, prompts, prompt_suffixes(dataset, prompts))
    finally:
        model.train(was_training)
    hits = np.array([p == tuple(e.answer) for p, e in zip(pred, prompts, strict=True)])
    em: dict[str, Any] = {}
    em_n: dict[str, Any] = {}
    for s in SUBSETS:
        for d in DIRECTIONS:
            for k in TEMPLATE_KINDS:
                mask = np.array(
                    [e.subset == s and e.direction == d and e.templates == k for e in prompts]
                )
                if mask.any():
                    em.setdefault(s, {}).setdefault(d, {})[k] = float(hits[mask].mean())
                    em_n.setdefault(s, {}).setdefault(d, {})[k] = int(mask.sum())
    metrics = {
        "exact_match": em,
        "exact_match_n": em_n,
        "mode": "bidirectional attention, answer span masked, one-shot argmax at t-1",
        "suffix": "the rest of each prompt's template, then <eos>",
    }
    return metrics, hits


def infill_exact_match(model: torch.nn.Module, dataset: FactDataset) -> dict[str, Any]:
    """The objective's own training question: each training document with one entity masked
    (bidirectional attention, each masked token read at t - 1), per subset. 'reverse' masks
    the document's first entity (the one a reversed question asks for: A in "A is B", given
    B after it), 'same' its second. This is Kitouni et al.'s backward retrieval (the key
    masked in the stored pair), where the reversed question above changes the format too."""
    docs = [d for d in dataset.train_docs if d.a_span[0] >= 0 and d.b_span[0] >= 0]
    was_training = model.training
    model.eval()
    hits: dict[tuple[str, str], list[bool]] = defaultdict(list)
    device = next(model.parameters()).device
    try:
        for direction in DIRECTIONS:
            for d in docs:
                first, second = sorted([d.a_span, d.b_span])
                lo, hi = first if direction == "reverse" else second
                toks = list(d.tokens)
                answer = tuple(toks[lo:hi])
                toks[lo:hi] = [MASK] * (hi - lo)
                with torch.no_grad(), bidirectional(model):
                    logits = model(torch.tensor([toks], device=device))[0]
                pred = tuple(logits[lo - 1 : hi - 1].argmax(-1).tolist())
                hits[(d.subset, direction)].append(pred == answer)
    finally:
        model.train(was_training)
    em: dict[str, Any] = {}
    for (s, direction), h in hits.items():
        em.setdefault(s, {})[direction] = {"rate": float(np.mean(h)), "n": len(h)}
    return em
