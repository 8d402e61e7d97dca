"""The small GPT: a TransformerLens `TransformerBridge` over a TL-native model.

`build_model` boots `TransformerBridge.boot_native` from a `ModelConfig`, so every hook that
TransformerLens users know (`blocks.{l}.hook_resid_pre`, `hook_attn_out`, `hook_mlp_out`, ...) is
there for the instruments. Under the bridge, even `model.original_model` (TL's `NativeModel`)
has every submodule wrapped in a hook-dispatching bridge component, so training and the heavy
analysis loops call `raw_forward(model)`: the same arithmetic as `NativeModel.forward`, on the
same parameters, through the plain `nn.Linear` / `nn.LayerNorm` modules under the wrappers
(`tests/test_train.py` checks it against the bridge's logits, masks and bidirectional attention
included). Models it does not cover (gated MLPs, attention-only, soft caps) use
`model.original_model` unchanged.

Given the dataset's tokenizer, `build_model` attaches it (wrapped by
`interp.data.tokenizer.hf_tokenizer`), so the TransformerLens idioms work on a string:
`model.to_tokens("xisalo raditu is the")` (with the leading <bos> the training data has),
`to_str_tokens`, `to_string`, `generate`, `run_with_cache("...")`. `interp.runs.load_run` does
this for every loaded run.

Weights are saved as safetensors under TransformerLens's parameter names (`embed.weight`,
`blocks.0.attn.q.weight`, ...). Loading checks every key and shape against the config and never
unpickles anything.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from interp.attention import attach
from interp.config import ModelConfig
from interp.data.dataset import pad_batch
from interp.data.tokenizer import SPECIALS, UNK, UnknownWordWarning, hf_tokenizer
from interp.encoder_decoder import EncoderDecoder, build_encoder_decoder
from interp.errors import UserError
from interp.files import atomic_path, safetensors_bytes


def bridge_config(cfg: ModelConfig, d_vocab: int, seed: int) -> TransformerBridgeConfig:
    """The TransformerBridgeConfig for our ModelConfig (d_vocab set explicitly, as 4.x needs)."""
    return TransformerBridgeConfig(
        d_model=cfg.d_model,
        d_head=cfg.resolved_d_head,
        n_layers=cfg.n_layers,
        n_ctx=cfg.n_ctx,
        n_heads=cfg.n_heads,
        d_vocab=d_vocab,
        d_mlp=cfg.d_mlp,
        act_fn=cfg.act_fn,
        normalization_type=cfg.normalization,
        positional_embedding_type=cfg.positional_embedding,
        seed=seed,
        init_mode="gpt2",
    )


def build_model(
    cfg: ModelConfig,
    d_vocab: int,
    seed: int,
    device: str = "cpu",
    tokenizer: Tokenizer | None = None,
) -> TransformerBridge | EncoderDecoder:
    """A freshly initialised model; the same (cfg, d_vocab, seed) gives bitwise the same weights.

    The initialisation draws from a generator of its own seeded with `seed` (TransformerLens's
    `boot_native` with `cfg.seed` set), never from torch's global RNG: building or loading a
    model leaves a notebook user's `torch.manual_seed` state as it was. With `tokenizer` (the
    dataset's), the model gets it as a TransformerLens tokenizer (see the module docstring).
    With `cfg.query_layers` > 0 the model is Kitouni et al.'s encoder-decoder instead
    (`interp.encoder_decoder`: TransformerLens hook points, no tokenizer attached).
    """
    if cfg.query_layers:  # Kitouni et al.'s two-stream encoder-decoder (interp.encoder_decoder)
        ed = build_encoder_decoder(
            cfg.n_layers, cfg.query_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, d_vocab,
            cfg.n_ctx, cfg.act_fn, seed,
        )  # fmt: skip
        return ed if device == "cpu" else ed.to(device)
    hf = None
    if tokenizer is not None:
        hf = hf_tokenizer(tokenizer)
        if len(hf) != d_vocab:
            raise ValueError(f"tokenizer has {len(hf)} tokens but the model d_vocab={d_vocab}")
    with warnings.catch_warnings():  # TL probes the tokenizer with "a", a word some worlds lack
        warnings.simplefilter("ignore", UnknownWordWarning)
        model = TransformerBridge.boot_native(bridge_config(cfg, d_vocab, seed), tokenizer=hf)  # type: ignore[attr-defined]
    attach(model)  # hook_attn_scores before the softmax, per-block OV / QK (interp.attention)
    if hf is not None:
        strict_single_token(model)
    return model if device == "cpu" else model.to(device)


def build_bridge(
    cfg: ModelConfig, d_vocab: int, seed: int, device: str = "cpu"
) -> TransformerBridge:
    """`build_model` for code that reads a single stack (a run's own initial weights, for the
    instruments' random-initialisation controls); refuses the encoder-decoder in one line."""
    model = build_model(cfg, d_vocab, seed, device)
    if not isinstance(model, TransformerBridge):
        raise UserError(
            f"this reads a single stack, not the encoder-decoder (model.query_layers="
            f"{cfg.query_layers}): set model.query_layers=0"
        )
    return model


def strict_single_token(model: TransformerBridge) -> None:
    """`model.to_single_token(word)` raises for a word the vocabulary does not know, instead of
    returning <unk>'s id as if it were the word's (TransformerLens's method, otherwise)."""
    base = model.to_single_token

    def to_single_token(string: str) -> int:
        token = int(base(string))
        if token == UNK and string.strip() != SPECIALS[UNK]:
            raise ValueError(
                f"{string!r} is not in the run's vocabulary (it reads as <unk>): the world's "
                "words are lower-case and a full stop is a word of its own"
            )
        return token

    model.to_single_token = to_single_token  # type: ignore[method-assign]


def resolve_device(device: str) -> str:
    """'auto' means CUDA when present, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available: use --device cpu")
    return device


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the state dict as safetensors atomically (temp file, then rename)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`, refusing truncated or mismatched files in one line."""
    if not path.is_file():
        raise UserError(f"weights file {path} not found: train the run first (interp train)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"weights file {path} is truncated or corrupt ({e}): retrain or restore it"
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise UserError(
            f"weights file {path} does not match the run's config (missing {missing[:3]}, "
            f"unexpected {extra[:3]}): use the config.json that made it"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise UserError(
                f"weights file {path} does not match the run's config: {k} has shape "
                f"{tuple(state[k].shape)}, config expects {tuple(v.shape)}"
            )
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()})


# ---------------------------------------------------------------------------------------------
# The forward pass without hook dispatch.


def raw(m: Any) -> Any:
    """The module a bridge component wraps (the module itself when it wraps nothing)."""
    return getattr(m, "original_component", m)


def supports_raw(net: torch.nn.Module) -> bool:
    """True when `raw_forward` computes exactly what `net` (a NativeModel) computes."""
    layers = getattr(net, "layers", None)
    if layers is None or not hasattr(net, "ln_out") or not hasattr(net, "tok_embed"):
        return False
    if float(getattr(net, "output_logits_soft_cap", -1.0)) > 0:
        return False
    for block in layers:
        att, b = raw(block.attn), raw(block)
        if (
            not isinstance(getattr(att, "causal", None), bool)
            or float(att.attn_scores_soft_cap) > 0
        ):
            return False
        if b.cfg.attn_only or not hasattr(raw(block.mlp), "fc_in"):
            return False
    return True


def qkv(
    att: Any, x: Float[Tensor, "batch pos d_model"], positions: Int[Tensor, "#batch pos"]
) -> tuple[
    Float[Tensor, "batch head pos d_head"],
    Float[Tensor, "batch kv_head pos d_head"],
    Float[Tensor, "batch kv_head pos d_head"],
]:
    """Queries, keys, values of a NativeAttention (rotary applied); kv_head < head under
    grouped-query attention, where `attend` repeats keys and values to match."""
    b, s, _ = x.shape
    q = raw(att.q)(x).view(b, s, att.n_heads, att.d_head).transpose(1, 2)  # [b, head, s, d_head]
    k = raw(att.k)(x).view(b, s, att.n_kv_heads, att.d_head).transpose(1, 2)
    v = raw(att.v)(x).view(b, s, att.n_kv_heads, att.d_head).transpose(1, 2)
    if att.rotary is not None:
        q, k = att.rotary.apply_rope(q, k, position_ids=positions)
    return q, k, v


def qkv_fused(att: Any, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`qkv` as one matrix multiply over the concatenated q, k, v weights (as nanoGPT's c_attn):
    one GEMM instead of three forward and backward, the same parameters and gradients."""
    q_, k_, v_ = raw(att.q), raw(att.k), raw(att.v)
    if att.rotary is not None or att.kv_repeats > 1 or q_.bias is None:
        return qkv(att, x, positions)
    weight = torch.cat([q_.weight, k_.weight, v_.weight])  # [3 * n_heads * d_head, d_model]
    bias = torch.cat([q_.bias, k_.bias, v_.bias])
    b, s, _ = x.shape
    fused = F.linear(x, weight, bias).view(b, s, 3, att.n_heads, att.d_head)
    q, k, v = fused.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, head, pos, d_head]
    return q, k, v


def attend(
    att: Any,
    q: Float[Tensor, "batch head query_pos d_head"],
    k: Float[Tensor, "batch kv_head key_pos d_head"],
    v: Float[Tensor, "batch kv_head key_pos d_head"],
    blocked: Bool[Tensor, "*#mask_batch #query_pos key_pos"],
    empty_rows: bool = True,
) -> Float[Tensor, "batch query_pos d_model"]:
    """NativeAttention's arithmetic on given keys and values: the attention output `attn_out`.

    Queries and keys may differ in length (selective prediction attends from a few soft
    positions to a cached prefix). `blocked` is True where masked and broadcasts against
    [batch, head, query_pos, key_pos] (a [pos, pos] causal mask, or [batch, 1, 1, key_pos]
    padding); a fully masked query row gives a zero update, as in TL. `empty_rows=False`
    promises that no query row is fully masked (a plain causal mask), which skips that fix-up:
    the result is bitwise the same, since exp(-inf) is exactly 0."""
    if att.kv_repeats > 1:
        k = k.repeat_interleave(att.kv_repeats, dim=1)
        v = v.repeat_interleave(att.kv_repeats, dim=1)
    scores = torch.matmul(q, k.transpose(-2, -1)) / att.scale
    pattern = F.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1)
    if empty_rows:
        pattern = pattern.masked_fill(blocked, 0)
    b, _, s, _ = q.shape
    z = torch.matmul(pattern, v)  # [b, head, query_pos, d_head]
    return raw(att.o)(z.transpose(1, 2).reshape(b, s, -1))  # heads concatenated, then W_O


def attend_unmasked(att: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """`attend` with no attention mask beyond the module's own causal flag, through torch's fused
    `scaled_dot_product_attention` (no [pos, pos] score tensor kept for backward: faster and
    smaller, and deterministic on the CPU). Agrees with `attend` to float rounding (~1e-7)."""
    if att.kv_repeats > 1:
        k = k.repeat_interleave(att.kv_repeats, dim=1)
        v = v.repeat_interleave(att.kv_repeats, dim=1)
    z = F.scaled_dot_product_attention(q, k, v, is_causal=bool(att.causal), scale=1.0 / att.scale)
    b, _, s, _ = q.shape
    return raw(att.o)(z.transpose(1, 2).reshape(b, s, -1))


def mlp(block: Any, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """The block's MLP applied to its second normalisation of `h`."""
    m = raw(block.mlp)
    return raw(m.fc_out)(m.act(raw(m.fc_in)(raw(block.ln2)(h))))


def embed_positions(
    net: Any, x: Float[Tensor, "batch pos d_model"], positions: Int[Tensor, "#batch pos"]
) -> Float[Tensor, "batch pos d_model"]:
    """Token embeddings plus learned positional embeddings (unchanged under rotary)."""
    pos = getattr(net, "pos", None)
    return x if pos is None else x + raw(pos)(positions)


def _blocked(att: Any, seq: int, attention_mask: Tensor | None, device: torch.device) -> Tensor:
    if att.causal:
        blocked = torch.triu(torch.ones(seq, seq, dtype=torch.bool, device=device), diagonal=1)
    else:
        blocked = torch.zeros(seq, seq, dtype=torch.bool, device=device)
    if attention_mask is None:
        return blocked
    if attention_mask.dim() == 2:  # [batch, seq], 1 = attend
        return blocked | ~attention_mask.bool()[:, None, None, :]
    if attention_mask.dim() == 4:
        extra = attention_mask if attention_mask.dtype is torch.bool else attention_mask < -1.0
        return blocked | extra
    raise ValueError(f"attention_mask must be 2D or 4D, got shape {tuple(attention_mask.shape)}")


_PADDED_ONLY = False


@contextlib.contextmanager
def padded_loss() -> Iterator[None]:
    """Inside it, training losses run on the padded [batch, pos] layout (no packing in
    `RawForward.next_token_loss`): for code that hooks per-position activations and indexes
    them by (document, position), such as the update test's per-position decomposition."""
    global _PADDED_ONLY
    before, _PADDED_ONLY = _PADDED_ONLY, True
    try:
        yield
    finally:
        _PADDED_ONLY = before


class RawForward(torch.nn.Module):
    """`NativeModel.forward` computed on the raw modules under the bridge's wrappers.

    Call it like the native model: `logits = fast(tokens)` or
    `fast(tokens, attention_mask=keep)` or `fast(inputs_embeds=x)`. It owns no parameters of its
    own (the native model is its only child), and it reads each attention module's `causal`
    flag at call time, so `interp.objectives.masking.bidirectional` works on it unchanged.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self,
        input_ids: Int[Tensor, "batch pos"] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Int[Tensor, "#batch pos"] | None = None,
        inputs_embeds: Float[Tensor, "batch pos d_model"] | None = None,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        final = self.final_state(input_ids, attention_mask, position_ids, inputs_embeds)
        return raw(self.net.head)(final)  # type: ignore[union-attr]

    def final_state(
        self,
        input_ids: Int[Tensor, "batch pos"] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Int[Tensor, "#batch pos"] | None = None,
        inputs_embeds: Float[Tensor, "batch pos d_model"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream after the last block and the final norm: what the unembedding
        reads (a probe on the last layer reads it too). Same arguments as `forward`."""
        net: Any = self.net
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        h = raw(net.tok_embed)(input_ids) if input_ids is not None else inputs_embeds
        assert h is not None
        b, seq = h.shape[:2]
        if seq > net.cfg.n_ctx:
            raise ValueError(f"input length {seq} exceeds n_ctx={net.cfg.n_ctx}")
        if position_ids is None:
            # one row per position, broadcast over the batch (its backward sums over the batch
            # once, instead of scattering batch x pos rows into the embedding's gradient)
            position_ids = torch.arange(seq, device=h.device).unsqueeze(0)
        h = embed_positions(net, h, position_ids)
        position_ids = position_ids.expand(b, -1)
        for block in net.layers:
            att = raw(block.attn)
            q, k, v = qkv_fused(att, raw(block.ln1)(h), position_ids)
            if attention_mask is None:
                h = h + attend_unmasked(att, q, k, v)
            else:
                h = h + attend(att, q, k, v, _blocked(att, seq, attention_mask, h.device))
            h = h + mlp(block, h)
        return raw(net.ln_out)(h)

    def packs(self) -> bool:
        """Whether `next_token_loss` can skip the padding: causal attention everywhere, and the
        q/k/v layout `qkv_fused` multiplies at once (no rotary, no grouped keys, biases); never
        inside `padded_loss()`."""
        if _PADDED_ONLY:
            return False
        for block in self.net.layers:  # type: ignore[union-attr]
            att = raw(block.attn)
            if not att.causal or att.rotary is not None or att.kv_repeats > 1:
                return False
            if raw(att.q).bias is None:
                return False
        return True

    def next_token_loss(
        self, tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, " batch"]
    ) -> Tensor:
        """Mean next-token cross-entropy over the real tokens of a right-padded batch (what
        `interp.objectives.base.next_token_loss(self(tokens), tokens, lengths)` computes),
        without computing the padding.

        A batch is padded to its longest document, and about 29% of its positions are padding
        on the default and paper_exp1 worlds. Every per-position operation (layer norms, the
        q/k/v, output and MLP matrix multiplies, the unembedding and its softmax) runs here on
        the real tokens only, packed as rows [n_real, d_model]; attention alone needs the
        padded [batch, pos] layout, so each layer scatters its q/k/v rows into it (zeros at the
        padding, which no real query sees under the causal mask and right padding) and gathers
        the attention output back. The unembedding runs only where a next token exists. Same
        function as the padded path, to float rounding (tests/test_train.py checks the loss and
        the gradients), not bitwise: the matrix multiplies run on fewer rows."""
        net: Any = self.net
        b, seq = tokens.shape
        if seq > net.cfg.n_ctx:
            raise ValueError(f"input length {seq} exceeds n_ctx={net.cfg.n_ctx}")
        pos = torch.arange(seq, device=tokens.device)
        real = pos[None, :] < lengths[:, None]  # [batch, pos]
        rows = real.reshape(-1).nonzero().squeeze(1)  # flat [batch * pos] index of real tokens
        row_pos = rows % seq
        # the real tokens as one sequence of rows: h is [1, n_real, d_model]
        h = raw(net.tok_embed)(tokens.reshape(-1).index_select(0, rows))[None]
        h = embed_positions(net, h, row_pos[None])
        for block in net.layers:
            att = raw(block.attn)
            q_, k_, v_ = raw(att.q), raw(att.k), raw(att.v)
            weight = torch.cat([q_.weight, k_.weight, v_.weight])
            bias = torch.cat([q_.bias, k_.bias, v_.bias])
            packed = F.linear(raw(block.ln1)(h[0]), weight, bias)  # [n_real, 3 * d_model]
            full = packed.new_zeros(b * seq, packed.shape[1]).index_copy(0, rows, packed)
            q, k, v = full.view(b, seq, 3, att.n_heads, att.d_head).permute(2, 0, 3, 1, 4).unbind(0)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / att.scale)
            z = z.transpose(1, 2).reshape(b * seq, -1).index_select(0, rows)
            h = h + raw(att.o)(z)[None]
            h = h + mlp(block, h)
        # a real token has a next token unless it is its document's last
        has_next = row_pos < lengths.repeat_interleave(lengths) - 1
        src = has_next.nonzero().squeeze(1)
        logits = raw(net.head)(raw(net.ln_out)(h[0].index_select(0, src)))
        targets = tokens.reshape(-1).index_select(0, rows.index_select(0, src) + 1)
        return F.cross_entropy(logits, targets)


@torch.no_grad()
def greedy_decode(net: Any, tokens: Tensor, n_new: int, eos: int) -> Tensor:
    """Greedy continuation of equal-length prompts by up to `n_new` tokens with a key-value
    cache: the prompt is run once, then each step runs only the newest token against the cached
    keys and values of every layer (instead of the whole sequence again), and unembeds only the
    last position. A row that has emitted `eos` keeps emitting it; decoding stops when every row
    has. Returns [batch, prompt + generated] token ids. `net` must pass `supports_raw` and be
    causal (what `RawForward` computes, step by step)."""
    b, width = tokens.shape
    if width + n_new - 1 > net.cfg.n_ctx:
        raise ValueError(f"input length {width + n_new - 1} exceeds n_ctx={net.cfg.n_ctx}")
    keys: list[Tensor] = []
    values: list[Tensor] = []
    done = torch.zeros(b, dtype=torch.bool, device=tokens.device)
    out, new, start = tokens, tokens, 0
    for _ in range(n_new):
        positions = torch.arange(start, start + new.shape[1], device=tokens.device)
        positions = positions.unsqueeze(0).expand(b, -1)
        h = embed_positions(net, raw(net.tok_embed)(new), positions)
        for i, block in enumerate(net.layers):
            att = raw(block.attn)
            q, k, v = qkv(att, raw(block.ln1)(h), positions)
            if start == 0:  # the prompt: plain causal attention, cache its keys and values
                keys.append(k)
                values.append(v)
                h = h + attend_unmasked(att, q, k, v)
            else:  # one new token: it sees every cached position and itself
                keys[i] = torch.cat([keys[i], k], dim=2)
                values[i] = torch.cat([values[i], v], dim=2)
                kk, vv = keys[i], values[i]
                if att.kv_repeats > 1:
                    kk = kk.repeat_interleave(att.kv_repeats, dim=1)
                    vv = vv.repeat_interleave(att.kv_repeats, dim=1)
                z = F.scaled_dot_product_attention(q, kk, vv, scale=1.0 / att.scale)
                h = h + raw(att.o)(z.transpose(1, 2).reshape(b, 1, -1))
            h = h + mlp(block, h)
        nxt = raw(net.head)(raw(net.ln_out)(h[:, -1])).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        done |= nxt == eos
        out = torch.cat([out, nxt[:, None]], dim=1)
        start += new.shape[1]
        new = nxt[:, None]
        if bool(done.all()):
            break  # further steps would only add eos
    return out


def raw_forward(model: torch.nn.Module) -> torch.nn.Module:
    """The fastest exact forward pass of a kit model (a bridge or its `original_model`)."""
    net = getattr(model, "original_model", model)
    return RawForward(net) if supports_raw(net) else net


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters of `module` need no gradient inside the block (a lens or a soft prompt trains,
    not the model); each parameter's `requires_grad` is restored after, even on an error."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# The residual stream at every depth: the one reader every instrument uses


def resid_hook_names(n_layers: int) -> list[str]:
    """The accumulated residual stream's hooks, as TransformerLens's `accumulated_resid` reads
    them: every block's resid_pre (depth 0 = the embeddings), then the last block's resid_post."""
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


def residual_stack(
    model: TransformerBridge, cache_or_tokens: ActivationCache | Int[Tensor, "batch pos"]
) -> Float[Tensor, "layer batch pos d_model"]:
    """The residual stream at every depth (layer 0 = embeddings ... n_layers = after the last
    block), from a cache or by running the tokens (no gradient): TransformerLens's
    `ActivationCache.accumulated_resid`."""
    if isinstance(cache_or_tokens, ActivationCache):
        cache = cache_or_tokens
    else:
        names = set(resid_hook_names(model.cfg.n_layers))
        with torch.no_grad():
            _, cache = model.run_with_cache(cache_or_tokens, names_filter=lambda n: n in names)
    stack = cache.accumulated_resid(layer=None, incl_mid=False, apply_ln=False)
    assert isinstance(stack, Tensor)  # a tuple only with return_labels=True
    return stack


@torch.no_grad()
def resid_at(
    model: TransformerBridge, seqs: Any, positions: Any
) -> Float[Tensor, "layer n d_model"]:
    """The residual stream of each sequence (right-padded into one batch) at its given position,
    at every depth, as float32 on the CPU."""
    device = next(model.parameters()).device
    tokens, _ = pad_batch([tuple(s) for s in seqs], device=device)
    stack = residual_stack(model, tokens)
    rows = torch.arange(len(seqs), device=device)
    pos = torch.tensor(list(positions), device=device)
    return stack[:, rows, pos].float().cpu()


def save_cache(cache: ActivationCache | dict[str, Tensor], path: str | Path) -> None:
    """Write an activation cache (`run_with_cache`'s) as safetensors, atomically.

    TransformerLens 4's cache holds each activation under its canonical name and its aliases
    (`hook_embed` is `embed.hook_out`), the same tensor twice, which `safetensors.save_file`
    refuses. Each tensor is written once, under its first name; the aliases go in the file's
    metadata, and `load_cache` gives every name back."""
    tensors = cache.cache_dict if isinstance(cache, ActivationCache) else cache
    names: dict[tuple[int, tuple[int, ...], tuple[int, ...], Any], str] = {}
    keep: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in tensors.items():
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        if key in names:
            aliases[name] = names[key]
        else:
            names[key] = name
            keep[name] = t.detach().cpu().contiguous()
    meta = {"aliases": json.dumps(aliases, sort_keys=True)}
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors_bytes(keep, meta))


def load_cache(path: str | Path) -> dict[str, Tensor]:
    """A cache `save_cache` wrote: {hook name: tensor}, aliases included (the same tensor)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cache file {path} is not one save_cache wrote ({e})") from None
    for alias, name in aliases.items():
        out[alias] = out[name]
    return out
