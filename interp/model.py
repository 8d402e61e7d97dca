"""The small GPT: a TransformerLens `TransformerBridge` over a TL-native model.

`build_model` boots `TransformerBridge.boot_native` from a `ModelConfig`, so every hook that
TransformerLens users know (`blocks.{l}.hook_resid_pre`, `hook_attn_out`, `hook_mlp_out`, ...) is
there for the instruments. Training calls the wrapped `NativeModel` (`model.original_model`),
which shares the same parameters but skips the hook machinery: same function, fewer Python calls.

Weights are saved as safetensors under TransformerLens's parameter names (`embed.weight`,
`blocks.0.attn.q.weight`, ...). Loading checks every key and shape against the config and never
unpickles anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from interp.config import ModelConfig
from interp.errors import UserError


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


def build_model(cfg: ModelConfig, d_vocab: int, seed: int, device: str = "cpu") -> TransformerBridge:
    """A freshly initialised model; the same (cfg, d_vocab, seed) gives bitwise the same weights."""
    torch.manual_seed(seed)
    model = TransformerBridge.boot_native(bridge_config(cfg, d_vocab, seed))
    return model if device == "cpu" else model.to(device)


def resolve_device(device: str) -> str:
    """'auto' means CUDA when present, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available: use --device cpu")
    return device


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the state dict as safetensors atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    tmp.replace(path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`, refusing truncated or mismatched files in one line."""
    if not path.is_file():
        raise UserError(f"weights file {path} not found: train the run first (interp train)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"weights file {path} is truncated or corrupt ({e}): retrain or restore it") from None
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
