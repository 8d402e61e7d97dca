"""The batched activation-patching engine: patch every (hook, position) cell of a batch of
corrupted runs with activations from clean runs, and score each patched run.

This is the generic part of causal tracing (Meng et al. 2022; TransformerLens's
`generic_activation_patch`), free of any dataset: tokens, a clean cache, hook names and a metric
in; a grid of metric values out. `interp.analysis.patching` is the reversal-curse study built on
it (corruptions, prompt sets, position names, summaries).

Speed. Every cell is an independent forward pass of the corrupted input, but most of that pass
is already known: a patch at layer L and position p leaves layers 0..L-1 (every position) and
positions 0..p-1 (every layer, by causality) exactly as in the corrupted run. So on the kit's
models (`interp.model.supports_raw`, causal attention) the engine runs the corrupted inputs
once, storing each layer's residual stream, attention and MLP outputs, keys and values
(`_stream`), and each cell recomputes only positions p.. of layers L.. from there: its tokens
are flattened (no padding in the matrix multiplies), attention reads the stored keys and values
for the earlier positions, and the arithmetic is `interp.model`'s hook-free block pieces
(`qkv_fused`, `mlp`), the ones training uses. Cells are batched (`batch_size` per batch); a batch
walks the layers once, each cell joining where its patch lands. Any other model or hook point
takes the hook path: one hook per hook point writing the clean activation into the rows that
patch it (TL's `generic_activation_patch` runs one forward per cell). Runs of different
lengths share a batch under right padding, which a causal model never sees. `get_act_patch` is
TL's `get_act_patch_<act>` on this engine; `tests/test_patching.py` checks every grid against
`transformer_lens.patching` to 1e-5, and a deliberately broken `_write_rows` (used by both
paths) must fail that comparison. `experiments/bench_patching.py` times it against TL's loops.

The metric (`answer_score`, `patching_metric`) scores the first answer token at the final prompt
position against alternatives, normalised so the corrupted run scores 0 and the clean run 1.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from interp.errors import UserError
from interp.model import attend_unmasked, embed_positions, mlp, qkv_fused, raw, supports_raw

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


# --- the forward pass without hook dispatch, started at any point of the residual stream -----


def _raw_net(model: TransformerBridge) -> Any | None:
    """The native model under `model` when the hook-free path computes what the bridge does:
    `interp.model.supports_raw` and every attention causal (right padding must stay invisible,
    and the cell batches below mix runs of different lengths). None means: use the hooks."""
    net = getattr(model, "original_model", model)
    if not supports_raw(net):
        return None
    return net if all(raw(b.attn).causal for b in net.layers) else None


_NAME = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|attn_out|mlp_out)")


def _parse(name: str) -> tuple[int, str] | None:
    """(layer, act) of a hook point the hook-free path patches; None for any other."""
    m = _NAME.fullmatch(name)
    return None if m is None else (int(m.group(1)), m.group(2))


def _embed(
    net: Any, tokens: Int[Tensor, "batch pos"], noise: Float[Tensor, "batch pos d_model"] | None
) -> tuple[Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]:
    """resid_pre of layer 0 (token embedding, plus `noise` as a `hook_embed` hook adds it, plus
    the positional embedding) and the position ids."""
    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    h = raw(net.tok_embed)(tokens)
    if noise is not None:
        h = h + noise[:, : tokens.shape[1]]
    return embed_positions(net, h, positions), positions.expand(tokens.shape[0], -1)


def _stream(
    net: Any, tokens: Int[Tensor, "batch pos"], noise: Tensor | None = None
) -> dict[str, Float[Tensor, "layer batch ..."]]:
    """resid_pre, attn_out and mlp_out of every layer of an unpatched (right-padded) batch, and
    each layer's keys and values ([layer, batch, kv_head, pos, d_head]) for the cells to reuse."""
    h, positions = _embed(net, tokens, noise)
    parts: dict[str, list[Tensor]] = {a: [] for a in (*ACTS, "k", "v")}
    for block in net.layers:
        parts["resid_pre"].append(h)
        att = raw(block.attn)
        q, k, v = qkv_fused(att, raw(block.ln1)(h), positions)
        parts["k"].append(k)
        parts["v"].append(v)
        a = attend_unmasked(att, q, k, v)
        parts["attn_out"].append(a)
        h = h + a
        m = mlp(block, h)
        parts["mlp_out"].append(m)
        h = h + m
    return {a: torch.stack(v) for a, v in parts.items()}


