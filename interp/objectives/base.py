"""The objective interface and the shared next-token loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.dataset import FactDataset
from interp.data.example import Example
from interp.model import RawForward

# The batch every objective's loss takes: right-padded token ids and each sequence's length.
Tokens = Int[Tensor, "batch pos"]
Lengths = Int[Tensor, " batch"]


@dataclass(frozen=True)
class Mode:
    """How a model trained by an objective is asked a question: its own mode, as its paper asks.

    - `bidirectional`: attention runs both ways over the whole input (the masking objectives);
    - `answer_masked`: the answer's positions hold <mask> (its length is given) and are decoded
      left to right, one token at a time, the rest of the answer still masked (Kitouni et al.);
      otherwise the answer is generated greedily after the prompt;
    - `shift`: token t is read from the logits at position t - shift (1: the causal head, as
      next-token prediction and BICO read it; 0: at the masked position itself, as MLM-U);
    - `masks_attended`: whether <mask> positions are keys other positions attend to (BERT: yes;
      Kitouni et al.'s and Lv et al.'s code: no, a masked token is never attended).
    """

    name: str
    bidirectional: bool = False
    answer_masked: bool = False
    shift: int = 1
    masks_attended: bool = True

    @property
    def is_causal(self) -> bool:
        return not self.bidirectional


CAUSAL = Mode("causal decoding")


class Objective:
    """Base class: causal next-token loss on the documents as given, asked by causal decoding."""

    name = "base"
    mode: Mode = CAUSAL  # how the objective's model is asked (`interp.modes`)
    causal_head: bool = True  # whether causal decoding means anything for its model

    def documents(self, docs: list[Example], dataset: FactDataset) -> list[Example]:
        """The documents to train on (default: unchanged)."""
        return docs

    @property
    def adds_documents(self) -> bool:
        """Whether `documents` changes the training set (an objective that overrides it)."""
        return type(self).documents is not Objective.documents

    def loss(
        self, model: torch.nn.Module, tokens: Tokens, lengths: Lengths, generator: torch.Generator
    ) -> Tensor:
        """Mean next-token cross-entropy of `model` on the batch (objectives override this)."""
        return causal_loss(model, tokens, lengths)


def causal_loss(model: torch.nn.Module, tokens: Tokens, lengths: Lengths) -> Tensor:
    """`next_token_loss` of `model` on the batch; through `RawForward.next_token_loss` (which
    skips the padding) where the model is the training loop's `RawForward` and it applies."""
    if isinstance(model, RawForward) and model.packs():
        return model.next_token_loss(tokens, lengths)
    return next_token_loss(model(tokens), tokens, lengths)


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Tokens,
    lengths: Lengths,
) -> Tensor:
    """Mean cross-entropy of predicting token t+1 at position t, over real (unpadded) tokens."""
    pos = torch.arange(tokens.shape[1] - 1, device=tokens.device)
    valid = pos[None, :] < (lengths[:, None] - 1)  # [batch, pos-1]: target position exists
    targets = tokens[:, 1:].masked_fill(~valid, -100)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )
