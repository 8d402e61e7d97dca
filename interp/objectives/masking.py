"""What the masking objectives (BICO, MLM, MLM-U) share: bidirectional attention, mask sampling
and the masked-token loss, each set as its paper sets it.

A masked batch replaces the chosen tokens by <mask> (id 3), so the answer is never in the
input, runs the model with bidirectional attention (`bidirectional(model)` flips the `causal`
flag of every TransformerLens `NativeAttention` off and restores it in a `finally`) under a key
mask that hides <pad> and, where the objective says so, the <mask> positions themselves, and
scores the masked tokens only. Three choices tell the objectives apart (`MaskedObjective`):

- `shift`: where a masked token is read. 1: at the position before it, through the causal
  language-model head (Lv et al.'s BICO, which keeps next-token batches beside the masked
  ones); 0: at the masked position itself (Kitouni et al.'s MLM-U, and BERT).
- `masks_attended`: False in both papers' code (Lv et al. drop masked positions from the
  attention mask; Kitouni et al.'s query stream never attends to masked content), so a masked
  position holds no information any other position can read, and changing the token under a
  mask changes nothing anywhere else.
- `per_sequence`: each sequence weighs the same, its loss the mean over its own masked tokens
  (Kitouni et al.'s eq. 5: the token losses weighted by 1/(fraction masked), which is the same
  thing), rather than a mean over every masked token of the batch, in which heavily masked
  sequences dominate.

All randomness comes from the `generator` the trainer seeds from (seed, step), drawn on the
CPU in a fixed order, so masks are reproducible and a resumed run stays bitwise identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.data.tokenizer import MASK
from interp.errors import UserError
from interp.objectives.base import Lengths, Mode, Objective, Tokens, causal_loss


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The attention modules that own a boolean `causal` flag (TL's `NativeAttention`).

    Only modules holding the flag themselves count: a bridge wrapper that merely forwards the
    attribute to its wrapped module is skipped, so each flag is set exactly once.
    """
    return [m for m in model.modules() if isinstance(vars(m).get("causal"), bool)]


def is_causal(model: torch.nn.Module) -> bool:
    """True when every attention module of `model` applies its causal mask."""
    mods = attention_modules(model)
    return bool(mods) and all(m.causal for m in mods)


@contextmanager
def bidirectional(model: torch.nn.Module, on: bool = True) -> Iterator[None]:
    """Within the block, every attention module of `model` attends in both directions (with
    `on=False`, the block changes nothing and asks nothing of the model: for code that serves
    causal and bidirectional modes).

    The previous flags are restored in a `finally`, so an exception inside the block (or a
    KeyboardInterrupt) never leaves a model that sees the future at test time.
    """
    if not on:
        yield
        return
    mods = attention_modules(model)
    if not mods:
        raise UserError(
            "the model has no attention module with a `causal` flag: the masking "
            "objectives need TransformerLens's native model (interp.model.build_model)"
        )
    saved = [m.causal for m in mods]
    try:
        for m in mods:
            setattr(m, "causal", False)  # noqa: B010 (a plain bool attribute, not a submodule)
        yield
    finally:
        for m, flag in zip(mods, saved, strict=True):
            setattr(m, "causal", flag)  # noqa: B010


def maskable(lengths: Lengths, width: int) -> Bool[Tensor, "batch pos"]:
    """The positions a mask may cover: every real token but <bos> (position 0), <eos> included;
    padding never. On the CPU."""
    pos = torch.arange(width)
    return (pos[None, :] >= 1) & (pos[None, :] < lengths.cpu()[:, None])


def sample_mask(
    lengths: Lengths,
    width: int,
    rates: Float[Tensor, " batch"],
    generator: torch.Generator,
) -> Bool[Tensor, "batch pos"]:
    """Choose round(rate * n) of each sequence's n maskable tokens (at least 1), uniformly.

    An exact count per sequence (rather than a coin per token) means no sequence goes without
    a target. Drawn on the CPU from `generator`; the result lives on the CPU.
    """
    lengths = lengths.cpu()
    can = maskable(lengths, width)
    n = lengths - 1
    k = torch.clamp(torch.round(rates.cpu() * n).long(), min=1)
    k = torch.minimum(k, n)
    scores = torch.rand(len(lengths), width, generator=generator)
    scores = scores.masked_fill(~can, 2.0)  # unmaskable positions sort last
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < k[:, None]) & can


def bernoulli_mask(
    lengths: Lengths, width: int, rate: float, generator: torch.Generator
) -> Bool[Tensor, "batch pos"]:
    """A coin of probability `rate` per maskable token (Lv et al.'s and BERT's sampling: a
    sequence may draw no mask, and then carries no loss in this batch). On the CPU."""
    coins = torch.rand(len(lengths), width, generator=generator) < rate
    return coins & maskable(lengths, width)


