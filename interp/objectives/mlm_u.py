"""MLM-U (Kitouni et al. 2024, "The Factorization Curse: Which Tokens You Predict Underlie the
Reversal Curse and More", arXiv 2406.05183).

Kitouni et al. recast the reversal curse as a factorization curse: next-token prediction learns
one factorization of the joint distribution (left to right) and nothing forces it to learn the
others, so a fact stored as p(B | A) does not give p(A | B). Neither reversed tokens nor a
BERT-style masked objective at a fixed 15% rate fixes this; an objective that is agnostic to the
factorization does. MLM-U draws the masking rate uniformly in [0, 1] for every sequence, so over
training the model is asked to predict any subset of tokens from any other subset (the
absorbing-diffusion / u-PMLM objective), including all of A from B and all of B from A. On their
retrieval tasks it answers both ways where next-token prediction scores 0.

Here (`interp.objectives.masking` has the shared parts): per sequence a rate r ~ U(0, 1) and
round(r * n) of its n maskable tokens (never <bos>, never padding; at least one) become <mask>;
attention is bidirectional; each masked token is predicted at the position BEFORE it. That
choice (rather than at the masked position itself, as in Kitouni et al.'s encoder) reuses the
causal LM head exactly as left-to-right decoding reads it, so the model is tested, like every
objective in the kit, by plain causal greedy generation from the prompt; a masked batch whose
mask covers the answer and everything after it is then the same question as the test prompt,
up to the attention direction. Because a model trained from scratch under bidirectional
attention alone has never computed anything under the causal mask the test uses, half of the
batches (chosen per step from the generator) are ordinary next-token batches, as in BICO; the
two objectives differ only in the masking rate (uniform vs a fixed 15%).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.objectives.masking import MaskedObjective


class MlmUObjective(MaskedObjective):
    name = "mlm_u"
    causal_fraction = 0.5  # share of ordinary next-token batches (needed for causal decoding)

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        """One masking rate per sequence, uniform on [0, 1)."""
        return torch.rand(batch, generator=generator)
