"""Parameter state of a model, for experiments that change weights and put them back: the
trainable parameters under their TransformerLens names, snapshots, bitwise restore, and groups
(token and position embeddings; each block's attention, MLP and LayerNorms; the final LayerNorm;
the unembedding) with the norm of a change per group. Used by the gradient-update test.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

_TRAINABLE: weakref.WeakKeyDictionary[TransformerBridge, dict[str, torch.nn.Parameter]] = (
    weakref.WeakKeyDictionary()
)


def trainable(model: TransformerBridge) -> dict[str, torch.nn.Parameter]:
    """The model's parameters under their TransformerLens state-dict names (aliases dropped).

    Memoised per model: the bridge's `state_dict` translates every key (about 10 ms a call) and
    the update test asks thousands of times; the Parameter objects themselves never change.
    """
    if model in _TRAINABLE:
        return dict(_TRAINABLE[model])
    out, seen = {}, set()
    for k, v in model.state_dict(keep_vars=True).items():
        if isinstance(v, torch.nn.Parameter) and v.requires_grad and v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            out[k] = v
    _TRAINABLE[model] = out
    return dict(out)


def snapshot(model: TransformerBridge) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in trainable(model).items()}


@torch.no_grad()
def load_params(model: TransformerBridge, values: dict[str, Tensor]) -> None:
    """Copy `values` into the live parameters named by its keys (others untouched)."""
    live = trainable(model)
    for k, v in values.items():
        live[k].copy_(v)


@contextmanager
def restored(model: TransformerBridge) -> Iterator[dict[str, Tensor]]:
    """Yield a snapshot of the parameters; put them back bitwise on exit (even on error)."""
    state = snapshot(model)
    try:
        yield state
    finally:
        load_params(model, state)
        for p in model.parameters():
            p.grad = None
        model.eval()


def group_of(key: str) -> str:
    """Group of a state-dict key: embed, pos_embed, L{l}.attn/.mlp/.ln, ln_final, unembed."""
    parts = key.split(".")
    if parts[0] == "blocks":
        sub = parts[2]
        return f"L{parts[1]}.{'ln' if sub.startswith('ln') else sub}"
    return parts[0]


def _group_rank(name: str) -> tuple[int, int, int]:
    head = {"embed": 0, "pos_embed": 1}
    if name in head:
        return (0, head[name], 0)
    if name.startswith("L"):
        layer, kind = name[1:].split(".")
        return (1, int(layer), {"attn": 0, "mlp": 1, "ln": 2}.get(kind, 3))
    return (2, {"ln_final": 0, "unembed": 1}.get(name, 2), 0)


def parameter_groups(model: TransformerBridge) -> dict[str, list[str]]:
    """Group name -> state-dict keys, in model order (every trainable parameter in one group)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for k in trainable(model):
        groups[group_of(k)].append(k)
    return {g: groups[g] for g in sorted(groups, key=_group_rank)}


def group_norms(
    before: dict[str, Tensor], after: dict[str, Tensor], groups: dict[str, list[str]]
) -> Float[np.ndarray, " group"]:
    """|Delta theta| restricted to each group (float64 sums of squares, then the root)."""
    return np.array(
        [
            np.sqrt(sum(float(((after[k].double() - before[k].double()) ** 2).sum()) for k in keys))
            for keys in groups.values()
        ]
    )
