"""The batched activation-patching engine: patch every (hook, position) cell of a batch of
corrupted runs with activations from clean runs, and score each patched run.

This is the generic part of causal tracing (Meng et al. 2022; TransformerLens's
`generic_activation_patch`), free of any dataset: tokens, a clean cache, hook names and a metric
in; a grid of metric values out. `interp.analysis.patching` is the reversal-curse study built on
it (corruptions, prompt sets, position names, summaries).

Speed. Every cell is an independent forward pass of the corrupted input, so cells are batched:
the corrupted inputs are stacked, one batch row per (run, hook, position) cell, and one hook per
hook point writes the clean activation into the rows that patch it (TL's
`generic_activation_patch` runs one forward per cell). Runs of different lengths share a batch
under right padding, which a causal model never sees. `batch_size` bounds the rows per forward
pass. `get_act_patch` is TL's `get_act_patch_<act>` on this engine; `tests/test_patching.py`
checks every grid against `transformer_lens.patching` to 1e-5, and a deliberately broken
`_write_rows` must fail that comparison.

The metric (`answer_score`, `patching_metric`) scores the first answer token at the final prompt
position against alternatives, normalised so the corrupted run scores 0 and the clean run 1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from interp.errors import UserError

ACTS = ("resid_pre", "attn_out", "mlp_out")

RowMetric = Callable[
    [Float[Tensor, "batch pos d_vocab"], Int[Tensor, " batch"]], Float[Tensor, " batch"]
]


# --- the metric -----------------------------------------------------------------------------


def answer_score(
    logits: Float[Tensor, "batch pos d_vocab"],
    final: Int[Tensor, " batch"],
    right: Int[Tensor, " batch"],
    wrong: Int[Tensor, "batch n_wrong"],
) -> Float[Tensor, " batch"]:
    """logit[right] - mean logit[wrong] of each row at its final prompt position.

    `wrong` holds the alternative answers' first tokens, -1 for padding: one corrupting answer
    (entity swap: the logit difference) or every other answer of the group (noise).
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    last = logits[rows, final].float()  # batch d_vocab
    valid = (wrong >= 0).float()
    alt = (last.gather(1, wrong.clamp(min=0)) * valid).sum(1) / valid.sum(1)
    return last[rows, right] - alt


def patching_metric(
    logits: Float[Tensor, "batch pos d_vocab"],
    final: Int[Tensor, " batch"],
    right: Int[Tensor, " batch"],
    wrong: Int[Tensor, "batch n_wrong"],
    clean: Float[Tensor, " batch"],
    corrupted: Float[Tensor, " batch"],
) -> Float[Tensor, " batch"]:
    """`answer_score` normalised so the corrupted run scores 0 and the clean run 1."""
    return (answer_score(logits, final, right, wrong) - corrupted) / (clean - corrupted)


# --- the batched patching engine ------------------------------------------------------------


def hook_names(n_layers: int, acts: Sequence[str] = ACTS) -> list[str]:
    """Hook points in act-major order: reshape a [hook] axis to [act, layer]."""
    for a in acts:
        if a not in ACTS:
            raise UserError(f"unknown activation {a!r}: use one of {ACTS}")
    return [f"blocks.{layer}.hook_{a}" for a in acts for layer in range(n_layers)]


def _add_noise(
    noise: Float[Tensor, "batch pos d_model"],
) -> Callable[[Tensor, Any], Tensor]:
    """A hook on `hook_embed` adding `noise` (cut to the batch's width) to the token embeddings."""

    def hook(
        act: Float[Tensor, "batch pos d_model"], hook: Any
    ) -> Float[Tensor, "batch pos d_model"]:
        return act + noise[:, : act.shape[1]]

    return hook


def _write_rows(
    act: Float[Tensor, "batch pos d_model"],
    rows: Int[Tensor, " n"],
    pos: Int[Tensor, " n"],
    clean: Float[Tensor, "n d_model"],
) -> Float[Tensor, "batch pos d_model"]:
    """act[rows[i], pos[i]] = clean[i]: the patch itself (one place, so tests can break it)."""
    act[rows, pos] = clean
    return act


def _patch_hook(
    rows: Int[Tensor, " n"], pos: Int[Tensor, " n"], clean: Float[Tensor, "n d_model"]
) -> Callable[[Tensor, Any], Tensor]:
    """A hook writing the clean activations `clean` into batch rows `rows` at `pos`."""

    def hook(
        act: Float[Tensor, "batch pos d_model"], hook: Any
    ) -> Float[Tensor, "batch pos d_model"]:
        return _write_rows(act, rows, pos, clean)

    return hook


