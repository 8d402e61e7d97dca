"""Kitouni et al.'s two-stream encoder-decoder for MLM-U, as a kit model with TransformerLens
hook points (`model.query_layers > 0`).

Kitouni et al. (arXiv 2406.05183, appendix G) train MLM-U on an encoder-decoder, not on one
stack: the content stream (the encoder, `blocks`) reads the unmasked tokens only, and the query
stream (the decoder, `query_blocks`) holds one learned vector at every position, whose position
enters through rotary attention, cross-attending to the content stream's last layer; each masked
token is predicted at its own position of the query stream. A masked position is never attended
by anything, so the token under a mask changes no output, and a query position sees only its own
position and the unmasked content: the query stream asks "which token is at position i, given
the rest?" with no state of its own to carry the answer.

The model takes the kit's masked-batch call, `model(tokens, attention_mask=keep,
position_ids=pos)` (`interp.objectives.masking.keyed_forward`), where `keep` marks the
positions that may be attended (no <mask>, no padding); without `attention_mask` every token
but <mask> is attended. Its attention has a `causal` flag that is always False, so
`bidirectional(model)` serves it unchanged; it has no causal head and no causal mode, so only
the masking objectives that read each masked token at its own position and never attend masks
(`mlm`, `mlm_u`) train it (`interp.config.validate` refuses the rest).

TransformerLens's hook machinery (`HookedRootModule`, `HookPoint`) names every site:
`hook_embed`; per content block `blocks.{l}.hook_resid_pre`, `.attn.hook_attn_scores` (scaled,
masked, before the softmax), `.attn.hook_pattern`, `.hook_attn_out`, `.hook_mlp_out`,
`.hook_resid_post`; `hook_memory` (the content stream as the query stream reads it); the same
sites per query block under `query_blocks.{l}`; `hook_final` (the query stream before the
unembedding). So `run_with_cache`, `run_with_hooks` and `model.hooks(...)` work as on a
`HookedTransformer`. `W_Q` and `W_K` stack the content stream's self-attention, [layer, head,
d_model, d_head] (`interp.analysis.qk`); the query stream's cross-attention has queries and keys
in different spaces, where a symmetry score means nothing. The instruments written for a causal
single stack (lens, patching, probes, the update tests, selective prediction) refuse this model
in one line (`interp.analysis.Instrument.run`).

Initialisation is PyTorch's default for each layer (as in
`experiments/encoder_decoder_retrieval.py`, which established the recipe), drawn under
`torch.random.fork_rng` from `seed`: the same seed gives bitwise the same weights and the
caller's global RNG is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.data.tokenizer import MASK


@dataclass(frozen=True)
class EncoderDecoderConfig:
    """The shape of the model, in TransformerLens's vocabulary (`model.cfg.n_layers` is the
    content stream's depth, as instruments that walk `blocks` expect)."""

    n_layers: int
    n_query_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str = "gelu"

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


ACTS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU, "gelu_new": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU,
    "silu": nn.SiLU,
}  # fmt: skip


def rotary(x: Float[Tensor, "b head pos d"], pos: Int[Tensor, "b pos"]) -> Tensor:
    """Rotary position embedding of x at positions `pos` (pairs of channels rotated)."""
    d = x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device).float() / d))
    ang = pos[:, None, :, None].float() * inv
    c, s = ang.cos(), ang.sin()
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2)


