"""BICO (Lv et al. 2023, "An Analysis and Mitigation of the Reversal Curse", arXiv 2311.07468).

Lv et al. trace the reversal curse to the training objective: under next-token prediction a
token is only ever predicted from what precedes it, whereas GLM, trained with autoregressive
blank infilling where the tokens to predict see the whole context, answers reversed questions
far better (about 80% vs Llama's 0% on reversed N2D facts). BICO (BIdirectional Causal language
model Optimization) brings that into a causal model without changing its architecture. As their
code (trestad/mitigating-reversal-curse, run_mlm.py and its patched modeling_llama.py) does it:

- each batch is, with probability 1/2, an ordinary next-token batch (causal attention), which
  keeps generation working; otherwise a mask-denoising batch;
- in a masked batch each token but the specials becomes <mask> with probability 0.15 (a coin
  per token), attention is bidirectional, masked positions are dropped from the attention mask
  (never attended), and each masked token is read at the position before it through the causal
  head (their loss shifts logits and labels as next-token prediction does), a token mean;
- at test the model keeps bidirectional attention (`do_mlm = True` outside training) and
  generates greedily: its own mode here, `Mode("bidirectional greedy decoding")`. Causal
  decoding, which its next-token batches also train, is reported beside it.

Where the kit departs: Lv et al. fine-tune a pretrained Llama (LoRA) for 20 epochs; the kit trains
from scratch (the objectives preset: 40k steps, without weight decay as their Trainer's default;
`interp.evaluate.learned` says whether that was enough). Their RoPE trick (the upper triangle's
scores computed with flipped sines) has no counterpart with learned absolute positions. <eos> can
be masked here; their tokenizer's special-tokens mask spares it.
"""

from __future__ import annotations

from interp.objectives.base import Mode
from interp.objectives.masking import MaskedObjective


class BicoObjective(MaskedObjective):
    name = "bico"
    mode = Mode("bidirectional greedy decoding", bidirectional=True)
    causal_fraction = 0.5  # Lv et al.: random.choice([True, False]) per batch
    bernoulli_rate = 0.15  # their mlm_probability
    shift = 1  # read at t - 1 through the causal head
    masks_attended = False  # their attention_mask & ~masked_indices
    per_sequence = False  # their CrossEntropyLoss: a mean over every masked token of the batch
