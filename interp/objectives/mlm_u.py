"""MLM-U (Kitouni et al. 2024, "The Factorization Curse: Which Tokens You Predict Underlie the
Reversal Curse and More", arXiv 2406.05183), and their fixed-rate MLM baseline.

Kitouni et al. recast the reversal curse as a factorization curse: next-token prediction learns
one factorization of the joint distribution (left to right) and nothing forces it to learn the
others, so a fact stored as p(B | A) does not give p(A | B). Neither reversed tokens nor a
BERT-style masked objective at a fixed 15% rate fixes this; an objective that is agnostic to the
factorization does. MLM-U draws the masking rate uniformly in [0, 1] for every sequence, so over
training the model is asked to predict any subset of tokens from any other subset (the
absorbing-diffusion objective), including all of A from B and all of B from A. On their
retrieval task it answers both ways (100% / 100%) where next-token prediction answers forward
only, and the fixed-rate MLM reaches about 20% either way.

As the paper sets it (section 2.2, appendices E.3 and G): per sequence a rate r ~ U(0, 1) and
round(r * n) of its n maskable tokens (never <bos>, never padding; at least one) become <mask>;
no next-token batches; weight decay 0 (the presets set `train.weight_decay=0`); each sequence
weighs the same (their eq. 5); masked tokens are never attended; each masked token is read at
its own position; at test the answer's positions are masked and decoded left to right, one
token at a time, the rest of the answer still masked (`Mode("left-to-right masked decoding")`).

Where the kit departs: Kitouni et al.'s model is a two-stream encoder-decoder (a query stream of
position embeddings cross-attending to the content stream); the kit's is a single bidirectional
stack whose masked positions carry the <mask> embedding plus their position and attend to the
unmasked tokens only, the masked-diffusion model Shin et al. (arXiv 2602.02133) analyse. With
masks never attended, the unmasked tokens form the content stream and the masked positions the
query stream, with weights shared between the two. Its head reads the masked position, so
causal decoding means nothing for it (`causal_head = False`).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.objectives.base import Mode
from interp.objectives.masking import MaskedObjective

MASKED_DECODING = Mode(
    "left-to-right masked decoding", bidirectional=True, answer_masked=True, shift=0,
    masks_attended=False,
)  # fmt: skip


class MlmUObjective(MaskedObjective):
    name = "mlm_u"
    mode = MASKED_DECODING
    causal_head = False

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        """One masking rate per sequence, uniform on [0, 1)."""
        return torch.rand(batch, generator=generator)


class MlmObjective(MlmUObjective):
    """Kitouni et al.'s MLM baseline: MLM-U with the rate fixed at BERT's 15%."""

    name = "mlm"
    rate = 0.15

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        return torch.full((batch,), self.rate)


class MlmUHybridObjective(MaskedObjective):
    """The kit's own variant, not Kitouni et al.'s: half the batches next-token ones, the other
    half MLM-U's U(0, 1)-rate masks read at t - 1 through the causal head, masks attended, a
    token mean. Its causal head lets the instruments that read a causal model (the storage
    study's extraction and probes) run on it, so it stays beside the faithful MLM-U; asked in
    its masked mode (read at t - 1), with causal decoding beside it."""

    name = "mlm_u_hybrid"
    mode = Mode(
        "left-to-right masked decoding at t - 1", bidirectional=True, answer_masked=True,
        shift=1, masks_attended=True,
    )  # fmt: skip
    causal_fraction = 0.5
    shift = 1
    masks_attended = True
    per_sequence = False

    def mask_rates(self, batch: int, generator: torch.Generator) -> Float[Tensor, " batch"]:
        return torch.rand(batch, generator=generator)