def _logits(net: Any, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
    return raw(net.head)(raw(net.ln_out)(h))


@torch.no_grad()
def cache_activations(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    names: Sequence[str],
    batch_size: int = 512,
) -> dict[str, Float[Tensor, "batch pos d_model"]]:
    """The activations at hook points `names` of a (right-padded) batch, chunked.

    Hook points of `ACTS` on a model `raw_forward` covers are computed by the same arithmetic
    without hook dispatch (`_stream`); any other name goes through TransformerLens's
    `run_with_cache`."""
    wanted = list(names)
    net = _raw_net(model)
    parsed = [_parse(n) for n in wanted]
    if net is not None and all(p is not None for p in parsed):
        streams = [
            _stream(net, tokens[s : s + batch_size]) for s in range(0, len(tokens), batch_size)
        ]
        parts = {a: torch.cat([st[a] for st in streams], 1) for a in ACTS}  # act: layer batch pos d
        return {n: parts[p[1]][p[0]] for n, p in zip(wanted, parsed, strict=True) if p is not None}
    out: dict[str, list[Tensor]] = defaultdict(list)
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
    net = _raw_net(model)
    for s in range(0, tokens.shape[0], batch_size):
        idx = torch.arange(s, min(s + batch_size, tokens.shape[0]), device=tokens.device)
        if net is not None:
            noise = None if embed_noise is None else embed_noise[idx]
            h = _stream(net, tokens[idx], noise)
            resid = h["resid_pre"][-1] + h["attn_out"][-1] + h["mlp_out"][-1]
            out.append(metric(_logits(net, resid), idx))
            continue
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
    rows, `batch_size` rows per batch (see the module docstring for how a batch is computed).
    `metric(logits, run)` scores each row given the run it belongs to; its logits are those of
    the patched run at every position before `lengths[r]` (past it, right padding, they are
    not meaningful). Positions at or past `lengths[r]` are not patched and hold NaN.
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
    net = _raw_net(model)
    parsed = [_parse(n) for n in names]
    if net is not None and all(p is not None for p in parsed):
        at = [p for p in parsed if p is not None]
        chunks = tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
        _patch_from_stream(
            net,
            corrupted_tokens,
            clean_cache,
            names,
            at,
            metric,
            cells,
            lengths,
            source,
            embed_noise,
            batch_size,
            chunks,
            out,
        )
        return out
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


_STAGE = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2}


@torch.no_grad()
def patch_positions(
    model: TransformerBridge,
    corrupted_tokens: Int[Tensor, "run pos"],
    clean_cache: Mapping[str, Float[Tensor, "run pos d_model"]],
    names: Sequence[str],
    where: Bool[Tensor, "run pos"],
    metric: RowMetric,
) -> Float[Tensor, "run hook"]:
    """Patch activation `names[h]` at every position `where` marks, all of them together, from
    `clean_cache` into each corrupted run; return the metric per run and hook.

    `patch_cells` patches one position at a time; a span (every token of a two-token name, as
    ROME restores the subject) needs its positions patched at once. One forward pass per hook,
    through TransformerLens's hooks. With one marked position per run it equals that
    position's `patch_cells` cell (`tests/test_patching.py`)."""
    runs = torch.arange(corrupted_tokens.shape[0], device=corrupted_tokens.device)
    out = torch.empty(len(runs), len(names))
    for h, name in enumerate(names):
        src = clean_cache[name]

        def put(act: Tensor, hook: Any, src: Tensor = src) -> Tensor:
            return torch.where(where[..., None], src.to(act.dtype), act)

        logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, put)])
        out[:, h] = metric(logits, runs).cpu()
    return out


