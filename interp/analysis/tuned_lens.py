"""The lens machinery: one generic lens (`lens_stack`), whose identity case is the logit lens,
and the tuned lens's affine translators and their training.

The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the
Tuned Lens", arXiv 2303.08112) learns one affine translator per layer, h -> h + A_l h + b_l,
initialised to the identity (A_l = 0, b_l = 0) and trained to minimise KL(model's final
distribution || lens_l) over every position of the training documents; the final layer keeps the
identity. `lens_stack(model, resid, translator=None)` is the logit lens (nostalgebraist 2020):
final LayerNorm with its statistics recomputed on each layer's stream, then the unembedding.
Layers are depths of the residual stream: 0 = the embeddings ... n_layers = the model's output.

The analysis that reads these lenses at named prompt positions is :mod:`interp.analysis.lens`,
which re-exports everything here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from interp.data.dataset import Example, pad_batch
from interp.errors import UserError
from interp.files import atomic_path, safetensors_bytes
from interp.model import frozen, residual_stack

BATCH = 256  # prompts or documents per forward pass

# ---------------------------------------------------------------------------------------------
# The lens: one generic function, the logit lens being its identity case


class TunedLens(nn.Module):
    """Affine translators h -> h + h @ weight[l] + bias[l], one per layer 0..n_layers-1.

    Zero-initialised, so a fresh `TunedLens` is the identity: the logit lens. Layer n_layers (the
    model's output) has no translator. Saved as safetensors (`save`/`load`), never pickled.
    """

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    def forward(
        self, h: Float[Tensor, "*rest d_model"], layer: int
    ) -> Float[Tensor, "*rest d_model"]:
        if layer == self.n_layers:
            return h
        return h + h @ self.weight[layer] + self.bias[layer]

    def check(self, model: TransformerBridge) -> None:
        """Refuse a lens made for another model shape."""
        if self.n_layers != model.cfg.n_layers or self.weight.shape[1] != model.cfg.d_model:
            raise UserError(
                f"tuned lens has {self.n_layers} layers x d_model {self.weight.shape[1]}, the "
                f"model {model.cfg.n_layers} x {model.cfg.d_model}: train a lens for this model "
                "(interp lens RUN_DIR --tuned)"
            )

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        path = Path(path)
        tensors = {
            "weight": self.weight.detach().cpu().contiguous(),
            "bias": self.bias.detach().cpu().contiguous(),
        }
        with atomic_path(path) as tmp:
            tmp.write_bytes(safetensors_bytes(tensors, metadata or {}))

    @classmethod
    def load(cls, path: str | Path) -> TunedLens:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"tuned lens {path} not found: make it with `interp lens RUN_DIR --tuned`"
            )
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(
                f"tuned lens {path} is truncated or corrupt ({e}): retrain it"
            ) from None
        if set(state) != {"weight", "bias"} or state["weight"].ndim != 3:
            raise UserError(f"{path} is not a tuned lens (keys {sorted(state)}): retrain it")
        lens = cls(state["weight"].shape[0], state["weight"].shape[1])
        lens.load_state_dict(state)
        return lens


def lens_stack(
    model: TransformerBridge,
    resid: Float[Tensor, "layer *rest d_model"],
    translator: TunedLens | None = None,
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "layer *rest d_vocab"]:
    """The generic lens: translate each layer's stream, final LayerNorm with its statistics
    recomputed on that stream, unembed. `resid[i]` is the stream at depth `layers[i]` (default
    0..n_layers); `translator=None` is the identity, i.e. the logit lens."""
    layers = list(range(resid.shape[0])) if layers is None else list(layers)
    if len(layers) != resid.shape[0]:
        raise ValueError(f"{len(layers)} layer indices for a stack of {resid.shape[0]}")
    out = []
    for i, layer in enumerate(layers):
        h = resid[i] if translator is None else translator(resid[i], layer)
        flat = h.reshape(1, -1, h.shape[-1])  # [1, n, d_model]: ln_final acts per row
        out.append(model.unembed(model.ln_final(flat)).reshape(*h.shape[:-1], -1))
    return torch.stack(out)


def lens_logits(
    model: TransformerBridge,
    cache_or_tokens: ActivationCache | Int[Tensor, "batch pos"],
    layer: int,
    positions: int | Int[Tensor, " batch"],
    translator: TunedLens | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """Lens logits at depth `layer` (0 = embeddings, n_layers = the model's output), at one
    position per row (an int for all rows, or a tensor of per-row positions). For notebooks:

        lens_logits(run.model, tokens, layer=1, positions=torch.tensor([e.a_last for e in exs]))
    """
    n_layers = model.cfg.n_layers
    if not -n_layers - 1 <= layer <= n_layers:
        raise UserError(f"layer {layer} out of range: use 0 (embeddings) .. {n_layers} (output)")
    layer %= n_layers + 1
    stack = residual_stack(model, cache_or_tokens)  # [layer, batch, pos, d_model]
    batch = stack.shape[1]
    pos = torch.as_tensor(positions, device=stack.device).expand(batch) % stack.shape[2]
    h = stack[layer, torch.arange(batch, device=stack.device), pos]  # [batch, d_model]
    return lens_stack(model, h[None], translator, layers=[layer])[0]


# ---------------------------------------------------------------------------------------------
# Training the tuned lens


@dataclass(frozen=True)
class TunedLensOptions:
    """How the tuned lens is trained (Adam on the summed per-layer KL, sampled token batches)."""

    steps: int = 500  # optimiser steps
    lr: float = 3e-3  # Adam learning rate
    batch_tokens: int = 512  # token positions per step
    heldout_frac: float = 0.1  # fraction of people (all their documents) held out to measure KL
    seed: int = 0  # offset on the run seed (stats.run_seed) of the held-out split and batches


def split_docs(
    docs: Sequence[Example], heldout_frac: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded person-disjoint split of documents into (fit, held-out): `heldout_frac` of the
    people (at least one, never all) with every document about them are held out.

    A split by document would leave a held-out person's other paraphrases in the fit set, so the
    held-out KL would be measured on facts the translator has already seen; holding out whole
    people measures it on facts it never saw. Documents about no person (`person` < 0) go to
    the fit set.
    """
    people = sorted({d.person for d in docs if d.person >= 0})
    if len(people) < 2:
        raise UserError(
            f"the tuned lens needs documents about at least 2 people to hold some out, got "
            f"{len(people)}: use a world with more people"
        )
    random.Random(seed).shuffle(people)
    n_out = min(len(people) - 1, max(1, round(heldout_frac * len(people))))
    held_people = set(people[:n_out])
    fit = [d for d in docs if d.person not in held_people]
    return fit, [d for d in docs if d.person in held_people]


@torch.no_grad()
def doc_streams(
    model: TransformerBridge, docs: Sequence[Example], progress: bool = False
) -> tuple[Float[Tensor, "layer n d_model"], Float[Tensor, "n d_vocab"]]:
    """Residual streams at every real (non-pad) position of `docs`, and the model's final
    log-probabilities there."""
    device = next(model.parameters()).device
    streams, finals = [], []
    for s in tqdm(range(0, len(docs), BATCH), desc="lens streams", disable=not progress):
        toks, lengths = pad_batch([d.tokens for d in docs[s : s + BATCH]], device=device)
        stack = residual_stack(model, toks)  # [layer, batch, pos, d_model]
        real = torch.arange(toks.shape[1], device=device)[None] < lengths[:, None]  # [batch, pos]
        streams.append(stack[:, real])  # [layer, n_real, d_model]
        finals.append(
            lens_stack(model, stack[-1:, real], layers=[model.cfg.n_layers])[0].log_softmax(-1)
        )
    return torch.cat(streams, dim=1), torch.cat(finals)


def kl_to_final(
    model: TransformerBridge,
    streams: Float[Tensor, "layer n d_model"],
    final_logp: Float[Tensor, "n d_vocab"],
    translator: TunedLens | None = None,
) -> Float[Tensor, " layer"]:
    """Mean over positions of KL(final distribution || lens distribution), per layer (nats)."""
    logp = lens_stack(model, streams, translator).log_softmax(-1)  # [layer, n, d_vocab]
    return (final_logp.exp() * (final_logp - logp)).sum(-1).mean(-1)


def fit_tuned_lens(
    model: TransformerBridge,
    docs: Sequence[Example],
    options: TunedLensOptions = TunedLensOptions(),
    progress: bool = True,
) -> tuple[TunedLens, dict[str, list[float]]]:
    """Train a tuned lens on `docs` (all real positions) minus a held-out split of people.

    Returns the lens and per-layer KL to the final distribution on the held-out documents for the
    logit lens (identity) and the tuned lens, plus the tuned lens's KL on the fitted documents.
    """
    fit, held = split_docs(docs, options.heldout_frac, options.seed)
    streams, final_logp = doc_streams(model, fit, progress)
    h_streams, h_final = doc_streams(model, held)
    device = streams.device
    n_layers = model.cfg.n_layers
    lens = TunedLens(n_layers, model.cfg.d_model).to(device)
    opt = torch.optim.Adam(lens.parameters(), lr=options.lr)
    g = torch.Generator().manual_seed(options.seed)
    model.eval()
    with frozen(model):
        for _ in tqdm(range(options.steps), desc="tuned lens", disable=not progress):
            idx = torch.randint(streams.shape[1], (options.batch_tokens,), generator=g).to(device)
            kl = kl_to_final(model, streams[:n_layers, idx], final_logp[idx], lens)
            opt.zero_grad(set_to_none=True)
            kl.sum().backward()
            opt.step()
        with torch.no_grad():
            info = {
                "kl_logit_heldout": kl_to_final(model, h_streams, h_final).tolist(),
                "kl_tuned_heldout": kl_to_final(model, h_streams, h_final, lens).tolist(),
                "kl_tuned_fit": kl_to_final(model, streams, final_logp, lens).tolist(),
            }
    info["n_tokens_fit"] = [float(streams.shape[1])]
    info["n_tokens_heldout"] = [float(h_streams.shape[1])]
    return lens.eval(), info