class Attention(nn.Module):
    """Multi-head attention of queries from `xq` over keys and values from `xkv` (the same
    tensor for self-attention), rotary on both; `keep` says which key positions may be
    attended."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.causal = False  # never causal: the flag `interp.objectives.masking` sets and restores
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()

    def forward(
        self, xq: Tensor, xkv: Tensor, keep: Bool[Tensor, "b pos"], pos: Int[Tensor, "b pos"]
    ) -> Tensor:
        b, t, d = xq.shape
        q = self.q(xq).view(b, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(xkv).view(b, t, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, pos), rotary(k, pos)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = self.hook_attn_scores(scores.masked_fill(~keep[:, None, None, :], -1e9))
        att = self.hook_pattern(scores.softmax(-1))
        return self.o((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN attention (self-attention, or cross-attention to `memory`) and an MLP, with the
    residual-stream hook points of a TransformerLens block."""

    def __init__(self, cfg: EncoderDecoderConfig, cross: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ln_mem = nn.LayerNorm(d) if cross else None
        self.attn = Attention(d, cfg.n_heads)
        act = ACTS[cfg.act_fn]()
        self.mlp = nn.Sequential(nn.Linear(d, cfg.d_mlp), act, nn.Linear(cfg.d_mlp, d))
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor, memory: Tensor | None, keep: Tensor, pos: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        h = self.ln1(x)
        kv = h if memory is None or self.ln_mem is None else self.ln_mem(memory)
        x = x + self.hook_attn_out(self.attn(h, kv, keep, pos))
        x = x + self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x)


class EncoderDecoder(HookedRootModule):
    """The content stream (self-attention over the unmasked tokens) and the query stream (a
    learned vector at every position, cross-attending to the content stream's last layer);
    logits at every position, meaningful at the masked ones."""

    def __init__(self, cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.d_vocab, d)
        self.query = nn.Parameter(torch.randn(d) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg, cross=False) for _ in range(cfg.n_layers))
        self.query_blocks = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_query_layers))
        self.ln_enc, self.ln_final = nn.LayerNorm(d), nn.LayerNorm(d)
        self.unembed = nn.Linear(d, cfg.d_vocab)
        self.hook_embed, self.hook_memory, self.hook_final = HookPoint(), HookPoint(), HookPoint()
        self.setup()  # names every HookPoint for TransformerLens's hook API

    def forward(
        self,
        tokens: Int[Tensor, "b pos"],
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        **_: object,
    ) -> Float[Tensor, "b pos vocab"]:
        """Logits at every position. `attention_mask` (1 = may be attended) defaults to every
        token but <mask>; `position_ids` to 0..pos-1."""
        b, t = tokens.shape
        keep = (tokens != MASK) if attention_mask is None else attention_mask.bool()
        if position_ids is None:
            pos = torch.arange(t, device=tokens.device)[None].expand(b, t)
        else:
            pos = position_ids.expand(b, t)
        x = self.hook_embed(self.embed(tokens))
        for block in self.blocks:
            x = block(x, None, keep, pos)
        memory = self.hook_memory(self.ln_enc(x))
        q = self.query.expand(b, t, -1)
        for block in self.query_blocks:
            q = block(q, memory, keep, pos)
        return self.unembed(self.hook_final(self.ln_final(q)))

    def _heads(self, rows: Tensor) -> Tensor:
        """[heads * d_head, d_model] rows of a projection as [head, d_model, d_head]."""
        c = self.cfg
        return rows.view(c.n_heads, c.d_head, c.d_model).transpose(-1, -2)

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:  # noqa: N802 (TL's name)
        """The content stream's query weights, stacked over layers (biases apart)."""
        return torch.stack([self._heads(a.q.weight) for a in self._content_attention()])

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:  # noqa: N802 (TL's name)
        """The content stream's key weights, stacked over layers (biases apart)."""
        d = self.cfg.d_model
        return torch.stack([self._heads(a.kv.weight[:d]) for a in self._content_attention()])

    def _content_attention(self) -> list[Attention]:
        return [cast(Block, b).attn for b in self.blocks]


def build_encoder_decoder(
    n_layers: int, n_query_layers: int, d_model: int, n_heads: int, d_mlp: int, d_vocab: int,
    n_ctx: int, act_fn: str, seed: int,
) -> EncoderDecoder:  # fmt: skip
    """A freshly initialised model, bitwise the same for the same arguments; torch's global RNG
    is left as it was."""
    cfg = EncoderDecoderConfig(n_layers, n_query_layers, d_model, n_heads, d_mlp, d_vocab, n_ctx,
                               act_fn)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EncoderDecoder(cfg)