def _patch_from_stream(
    net: Any,
    corrupted_tokens: Int[Tensor, "run pos"],
    clean_cache: Mapping[str, Float[Tensor, "source pos d_model"]],
    names: Sequence[str],
    at: Sequence[tuple[int, str]],
    metric: RowMetric,
    cells: Int[Tensor, "cell 3"],
    lengths: Int[Tensor, " run"],
    source: Int[Tensor, " run"],
    embed_noise: Tensor | None,
    batch_size: int,
    chunks: Any,
    out: Float[Tensor, "run hook pos"],
) -> None:
    """`patch_cells` without hook dispatch, each cell's forward started where its patch lands.

    A patch at layer L leaves layers 0..L-1 as they were in the corrupted run, so the corrupted
    runs' residual streams are computed once (`_stream`) and a cell starts from the stored
    stream: resid_pre L patched at stage 2L (before block L's attention), attn_out L at stage
    2L+1 (before its MLP: resid_pre + patched attn_out), mlp_out L at stage 2L+2 (before the next
    block). A batch of cells is sorted by stage and walks the stages once: the rows that start
    at a stage join the batch there, so each block's attention and MLP run once per batch, on
    only the rows whose patch lies before them, and only at positions from the patched one to
    the run's end (flattened to tokens; `_attn_tail` supplies the earlier keys and values, and
    the earlier logits are the corrupted run's). The patch is written by `_write_rows` into the
    stored activation, as the hook path writes it into the live one (the same arithmetic:
    `tests/test_patching.py` holds both to TransformerLens within 1e-5)."""
    n_layers = len(net.layers)
    device = corrupted_tokens.device
    streams = [
        _stream(
            net,
            corrupted_tokens[s : s + batch_size],
            None if embed_noise is None else embed_noise[s : s + batch_size],
        )
        for s in range(0, corrupted_tokens.shape[0], batch_size)
    ]
    stored = {a: torch.cat([st[a] for st in streams], 1) for a in streams[0]}  # layer run ...
    del streams
    # A sort key per hook: its stage first, then the hook, so a stage's rows are contiguous.
    stage = torch.tensor([2 * layer + _STAGE[a] for layer, a in at], device=device)
    key = stage * len(names) + torch.arange(len(names), device=device)
    for s in chunks:
        chunk = cells[s : s + batch_size]
        chunk = chunk[torch.argsort(key[chunk[:, 1]], stable=True)]
        run, hook, pos = chunk.unbind(-1)
        lens = lengths[run]
        width = int(lens.max())
        # The positions each row recomputes, row-major: pos[i] .. lens[i] - 1 (the ones its
        # patch can reach). Rows join in stage order, so the active rows are always a prefix
        # of the rows, and their positions a prefix of these tokens.
        counts = lens - pos
        ends = counts.cumsum(0)
        tok_row = torch.repeat_interleave(torch.arange(len(run), device=device), counts)
        tok_pos = (
            pos[tok_row] + torch.arange(int(ends[-1]), device=device) - (ends - counts)[tok_row]
        )
        hooks, n_rows = torch.unique_consecutive(hook, return_counts=True)
        groups = list(zip(hooks.tolist(), n_rows.tolist(), strict=True))
        h = stored["resid_pre"].new_empty(0, stored["resid_pre"].shape[-1])  # token d_model
        start, g = 0, 0
        for st in range(int(stage[groups[0][0]]), 2 * n_layers + 1):
            while g < len(groups) and int(stage[groups[g][0]]) == st:
                k, n = groups[g]
                r, p = run[start : start + n], pos[start : start + n]
                layer, act = at[k]
                clean = clean_cache[names[k]][source[r], p]  # n d_model
                rows = torch.arange(n, device=device)
                # (indexing by the tensor `r` copies: the stored stream is never written)
                patched = _write_rows(stored[act][layer, r, :width], rows, p, clean)
                if act == "attn_out":
                    patched = stored["resid_pre"][layer, r, :width] + patched
                elif act == "mlp_out":
                    pre = stored["resid_pre"][layer, r, :width]
                    patched = (pre + stored["attn_out"][layer, r, :width]) + patched
                t0, t1 = int(ends[start] - counts[start]), int(ends[start + n - 1])
                h = torch.cat([h, patched[tok_row[t0:t1] - start, tok_pos[t0:t1]]])
                start, g = start + n, g + 1
            if st == 2 * n_layers:
                break
            layer, t = st // 2, h.shape[0]
            if st % 2 == 0:
                h = h + _attn_tail(
                    net, layer, h, stored, run[:start], tok_row[:t], tok_pos[:t], width
                )
            else:
                h = h + mlp(net.layers[layer], h[None])[0]  # (pieces take [batch, pos, d])
        # Positions before a row's patch keep the corrupted run's logits.
        runs, inv = torch.unique(run, return_inverse=True)
        final = stored["resid_pre"][-1, runs, :width] + stored["attn_out"][-1, runs, :width]
        logits = _logits(net, final + stored["mlp_out"][-1, runs, :width])[inv]
        logits[tok_row, tok_pos] = _logits(net, h[None])[0]
        out[run, hook, pos] = metric(logits, run).to(out.dtype)


