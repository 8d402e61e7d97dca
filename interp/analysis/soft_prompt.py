"""Self-evaluation with a learned soft prompt (ASPIRE, Chen et al., Findings of EMNLP 2023).

A few soft-prompt vectors (the model frozen) are placed after "question + answer" and trained so
that the model's next-token distribution at the last soft position prefers a "correct" token over
an "incorrect" token when the answer is right: log P(correct) = logsigmoid(margin), the softmax
over the two tokens only. `interp.analysis.selective` uses it as one of its confidence scores.

Prefix caching. Under the causal mask "question + answer" never reads the soft prompt that
follows it, so its keys and values at every layer are the same in every training step: they are
computed once (`prefix_cache`) and each step runs only the soft positions (`cached_soft_logits`),
written against the TL-native model's own modules (`interp.model`'s raw-module helpers);
`tests/test_selective.py` checks it against the plain forward pass (`soft_prompt_logits`), and
models those helpers do not cover fall back to that pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from interp.data.dataset import pad_batch
from interp.errors import UserError
from interp.model import attend, embed_positions, frozen, mlp, qkv, raw, supports_raw

BATCH = 256


@runtime_checkable
class SoftPromptSchedule(Protocol):
    """How a soft prompt is trained (`SelectiveOptions` is one)."""

    @property
    def n_soft(self) -> int: ...  # soft-prompt vectors
    @property
    def lr(self) -> float: ...  # Adam learning rate
    @property
    def batch_size(self) -> int: ...  # rows per step
    @property
    def max_epochs(self) -> int: ...  # most epochs
    @property
    def patience(self) -> int: ...  # epochs without a better validation loss before stopping


def _token_embedding(net: torch.nn.Module) -> Any:
    """The token embedding of the TL-native model (`model.original_model.tok_embed`, wrapped by
    the bridge as an EmbeddingBridge): called on ids it embeds them; `.weight` is the table."""
    return net.tok_embed


def soft_prompt_logits(
    net: torch.nn.Module,
    soft: Float[Tensor, "n_soft d_model"],
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last soft position of "tokens[:length] + soft prompt", per row.

    `net` is the TL-native model (`model.original_model`): its `forward(inputs_embeds=...)` adds
    the positional embeddings itself (or applies rotary in attention), so the soft vectors sit
    at positions length .. length + n_soft - 1 exactly as token embeddings would. Rows are
    right-padded; under the causal mask the padding after the soft prompt is never read.
    """
    n_soft = soft.shape[0]
    b, t = tokens.shape
    width = int(lengths.max()) + n_soft
    ids = torch.zeros(b, width, dtype=torch.long, device=tokens.device)
    ids[:, : min(t, width)] = tokens[:, :width]
    rel = torch.arange(width, device=tokens.device)[None] - lengths[:, None]  # (batch, width)
    is_soft = (rel >= 0) & (rel < n_soft)
    tok_embeds = _token_embedding(net)(ids)
    embeds = torch.where(is_soft[..., None], soft[rel.clamp(0, n_soft - 1)], tok_embeds)
    logits = net(inputs_embeds=embeds)  # (batch, width, d_vocab)
    return logits[torch.arange(b, device=tokens.device), lengths + n_soft - 1]


def self_eval_margin(
    net: torch.nn.Module,
    soft: Float[Tensor, "n_soft d_model"],
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    token_ids: tuple[int, int],
) -> Float[Tensor, " batch"]:
    """logit(correct token) - logit(incorrect token) at the last soft position.

    log P(correct) = logsigmoid(margin): the softmax over the two tokens only.
    """
    last = soft_prompt_logits(net, soft, tokens, lengths)
    return last[:, token_ids[0]] - last[:, token_ids[1]]


# Prefix caching. Under the causal mask "question + answer" never reads the soft prompt that
# follows it, so its keys and values at every layer are the same in every training step. They
# are computed once; each step then runs only the n_soft soft positions through the model (about
# a fifth of the work of the whole sequence). Written against the TL-native model's own modules
# (`interp.model`'s raw-module helpers); `tests/test_selective.py` checks it against the plain
# forward pass, and models those helpers do not cover fall back to that pass.


@dataclass(frozen=True)
class PrefixCache:
    """Per-layer keys and values of right-padded "question + answer" rows (no gradient)."""

    keys: list[Float[Tensor, "n kv_heads pos d_head"]]
    values: list[Float[Tensor, "n kv_heads pos d_head"]]
    lengths: Int[Tensor, " n"]


@torch.no_grad()
def prefix_cache(net: Any, seqs: list[tuple[int, ...]], batch_size: int = BATCH) -> PrefixCache:
    """Keys and values of every row at every layer, padded to the longest row."""
    device = next(net.parameters()).device
    width = max(len(s) for s in seqs)
    keys: list[list[Tensor]] = [[] for _ in net.layers]
    values: list[list[Tensor]] = [[] for _ in net.layers]
    causal = torch.triu(torch.ones(width, width, dtype=torch.bool, device=device), diagonal=1)
    for s in range(0, len(seqs), batch_size):
        toks, _ = pad_batch(
            [tuple(x) + (0,) * (width - len(x)) for x in seqs[s : s + batch_size]], device=device
        )
        positions = torch.arange(width, device=device).expand(toks.shape[0], -1)
        h = embed_positions(net, raw(net.tok_embed)(toks), positions)
        for i, block in enumerate(net.layers):
            att = raw(block.attn)
            q, k, v = qkv(att, raw(block.ln1)(h), positions)
            keys[i].append(k)
            values[i].append(v)
            h = h + attend(att, q, k, v, causal, empty_rows=False)
            h = h + mlp(block, h)
    lengths = torch.tensor([len(x) for x in seqs], device=device)
    return PrefixCache([torch.cat(k) for k in keys], [torch.cat(v) for v in values], lengths)