def key_mask(
    lengths: Lengths, mask: Bool[Tensor, "batch pos"], masks_attended: bool
) -> Int[Tensor, "batch pos"]:
    """The attention mask of a masked batch: 1 where a position may be attended (a real token,
    and not under a mask unless `masks_attended`), 0 elsewhere. On `mask`'s device."""
    pos = torch.arange(mask.shape[1], device=mask.device)
    keep = pos[None, :] < lengths.to(mask.device)[:, None]
    if not masks_attended:
        keep = keep & ~mask
    return keep.long()


def keyed_forward(model: torch.nn.Module, inputs: Tensor, keep: Tensor) -> Tensor:
    """`model(inputs, attention_mask=keep)` with the positions 0..pos-1 given explicitly. The
    TransformerLens bridge, like Hugging Face models, otherwise derives positions from the
    attention mask's running sum (the left-padding convention), which would shift every token
    after a hidden <mask>; `interp.model.RawForward` takes the same arguments."""
    pos = torch.arange(inputs.shape[1], device=inputs.device)[None, :]
    return model(inputs, attention_mask=keep, position_ids=pos)


def masked_loss(
    model: torch.nn.Module,
    tokens: Tokens,
    lengths: Lengths,
    mask: Bool[Tensor, "batch pos"],
    *,
    shift: int,
    masks_attended: bool,
    per_sequence: bool,
) -> Tensor:
    """Cross-entropy of the masked tokens under bidirectional attention over the masked input.

    Token t is read at position t - `shift`; with `per_sequence` each sequence that has a
    masked token weighs the same (the mean over its own masked tokens, then over sequences),
    otherwise every masked token of the batch weighs the same.
    """
    inputs = tokens.masked_fill(mask, MASK)
    keep = key_mask(lengths, mask, masks_attended)
    with bidirectional(model):
        logits = keyed_forward(model, inputs, keep)
    targets = tokens.masked_fill(~mask, -100)
    if shift:
        logits, targets = logits[:, :-shift], targets[:, shift:]
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
        reduction="none",
    ).view(targets.shape)  # fmt: skip
    counted = targets != -100
    if not per_sequence:
        return ce.sum() / counted.sum().clamp(min=1)
    per = counted.sum(1)
    has = per > 0
    return (ce.sum(1)[has] / per[has]).mean() if bool(has.any()) else ce.sum() * 0.0


class MaskedObjective(Objective):
    """A masking objective: bidirectional masked batches, and next-token batches for a share
    `causal_fraction` of the steps (decided per step by the first draw of the step's generator).

    Subclasses set the masking (`mask_rates`, or `bernoulli_rate` for a coin per token), where
    a masked token is read (`shift`), whether masks are attended (`masks_attended`), the loss
    weighting (`per_sequence`) and how the model is asked (`mode`).
    """

    causal_fraction: float = 0.0
    shift: int = 0
    masks_attended: bool = False
    per_sequence: bool = True
    bernoulli_rate: float = 0.0  # > 0: a coin of this probability per token (no exact count)

    @property
    def infill_mode(self) -> Mode:
        """The objective's training question asked of a document: an entity masked, read where
        and as the objective reads masked tokens, decoded left to right."""
        return Mode(
            "in-document infill", bidirectional=True, answer_masked=True, shift=self.shift,
            masks_attended=self.masks_attended,
        )  # fmt: skip

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        raise NotImplementedError

    def is_masked_step(self, generator: torch.Generator) -> bool:
        """Whether this step's batch is a masked one. With next-token batches, the first draw
        from the step's generator decides; without, no draw is spent on it."""
        if self.causal_fraction <= 0:
            return True
        return bool(torch.rand((), generator=generator).item() >= self.causal_fraction)

    def sample(
        self, lengths: Lengths, width: int, generator: torch.Generator
    ) -> Bool[Tensor, "batch pos"]:
        """This batch's mask (on the CPU)."""
        if self.bernoulli_rate > 0:
            return bernoulli_mask(lengths, width, self.bernoulli_rate, generator)
        return sample_mask(lengths, width, self.mask_rates(len(lengths), generator), generator)

    def loss(
        self, model: torch.nn.Module, tokens: Tokens, lengths: Lengths, generator: torch.Generator
    ) -> Tensor:
        if not self.is_masked_step(generator):
            return causal_loss(model, tokens, lengths)
        mask = self.sample(lengths, tokens.shape[1], generator).to(tokens.device)
        return masked_loss(
            model, tokens, lengths, mask, shift=self.shift, masks_attended=self.masks_attended,
            per_sequence=self.per_sequence,
        )  # fmt: skip
