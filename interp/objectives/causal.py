"""Ordinary next-token prediction over whole documents: the objective under which the reversal
curse appears (Berglund et al. 2023). The loss covers prompt and completion alike."""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from interp.objectives.base import Objective, next_token_loss


class CausalObjective(Objective):
    name = "causal"

    def loss(
        self,
        model: torch.nn.Module,
        tokens: Int[Tensor, "batch pos"],
        lengths: Int[Tensor, " batch"],
        generator: torch.Generator,
    ) -> Tensor:
        return next_token_loss(model(tokens), tokens, lengths)