def _attn_tail(
    net: Any,
    layer: int,
    h: Float[Tensor, "token d_model"],
    stored: Mapping[str, Tensor],
    run: Int[Tensor, " row"],
    tok_row: Int[Tensor, " token"],
    tok_pos: Int[Tensor, " token"],
    width: int,
) -> Float[Tensor, "token d_model"]:
    """attn_out of block `layer` at the recomputed tokens (row `tok_row`, position `tok_pos`) of
    patched rows whose earlier positions are unchanged: their keys and values come from the
    corrupted run of `run[row]` (`stored`), the recomputed ones are written over them, and each
    row attends causally over its whole width (queries at unchanged positions are zeros and
    their outputs unused)."""
    block = net.layers[layer]
    att = raw(block.attn)
    q, k, v = qkv_fused(att, raw(block.ln1)(h)[None], tok_pos[None])  # 1 head token d_head
    q, k, v = (x[0].transpose(0, 1) for x in (q, k, v))  # token head d_head
    keys = stored["k"][layer, run, :, :width]  # row kv_head pos d_head (a copy: `run` indexes)
    values = stored["v"][layer, run, :, :width]
    keys[tok_row, :, tok_pos] = k
    values[tok_row, :, tok_pos] = v
    queries = q.new_zeros(len(run), q.shape[1], width, q.shape[2])
    queries[tok_row, :, tok_pos] = q
    if att.kv_repeats > 1:
        keys = keys.repeat_interleave(att.kv_repeats, dim=1)
        values = values.repeat_interleave(att.kv_repeats, dim=1)
    z = F.scaled_dot_product_attention(queries, keys, values, is_causal=True, scale=1 / att.scale)
    return raw(att.o)(z[tok_row, :, tok_pos].reshape(len(tok_row), -1))


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
    the same prompt, patched at a different cell), the fast path. TL's own metrics return one
    scalar for a one-row batch (`lambda l: l[0, -1, r] - l[0, -1, w]`): given a batch they would
    read row 0 only, so a metric that returns a scalar is called once per row instead (TL's
    grid, at TL's speed). A metric of any other shape is refused in one line. Returns
    [n_layers, pos] like TL.
    """
    n_layers = model.cfg.n_layers
    names = hook_names(n_layers, [act])
    cache = {n: clean_cache[n] for n in names}
    per_row = lambda logits, run: _per_row(patching_metric, logits)  # noqa: E731
    return patch_cells(model, corrupted_tokens, cache, names, per_row, batch_size=batch_size)[0]


def _per_row(metric: Callable[[Tensor], Tensor], logits: Tensor) -> Tensor:
    """`metric` on a batch of logits as one value per row (see `get_act_patch`)."""
    out = torch.as_tensor(metric(logits))
    if out.shape == (len(logits),) and len(logits) > 1:
        return out
    if out.ndim == 0 or out.shape == (1,):  # TL's scalar metric: one row at a time
        if len(logits) == 1:
            return out.reshape(1)
        return torch.stack([torch.as_tensor(metric(logits[i : i + 1])).reshape(()) for i in
                            range(len(logits))])  # fmt: skip
    raise UserError(
        f"patching_metric returned shape {tuple(out.shape)} for {len(logits)} rows of logits: "
        "return one value per row, or a scalar as TransformerLens's metrics do"
    )
