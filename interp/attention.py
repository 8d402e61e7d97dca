"""Attention hooks that take effect, as TransformerLens's HookedTransformer had them.

TransformerLens 4's bridge around a native model fires `hook_attn_scores` after the attention
has been computed, with the post-softmax pattern (the same tensor as `hook_pattern`): a hook
that writes -inf there (an attention knockout) changes nothing, silently. `hook_pattern` does
take effect (the native attention applies it before the value product). Every kit model
(`interp.model.build_model`) gets `KitAttention` instead, whose forward is the native one with
`hook_attn_scores` where HookedTransformer fired it: on the scaled scores after the causal (or
key) mask and before the softmax, so a knockout there changes the output; a row whose scores
are all -inf gives a zero update (HookedTransformer's NaN-to-zero). The bridge's late firing is
switched off (the attention returns no pattern to fire it with). Without a hook the arithmetic
is the native module's, bitwise.

Each block's attention also gets `OV` and `QK` (`KitAttentionBridge`): the layer's slice of
`model.OV` / `model.QK`, as HookedTransformer's `model.blocks[l].attn.OV` was.

Not provided, and why: `hook_result` per head (`model.set_use_attn_result(True)` raises
NotImplementedError on native models in TransformerLens 4); a head's contribution to the
residual stream is `hook_z[..., h, :] @ W_O[h]`, computed from the cached `hook_z` and the
block's `attn.W_O` (the README's TransformerLens section shows it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens import FactoredMatrix
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
from transformer_lens.model_bridge.sources.native.model import NativeAttention, apply_softcap


class KitAttention(NativeAttention):
    """`NativeAttention` with `hook_attn_scores` on the masked, pre-softmax scores."""

    scores_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pattern_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        batch, seq, _ = hidden_states.shape
        q = self.q(hidden_states).view(batch, seq, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
        v = self.v(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary.apply_rope(q, k, position_ids=position_ids)
        if self.kv_repeats > 1:
            k = k.repeat_interleave(self.kv_repeats, dim=1)
            v = v.repeat_interleave(self.kv_repeats, dim=1)
        scores = torch.matmul(q, k.transpose(-2, -1)) / self.scale
        scores = apply_softcap(scores, self.attn_scores_soft_cap)
        if self.causal:
            block_mask = self.causal_mask[:seq, :seq]
        else:
            block_mask = torch.zeros(seq, seq, dtype=torch.bool, device=scores.device)
        if attention_mask is not None:
            block_mask = self._combine_attention_mask(block_mask, attention_mask, batch=batch)
        scores = scores.masked_fill(block_mask, float("-inf"))
        hooked = self.scores_fn is not None and _has_hooks(self.scores_fn)
        if hooked:
            scores = self.scores_fn(scores)  # type: ignore[misc]
        pattern = F.softmax(scores, dim=-1)
        pattern = pattern.masked_fill(block_mask, 0.0)
        if hooked:  # a row knocked out entirely: a zero update, as in HookedTransformer
            pattern = torch.nan_to_num(pattern, nan=0.0)
        if pattern_fn is not None:
            pattern = pattern_fn(pattern)
        attn = torch.matmul(pattern, v).transpose(1, 2).contiguous().view(batch, seq, -1)
        return self.o(attn), None


class KitAttentionBridge(AttentionBridge):
    """The bridge's attention with HookedTransformer's per-layer circuits."""

    @property
    def OV(self) -> FactoredMatrix:
        """This layer's OV circuit, [head, d_model, d_model] factored as W_V W_O."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """This layer's QK circuit, [head, d_model, d_model] factored as W_Q W_K^T."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))


def _has_hooks(hook: Any) -> bool:
    return bool(getattr(hook, "_forward_hooks", None)) or bool(
        getattr(hook, "_forward_pre_hooks", None)
    )


def attach(model: Any) -> Any:
    """Give every block of a native TransformerLens model `KitAttention` and
    `KitAttentionBridge` (the same modules and parameters, their class changed): the state dict,
    the outputs and every hook name stay as they were."""
    for block in model.blocks:
        bridge = block.attn
        native = bridge.original_component
        if not isinstance(native, NativeAttention) or not isinstance(bridge, AttentionBridge):
            continue
        native.__class__ = KitAttention
        # not a submodule (the hook point already lives in the bridge): set past nn.Module
        object.__setattr__(native, "scores_fn", bridge.hook_attn_scores)
        bridge.__class__ = KitAttentionBridge
    return model
