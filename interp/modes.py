"""Asking a model in its objective's own mode (`interp.objectives.base.Mode`): decoding, the
teacher-forced log-probability of an answer, and in-document infill.

Each objective is judged the way its paper asks it: next-token training by causal greedy
decoding (`interp.evaluate`), BICO by greedy decoding under bidirectional attention (Lv et al.),
MLM and MLM-U with the answer's positions masked and decoded left to right, one token at a
time, the rest of the answer still masked (Kitouni et al.). This module holds the two
bidirectional modes:

- masked (`mode.answer_masked`): the input is

      prompt + <mask> x len(answer) + suffix

  (`suffix` is the rest of the prompt's own template and <eos>, so the masked answer sits in a
  whole sentence, as a masked entity of a training document does). At step j the answer's
  first j tokens are filled in, the others still masked; token j is read at position
  len(prompt) + j - `mode.shift`. <mask> positions are hidden from attention where the mode
  says so. The answer's length is given by the number of masks, as in Kitouni et al.'s
  queries: a property of the mode, stated beside its numbers.
- bidirectional greedy (not `answer_masked`): the prompt and the tokens generated so far,
  attention both ways, the next token read at the last position.

Exact match in masked mode is token-exact: every masked position's argmax equals the answer's
token. `infill_exact_match` asks the objective's own training question of its training
documents: one entity masked, read as the objective reads masked tokens.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.data.dataset import Example, FactDataset
from interp.data.tokenizer import EOS, MASK, encode
from interp.data.world import World
from interp.objectives.base import Mode
from interp.objectives.masking import bidirectional, keyed_forward

BATCH = 256
Seq = tuple[int, ...]


def document_suffix(dataset: FactDataset) -> Seq:
    """The most common tail of the training documents after their last entity (". <eos>" on the
    synthetic world; just <eos> where documents end with an entity)."""
    tails: Counter[Seq] = Counter()
    for d in dataset.train_docs:
        end = max(d.a_span[1], d.b_span[1])
        if end > 0:
            tails[tuple(d.tokens[end:])] += 1
    return tails.most_common(1)[0][0] if tails else (EOS,)


def prompt_suffixes(dataset: FactDataset, prompts: list[Example]) -> list[Seq]:
    """What follows each prompt's answer in its full text, <eos> included: on the synthetic
    world the rest of the prompt's own template (" ." for "the <B> is called <A> .", "now enjoys
    a quiet life ." for "... , <A> now enjoys a quiet life ."), so the masked answer sits in the
    sentence it belongs to; elsewhere the dataset's own (`dataset.suffixes`, by prompt) or the
    documents' most common tail (`document_suffix`)."""
    world = dataset.world
    own = getattr(dataset, "suffixes", None)
    if own is not None:
        return [own(e) for e in prompts]
    if not isinstance(world, World):  # the paper's data, or a world without A-is-B templates
        return [document_suffix(dataset)] * len(prompts)
    out = []
    for e in prompts:
        words = world.templates(e.order, e.templates)[e.template].split()
        second = max(i for i, w in enumerate(words) if w in ("<A>", "<B>"))
        tail = " ".join(words[second + 1 :])
        out.append((*(encode(dataset.tokenizer, tail) if tail else ()), EOS))
    return out


def _groups(keys: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices grouped by `keys` (sequences of one shape), in chunks of `batch_size`."""
    by: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by[k].append(i)
    return [
        idxs[s : s + batch_size]
        for _, idxs in sorted(by.items())
        for s in range(0, len(idxs), batch_size)
    ]


def _logits(model: torch.nn.Module, toks: Tensor, mode: Mode) -> Float[Tensor, "b pos vocab"]:
    """The model's logits on `toks` in `mode`'s attention: both ways, <mask> positions hidden
    from attention unless the mode attends them."""
    with bidirectional(model, on=mode.bidirectional):
        if mode.masks_attended:
            return model(toks)
        return keyed_forward(model, toks, (toks != MASK).long())


@torch.no_grad()
def masked_decode(
    model: torch.nn.Module,
    mode: Mode,
    prompts: list[Seq],
    n_answer: list[int],
    suffixes: list[Seq],
    batch_size: int = BATCH,
) -> list[Seq]:
    """For each prompt, its `n_answer` masked tokens decoded left to right in `mode` (each
    token's argmax filled in before the next is read). Inputs are grouped by shape, so no
    padding is ever needed."""
    device = next(model.parameters()).device
    out: list[Seq] = [() for _ in prompts]
    keys = [(len(p), n, len(s)) for p, n, s in zip(prompts, n_answer, suffixes, strict=True)]
    for chunk in _groups(keys, batch_size):
        p, n, _ = keys[chunk[0]]
        seqs = [tuple(prompts[i]) + (MASK,) * n + tuple(suffixes[i]) for i in chunk]
        toks = torch.tensor(seqs, dtype=torch.long, device=device)
        for j in range(n):
            logits = _logits(model, toks, mode)
            toks[:, p + j] = logits[:, p + j - mode.shift].argmax(-1)
        for row, i in enumerate(chunk):
            out[i] = tuple(toks[row, p : p + n].tolist())
    return out


@torch.no_grad()
def stepwise_logprobs(
    model: torch.nn.Module,
    mode: Mode,
    prompts: list[Seq],
    answers: list[Seq],
    suffixes: list[Seq] | None = None,
    batch_size: int = BATCH,
) -> Float[Tensor, " n"]:
    """Summed log p(answer | prompt) in a bidirectional `mode`, by the chain rule left to right:
    token j given the prompt and the answer's first j tokens (the rest masked, then the suffix,
    in a masked mode; absent in bidirectional greedy decoding, which reads the last position).
    One forward pass per answer token, batched over prompts of one shape."""
    if mode.is_causal:
        raise ValueError("stepwise_logprobs serves the bidirectional modes: use "
                         "interp.evaluate.completion_logprobs for causal decoding")  # fmt: skip
    device = next(model.parameters()).device
    tails = suffixes if suffixes is not None else [(EOS,)] * len(prompts)
    out = torch.zeros(len(prompts))
    keys = [(len(p), len(a), len(s)) for p, a, s in zip(prompts, answers, tails, strict=True)]
    for chunk in _groups(keys, batch_size):
        p, n, _ = keys[chunk[0]]
        ans = torch.tensor([answers[i] for i in chunk], dtype=torch.long, device=device)
        total = torch.zeros(len(chunk), device=device)
        for j in range(n):
            if mode.answer_masked:
                seqs = [
                    tuple(prompts[i]) + tuple(answers[i][:j]) + (MASK,) * (n - j) + tuple(tails[i])
                    for i in chunk
                ]
                at = p + j - mode.shift
            else:
                seqs = [tuple(prompts[i]) + tuple(answers[i][:j]) for i in chunk]
                at = p + j - 1
            toks = torch.tensor(seqs, dtype=torch.long, device=device)
            logp = _logits(model, toks, mode)[:, at].log_softmax(-1)
            total += logp.gather(1, ans[:, j : j + 1])[:, 0]
        out[torch.tensor(chunk)] = total.cpu()
    return out


def infill_exact_match(
    model: torch.nn.Module, dataset: FactDataset, mode: Mode, per_subset: int = 0
) -> dict[str, Any]:
    """The objective's own training question: each training document with one entity masked,
    decoded left to right in `mode` (the objective's `infill_mode`), per subset: {subset:
    {direction: {"rate", "n"}}}. 'reverse' masks the document's first entity (the one a
    reversed question asks for: A in "A is B", given B after it), 'same' its second. This is
    Kitouni et al.'s backward retrieval inside the stored pair, where a reversed question also
    changes the format. `per_subset` > 0 reads only the first documents of each subset (the
    training log's quick version)."""
    docs = [d for d in dataset.train_docs if d.a_span[0] >= 0 and d.b_span[0] >= 0]
    if per_subset:
        kept: dict[str, list[Example]] = defaultdict(list)
        for d in docs:
            if len(kept[d.subset]) < per_subset:
                kept[d.subset].append(d)
        docs = [d for ds in kept.values() for d in ds]
    was_training = model.training
    model.eval()
    try:
        rates: dict[str, Any] = {}
        for direction in ("same", "reverse"):
            spans = [sorted([d.a_span, d.b_span])[direction == "same"] for d in docs]
            pairs = list(zip(docs, spans, strict=True))
            pred = masked_decode(
                model, mode, [d.tokens[: s[0]] for d, s in pairs], [s[1] - s[0] for s in spans],
                [d.tokens[s[1] :] for d, s in pairs],
            )  # fmt: skip
            hits: dict[str, list[bool]] = defaultdict(list)
            for d, (lo, hi), g in zip(docs, spans, pred, strict=True):
                hits[d.subset].append(g == tuple(d.tokens[lo:hi]))
            for subset, h in hits.items():
                rates.setdefault(subset, {})[direction] = {"rate": float(np.mean(h)), "n": len(h)}
    finally:
        model.train(was_training)
    return rates