@torch.no_grad()
def cache_activations(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    names: Sequence[str],
    batch_size: int = 512,
) -> dict[str, Float[Tensor, "batch pos d_model"]]:
    """The activations at hook points `names` of a (right-padded) batch, chunked."""
    out: dict[str, list[Tensor]] = defaultdict(list)
    wanted = list(names)
    for s in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[s : s + batch_size], names_filter=wanted)
        for n in wanted:
            out[n].append(cache[n])
    return {n: torch.cat(v) for n, v in out.items()}


@torch.no_grad()
def run_metric(
    model: TransformerBridge,
    tokens: Int[Tensor, "run pos"],
    metric: RowMetric,
    embed_noise: Float[Tensor, "run pos d_model"] | None = None,
    batch_size: int = 512,
) -> Float[Tensor, " run"]:
    """`metric` of each unpatched run (the clean or corrupted baseline)."""
    out = []
    for s in range(0, tokens.shape[0], batch_size):
        idx = torch.arange(s, min(s + batch_size, tokens.shape[0]), device=tokens.device)
        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = (
            [] if embed_noise is None else [("hook_embed", _add_noise(embed_noise[idx]))]
        )
        logits = model.run_with_hooks(tokens[idx], fwd_hooks=hooks)
        out.append(metric(logits, idx))
    return torch.cat(out)


@torch.no_grad()
def patch_cells(
    model: TransformerBridge,
    corrupted_tokens: Int[Tensor, "run pos"],
    clean_cache: Mapping[str, Float[Tensor, "source pos d_model"]],
    names: Sequence[str],
    metric: RowMetric,
    *,
    lengths: Int[Tensor, " run"] | None = None,
    source: Int[Tensor, " run"] | None = None,
    embed_noise: Float[Tensor, "run pos d_model"] | None = None,
    batch_size: int = 512,
    progress: bool = False,
    desc: str = "patching",
) -> Float[Tensor, "run hook pos"]:
    """Patch every (hook, position) cell of every corrupted run; return the metric per cell.

    Run r is the corrupted input `corrupted_tokens[r]` (plus `embed_noise[r]` on the token
    embeddings, if given); its cell (h, p) replaces activation `names[h]` at position p with
    `clean_cache[names[h]][source[r], p]` (`source` defaults to r). Cells are stacked as batch
    rows, `batch_size` rows per forward pass, one hook per hook point writing all its rows.
    `metric(logits, run)` scores each row given the run it belongs to. Positions at or past
    `lengths[r]` (right padding) are not patched and hold NaN.
    """
    n_runs, n_pos = corrupted_tokens.shape
    device = corrupted_tokens.device
    lengths = torch.full((n_runs,), n_pos, device=device) if lengths is None else lengths
    source = torch.arange(n_runs, device=device) if source is None else source
    names = list(names)
    # Enumerate the valid cells (run, hook, pos), run-major so a batch holds few distinct runs.
    grid = torch.stack(
        torch.meshgrid(
            torch.arange(n_runs, device=device),
            torch.arange(len(names), device=device),
            torch.arange(n_pos, device=device),
            indexing="ij",
        ),
        -1,
    )
    cells = grid.reshape(-1, 3)  # cell 3
    cells = cells[cells[:, 2] < lengths[cells[:, 0]]]
    out = torch.full((n_runs, len(names), n_pos), float("nan"), device=device)
    starts = range(0, cells.shape[0], batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True, leave=False):
        chunk = cells[s : s + batch_size]
        run, hook, pos = chunk.unbind(-1)
        width = int(lengths[run].max())
        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = []
        if embed_noise is not None:
            hooks.append(("hook_embed", _add_noise(embed_noise[run, :width])))
        for h in hook.unique().tolist():
            rows = (hook == h).nonzero().squeeze(-1)
            clean = clean_cache[names[h]][source[run[rows]], pos[rows]]  # rows d_model
            hooks.append((names[h], _patch_hook(rows, pos[rows], clean)))
        logits = model.run_with_hooks(corrupted_tokens[run, :width], fwd_hooks=hooks)
        out[run, hook, pos] = metric(logits, run).to(out.dtype)
    return out


def get_act_patch(
    model: TransformerBridge,
    corrupted_tokens: Int[Tensor, "1 pos"],
    clean_cache: ActivationCache | Mapping[str, Float[Tensor, "1 pos d_model"]],
    act: str,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]],
    batch_size: int = 512,
) -> Float[Tensor, "n_layers pos"]:
    """TransformerLens's `get_act_patch_<act>` for one prompt, batched over cells.

    `patching_metric` maps logits [batch, pos, d_vocab] to one value per batch row (every row is
    the same prompt, patched at a different cell). Returns [n_layers, pos] like TL.
    """
    n_layers = model.cfg.n_layers
    names = hook_names(n_layers, [act])
    cache = {n: clean_cache[n] for n in names}
    out = patch_cells(
        model,
        corrupted_tokens,
        cache,
        names,
        lambda logits, run: patching_metric(logits),
        batch_size=batch_size,
    )
    return out[0]
