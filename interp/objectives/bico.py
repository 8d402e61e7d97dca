"""BICO (Lv et al. 2023, "An Analysis and Mitigation of the Reversal Curse", arXiv 2311.07468).

Lv et al. trace the reversal curse to the training objective: under next-token prediction a
token is only ever predicted from what precedes it, whereas GLM, trained with autoregressive
blank infilling where the tokens to predict see the whole context, answers reversed questions
far better (about 80% vs Llama's 0% on reversed N2D facts). BICO (BIdirectional Causal language
model Optimization) brings that into a causal model without changing its architecture: the
attention is made bidirectional and a mask-denoising objective is trained, each masked token
predicted from the hidden state at the position before it, so the causal LM head keeps its
meaning and the model is still queried left to right. It lifts Llama to about 70%.

Here (`interp.objectives.masking` has the shared parts), following the kit's design: half of the
batches, chosen per step by the first draw of the step's generator, are ordinary next-token
batches, which keep left-to-right generation working in a model trained from scratch; in the
other half 15% of each document's tokens (never <bos>, never padding; at least one) become
<mask>, attention is bidirectional over the whole input with <pad> masked out, and the loss is
the cross-entropy of the masked tokens read at the positions before them. Test-time use is
unchanged: plain causal greedy generation from the prompt.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.objectives.masking import MaskedObjective


class BicoObjective(MaskedObjective):
    name = "bico"
    causal_fraction = 0.5  # share of ordinary next-token batches
    mask_rate = 0.15  # share of maskable tokens masked in a bidirectional batch (BERT's rate)

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        return torch.full((batch,), self.mask_rate)