def cached_soft_logits(
    net: Any,
    soft: Float[Tensor, "n_soft d_model"],
    cache: PrefixCache,
    rows: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d_vocab"]:
    """`soft_prompt_logits` for cached rows: only the soft positions are computed."""
    n_soft, device = soft.shape[0], soft.device
    lengths = cache.lengths[rows]
    b, width = len(rows), cache.keys[0].shape[2]
    positions = lengths[:, None] + torch.arange(n_soft, device=device)[None]
    h = embed_positions(net, soft[None].expand(b, -1, -1), positions)
    pad = torch.arange(width, device=device)[None] >= lengths[:, None]  # (batch, width)
    later = torch.triu(torch.ones(n_soft, n_soft, dtype=torch.bool, device=device), diagonal=1)
    blocked = torch.cat(
        [pad[:, None, None, :].expand(b, 1, n_soft, width), later.expand(b, 1, n_soft, n_soft)],
        dim=-1,
    )
    for i, block in enumerate(net.layers):
        att = raw(block.attn)
        q, k, v = qkv(att, raw(block.ln1)(h), positions)
        k = torch.cat([cache.keys[i][rows], k], dim=2)
        v = torch.cat([cache.values[i][rows], v], dim=2)
        h = h + attend(att, q, k, v, blocked)
        h = h + mlp(block, h)
    return raw(net.head)(raw(net.ln_out)(h[:, -1]))


def _balanced_loss(
    margin: Float[Tensor, " batch"], label: Bool[Tensor, " batch"], w_pos: float
) -> Tensor:
    """Cross-entropy of P(correct) = sigmoid(margin), classes weighted to count equally."""
    weight = torch.where(label, torch.full_like(margin, w_pos), torch.full_like(margin, 1 - w_pos))
    loss = F.binary_cross_entropy_with_logits(margin, label.float(), reduction="none")
    return (weight * loss).sum() / weight.sum()


@dataclass(frozen=True)
class SelfEvalFit:
    """A trained soft prompt and how its training went (losses are class-balanced)."""

    soft: Float[Tensor, "n_soft d_model"]
    train_loss: list[float]  # [0] before any step, then the mean batch loss of each epoch
    val_loss: list[float]  # per epoch, [0] before any step
    best_epoch: int


class SelfEvalMargins:
    """Self-evaluation margins of a fixed list of rows, through the prefix cache when it applies
    (computed on first use) and the plain forward pass otherwise."""

    def __init__(
        self, net: torch.nn.Module, seqs: list[tuple[int, ...]], token_ids: tuple[int, int]
    ) -> None:
        self.net, self.seqs, self.token_ids = net, seqs, token_ids
        self.cache: PrefixCache | None = None
        self.use_cache = supports_raw(net) and len(seqs) > 0

    def __call__(self, soft: Tensor, rows: list[int] | None = None) -> Float[Tensor, " n"]:
        rows = list(range(len(self.seqs))) if rows is None else rows
        device = soft.device
        if self.use_cache:
            if self.cache is None:
                self.cache = prefix_cache(self.net, self.seqs)
            out = [
                cached_soft_logits(
                    self.net, soft, self.cache, torch.tensor(rows[s : s + BATCH], device=device)
                )
                for s in range(0, len(rows), BATCH)
            ]
            logits = torch.cat(out) if out else torch.zeros(0, 2, device=device)
            return logits[:, self.token_ids[0]] - logits[:, self.token_ids[1]]
        margins = []
        for s in range(0, len(rows), BATCH):
            toks, lens = pad_batch([self.seqs[i] for i in rows[s : s + BATCH]], device=device)
            margins.append(self_eval_margin(self.net, soft, toks, lens, self.token_ids))
        return torch.cat(margins) if margins else torch.zeros(0, device=device)


def self_eval_margins(
    net: torch.nn.Module, soft: Tensor, seqs: list[tuple[int, ...]], token_ids: tuple[int, int]
) -> Float[Tensor, " n"]:
    return SelfEvalMargins(net, seqs, token_ids)(soft)


def train_self_eval(
    net: torch.nn.Module,
    train: tuple[list[tuple[int, ...]], np.ndarray],
    val: tuple[list[tuple[int, ...]], np.ndarray],
    token_ids: tuple[int, int],
    opts: SoftPromptSchedule,
    seed: int,
    progress: bool = False,
    margins: tuple[SelfEvalMargins, SelfEvalMargins] | None = None,
) -> SelfEvalFit:
    """Learn `opts.n_soft` soft-prompt vectors (model frozen) on labelled "question + answer" rows.

    Adam on the class-balanced cross-entropy; early stopping on the validation loss, keeping
    the best soft prompt. The soft prompt starts as the embeddings of random vocabulary tokens.
    `margins` (train, validation) lets fits on the same rows share one prefix cache.
    """
    seqs, labels = train
    vseqs, vlabels = val
    if labels.all() or not labels.any():
        raise UserError(
            "the training split's candidates are all correct or all wrong: the self-"
            "evaluation has nothing to learn; use more --beams or another --seed"
        )
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed)
    table = _token_embedding(net).weight
    init_ids = torch.randint(5, table.shape[0], (opts.n_soft,), generator=g)
    soft = table[init_ids.to(device)].detach().clone().requires_grad_(True)
    y = torch.tensor(labels, dtype=torch.bool, device=device)
    vy = torch.tensor(vlabels, dtype=torch.bool, device=device)
    w_pos = float(1 - labels.mean())  # each class carries half of the weight
    vw_pos = float(1 - vlabels.mean()) if 0 < vlabels.mean() < 1 else 0.5
    opt = torch.optim.Adam([soft], lr=opts.lr)
    train_m, val_m = margins or (
        SelfEvalMargins(net, seqs, token_ids),
        SelfEvalMargins(net, vseqs, token_ids),
    )

    def validate() -> float:
        with torch.no_grad():
            return float(_balanced_loss(val_m(soft), vy, vw_pos))

    with frozen(net):
        with torch.no_grad():
            tr = float(_balanced_loss(train_m(soft), y, w_pos))
        va = validate()
        train_loss, val_loss = [tr], [va]
        best, best_soft, best_epoch = va, soft.detach().clone(), 0
        bar = tqdm(range(1, opts.max_epochs + 1), desc="self-evaluation", disable=not progress)
        for epoch in bar:
            perm = torch.randperm(len(seqs), generator=g).tolist()
            total = 0.0  # the epoch's training loss, weighted by batch size (no second pass)
            for s in range(0, len(perm), opts.batch_size):
                idx = perm[s : s + opts.batch_size]
                loss = _balanced_loss(train_m(soft, idx), y[idx], w_pos)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            tr, va = total / len(perm), validate()
            train_loss.append(tr)
            val_loss.append(va)
            bar.set_postfix(train=f"{tr:.3f}", val=f"{va:.3f}")
            if va < best - 1e-6:
                best, best_soft, best_epoch = va, soft.detach().clone(), epoch
            elif epoch - best_epoch >= opts.patience:
                break
    return SelfEvalFit(best_soft, train_loss, val_loss, best_epoch)
