"""What the masking objectives (BICO, MLM-U) share: bidirectional attention, mask sampling and
the masked-token loss.

Both objectives train the very model that is later tested by causal, left-to-right generation,
so they reuse its causal language-model head: the logits at position t-1 predict token t, as
in Lv et al. (2023)'s BICO. A masked batch therefore differs from a next-token batch in three
ways only:
- inputs: the chosen tokens are replaced by <mask> (id 3), so the answer is never in the input;
- attention: bidirectional (`bidirectional(model)` flips the `causal` flag of every
  TransformerLens `NativeAttention` off and restores it in a `finally`), with a padding mask
  so no real position attends to <pad>. <mask> positions stay attendable, as in BERT and GLM:
  they carry no content, only the fact that a token sits there;
- loss: cross-entropy at the positions before masked tokens only. Positions before visible
  tokens carry no loss: under bidirectional attention those tokens are in the input, and
  predicting them would teach copying.
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
from interp.objectives.base import Lengths, Objective, Tokens, causal_loss


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
def bidirectional(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, every attention module of `model` attends in both directions.

    The previous flags are restored in a `finally`, so an exception inside the block (or a
    KeyboardInterrupt) never leaves a model that sees the future at test time.
    """
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


def sample_mask(
    lengths: Lengths,
    width: int,
    rates: Float[Tensor, " batch"],
    generator: torch.Generator,
) -> Bool[Tensor, "batch pos"]:
    """Choose round(rate * n) of each sequence's n maskable tokens (at least 1), uniformly.

    Maskable: every real token but <bos> (position 0), <eos> included; padding never. An exact
    count per sequence (rather than a coin per token) means no sequence goes without a target.
    Drawn on the CPU from `generator`; the result lives on the CPU.
    """
    lengths = lengths.cpu()
    pos = torch.arange(width)
    maskable = (pos[None, :] >= 1) & (pos[None, :] < lengths[:, None])  # [batch, pos]
    n = lengths - 1
    k = torch.clamp(torch.round(rates.cpu() * n).long(), min=1)
    k = torch.minimum(k, n)
    scores = torch.rand(len(lengths), width, generator=generator)
    scores = scores.masked_fill(~maskable, 2.0)  # unmaskable positions sort last
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < k[:, None]) & maskable


def masked_inputs_and_targets(
    tokens: Tokens, mask: Bool[Tensor, "batch pos"]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos-1"]]:
    """Inputs with masked tokens replaced by <mask>; targets for positions 0..pos-2.

    `targets[:, t-1]` is token t where t is masked and -100 (ignored) everywhere else, so the
    logits at position t-1 are asked for the hidden token t and for nothing visible.
    """
    inputs = tokens.masked_fill(mask, MASK)
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    return inputs, targets


def masked_prediction_loss(
    model: torch.nn.Module,
    tokens: Tokens,
    lengths: Lengths,
    mask: Bool[Tensor, "batch pos"],
) -> Tensor:
    """Mean cross-entropy of the masked tokens, each predicted at the position before it,
    under bidirectional attention over the (masked) input and a padding mask."""
    inputs, targets = masked_inputs_and_targets(tokens, mask)
    pos = torch.arange(tokens.shape[1], device=tokens.device)
    keep = (pos[None, :] < lengths[:, None]).long()  # [batch, pos]: 1 = real token, 0 = <pad>
    with bidirectional(model):
        logits = model(inputs, attention_mask=keep)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )


class MaskedObjective(Objective):
    """A mix of next-token batches and bidirectional masked batches, decided per step.

    Subclasses set `causal_fraction` (the share of ordinary next-token batches) and
    `mask_rates` (the masking rate of each sequence in a masked batch).
    """

    causal_fraction: float = 0.5

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        raise NotImplementedError

    def is_masked_step(self, generator: torch.Generator) -> bool:
        """Whether this step's batch is a masked one (the first draw from the step's generator)."""
        return bool(torch.rand((), generator=generator).item() >= self.causal_fraction)

    def loss(
        self, model: torch.nn.Module, tokens: Tokens, lengths: Lengths, generator: torch.Generator
    ) -> Tensor:
        if not self.is_masked_step(generator):
            return causal_loss(model, tokens, lengths)
        rates = self.mask_rates(tokens.shape[0], generator)
        mask = sample_mask(lengths, tokens.shape[1], rates, generator).to(tokens.device)
        return masked_prediction_loss(model, tokens, lengths, mask)
