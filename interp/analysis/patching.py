"""Activation patching (causal tracing): where does the model hold the fact it recalls?

Method. Run the model on a clean prompt about one fact ("xisalo raditu is the" -> "composer ...")
and on a corrupted prompt that lacks it; then rerun the corrupted prompt with one activation
replaced by its value from the clean run and measure how much of the clean answer comes back
(Meng et al. 2022, "Locating and Editing Factual Associations in GPT" (ROME), section 2; the
TransformerLens formulation of Nanda; Zhang & Nanda 2023 and Heimersheim & Nanda 2024 on
metrics and corruptions). A cell is (activation, layer, position) for the activations
`resid_pre`, `attn_out` and `mlp_out` of every block at every prompt position.

Corruptions of the entity that the prompt names (the *first* entity of the prompt; the second
is the answer): A, the name, for "A is ..." prompts; B, the description, for "B is ..." prompts.
- `swap`: the same template about another person of the same subset whose entity has the same
  number of tokens (so every position lines up) and whose answer starts with another token.
  Score = logit difference at the final prompt position, logit(first token of the right answer)
  - logit(first token of the corrupting person's answer).
- `noise` (ROME): Gaussian noise on the entity's token embeddings (`hook_embed`, before the
  positional embedding is added), standard deviation `noise_scale` (3) times the standard
  deviation of the token embeddings of every entity token of the dataset, `noise_samples`
  seeded draws per prompt. There is no corrupting answer, so the score is the logit of the right
  answer's first token minus the mean logit of the *alternatives*: the first tokens of the other
  answers of the same subset and query (the other roles for a forward n2d query, the other
  first names for a reverse one). Our choice, over ROME's p(answer): log p(right) also rewards
  knowing that *some* name or role comes next, which the noise destroys too, so on reverse
  queries a model with no reverse knowledge would show a large clean-vs-noised gap and
  "restoration" of the format; against the alternatives only the fact counts, and the score is
  the swap's logit difference averaged over every possible corrupting answer (the logits' common
  offset cancels as in a log-probability). Scores are averaged over noise samples.
Both are normalised per cell as (patched - corrupted) / (clean - corrupted), so the corrupted
run scores 0 and the clean run 1 (`patching_metric`); the raw clean and corrupted scores are
saved beside every grid. Where the clean run hardly prefers the right answer (reverse queries
of a model with the reversal curse: SCIENCE.md) the denominator is noise; such groups are
flagged (`meaningful`: |clean - corrupted| >= `min_gap` and its 95% interval over people
excludes 0), their normalised maps are withheld (null) and only the raw effect (patched -
corrupted, in score units) is reported.

Speed. Every cell is an independent forward pass of the corrupted input, so cells are batched:
the corrupted inputs are stacked, one batch row per (prompt, activation, layer, position) cell,
and one hook per hook point writes the clean activation into the rows that patch it (TL's
`generic_activation_patch` runs one forward per cell). Prompts of different lengths share a
batch under right padding, which a causal model never sees. `batch_size` bounds the rows per
forward pass. `tests/test_patching.py` checks every grid against
`transformer_lens.patching.get_act_patch_*` to 1e-5.

Positions are aligned across templates by naming them relative to the entity span: `<bos>`,
`pre` (tokens before the entity), `A1 A2` / `B1 ... B4` (the entity's tokens; `first`, `mid`,
`last` when entity lengths vary), `post` (the token after the entity), `mid` (further tokens)
and `final` (the last prompt position, where the answer is read). A prompt's cells with the same
name are averaged, then prompts are averaged per name over the prompts that have it.

Control (wrong source, `resid_pre` only): the same patches from the clean run of a third
person (same template, whose answer starts with neither answer token). Under `noise` it should
restore nothing (or push below the corrupted run); under `swap` it also removes the corrupting
person's preference, so a symmetric logit difference reaches about 0.5 without any fact: the
fact is localised where the real patch clearly beats this control.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from interp.data.dataset import TEMPLATE_KINDS, Example, FactDataset, pad_batch
from interp.data.world import SUBSETS
from interp.errors import UserError
from interp.runs import Run, write_json
from interp.stats import mean_ci, run_seed

ACTS = ("resid_pre", "attn_out", "mlp_out")
CORRUPTIONS = ("swap", "noise")
QUERIES = {"forward": "same", "reverse": "reverse"}  # query name -> dataset direction
SCORE_UNITS = {
    "swap": "logit(right answer's first token) - logit(corrupting answer's first token), final "
    "prompt position",
    "noise": "logit(right answer's first token) - mean logit of the other answers' first tokens "
    "of the subset and query, final prompt position, mean over noise samples",
}

RowMetric = Callable[
    [Float[Tensor, "batch pos d_vocab"], Int[Tensor, " batch"]], Float[Tensor, " batch"]
]


@dataclass(frozen=True)
class PatchOptions:
    """What `run_analysis` patches and how."""

    corruptions: tuple[str, ...] = CORRUPTIONS  # "swap" and/or "noise"
    templates: str = "train"  # prompts on "train" or "heldout" templates
    batch_size: int = 512  # patched rows (cells) per forward pass
    max_prompts: int = 32  # prompts per subset x query (seeded sample); 0 = all
    noise_samples: int = 5  # Gaussian noise draws per prompt (noise corruption)
    noise_scale: float = 3.0  # noise std in units of the entity token embeddings' std (ROME: 3)
    min_gap: float = 1.0  # smallest |clean - corrupted| score for a meaningful normalised map
    seed: int = 0  # offset on the run seed (stats.run_seed) of prompts, partners and noise

    def validate(self) -> None:
        bad = [c for c in self.corruptions if c not in CORRUPTIONS]
        if bad or not self.corruptions:
            raise UserError(
                f"unknown corruption {bad or list(self.corruptions)}: use swap, noise or both"
            )
        if self.templates not in TEMPLATE_KINDS:
            raise UserError(f"templates must be one of {TEMPLATE_KINDS}, got {self.templates!r}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_prompts < 0:
            raise UserError(f"--max-prompts must be >= 0 (0 = all), got {self.max_prompts}")
        if self.noise_samples < 1 or self.noise_scale <= 0:
            raise UserError("noise_samples must be >= 1 and noise_scale > 0")
        if self.min_gap < 0:
            raise UserError(f"min_gap must be >= 0, got {self.min_gap}")


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


def _add_noise(noise: Tensor) -> Callable[[Tensor, Any], Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
        return act + noise[:, : act.shape[1]]

    return hook


def _write_rows(act: Tensor, rows: Tensor, pos: Tensor, clean: Tensor) -> Tensor:
    """act[rows[i], pos[i]] = clean[i]: the patch itself (one place, so tests can break it)."""
    act[rows, pos] = clean
    return act


def _patch_hook(rows: Tensor, pos: Tensor, clean: Tensor) -> Callable[[Tensor, Any], Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
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


# --- corruptions over sets of prompts -------------------------------------------------------


def entity_span(e: Example) -> tuple[int, int]:
    """The span of the entity the prompt names (A for "A is ..." prompts, B for "B is ...")."""
    return e.a_span if 0 <= e.a_span[0] and e.a_span[1] <= e.prompt_len else e.b_span


def entity_letter(e: Example) -> str:
    return "A" if entity_span(e) == e.a_span else "B"


@dataclass(frozen=True)
class TraceGrids:
    """Raw scores of every patched cell of a set of prompts, with the two baselines."""

    patched: Float[Tensor, "prompt act layer pos"]  # NaN past each prompt's length
    clean: Float[Tensor, " prompt"]
    corrupted: Float[Tensor, " prompt"]
    lengths: Int[Tensor, " prompt"]

    def normalised(self) -> Float[Tensor, "prompt act layer pos"]:
        gap = (self.clean - self.corrupted)[:, None, None, None]
        return (self.patched - self.corrupted[:, None, None, None]) / gap


def _tokens(
    examples: Sequence[Example], device: torch.device
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    return pad_batch([e.prompt for e in examples], device=device)


def _first(examples: Sequence[Example], device: torch.device) -> Int[Tensor, " batch"]:
    return torch.tensor([e.answer[0] for e in examples], dtype=torch.long, device=device)


def _check_aligned(a: Sequence[Example], b: Sequence[Example], what: str) -> None:
    for x, y in zip(a, b, strict=True):
        if x.prompt_len != y.prompt_len or entity_span(x) != entity_span(y):
            raise ValueError(
                f"{what}: prompts must share length and entity span to patch "
                f"position by position ({x.prompt_len} vs {y.prompt_len})"
            )


def trace_swap(
    model: TransformerBridge,
    prompts: Sequence[Example],
    corrupters: Sequence[Example],
    sources: Sequence[Example] | None = None,
    *,
    acts: Sequence[str] = ACTS,
    batch_size: int = 512,
    progress: bool = False,
    desc: str = "swap",
) -> TraceGrids:
    """Entity swap: patch the clean run of `sources[i]` (default `prompts[i]`) into the run of
    `corrupters[i]` (the same template about another person), scored by the logit difference
    of prompts[i]'s answer over corrupters[i]'s answer (first tokens)."""
    sources = prompts if sources is None else sources
    _check_aligned(prompts, corrupters, "swap")
    _check_aligned(prompts, sources, "swap source")
    device = next(model.parameters()).device
    clean_toks, lengths = _tokens(prompts, device)
    corr_toks, _ = _tokens(corrupters, device)
    src_toks, _ = _tokens(sources, device)
    final, right = lengths - 1, _first(prompts, device)
    wrong = _first(corrupters, device)[:, None]  # prompt 1

    def metric(
        logits: Float[Tensor, "batch pos d_vocab"], run: Int[Tensor, " batch"]
    ) -> Float[Tensor, " batch"]:
        return answer_score(logits, final[run], right[run], wrong[run])

    n_layers = model.cfg.n_layers
    names = hook_names(n_layers, acts)
    clean = run_metric(model, clean_toks, metric, batch_size=batch_size)
    corrupted = run_metric(model, corr_toks, metric, batch_size=batch_size)
    cache = cache_activations(model, src_toks, names, batch_size)
    cells = patch_cells(
        model,
        corr_toks,
        cache,
        names,
        metric,
        lengths=lengths,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    patched = cells.reshape(len(prompts), len(acts), n_layers, -1)  # prompt act layer pos
    return TraceGrids(patched, clean, corrupted, lengths)


def embedding_std(model: TransformerBridge, token_ids: Sequence[int]) -> float:
    """Standard deviation of the token-embedding entries of `token_ids` (ROME's noise unit)."""
    w = model.W_E.detach()[torch.tensor(sorted(set(token_ids)), device=model.W_E.device)]
    return float(w.float().std())


def entity_noise(
    prompts: Sequence[Example], samples: int, d_model: int, std: float, generator: torch.Generator
) -> Float[Tensor, "prompt sample pos d_model"]:
    """Gaussian noise N(0, std^2) on each prompt's entity positions, zero elsewhere."""
    n_pos = max(e.prompt_len for e in prompts)
    noise = torch.zeros(len(prompts), samples, n_pos, d_model)
    for i, e in enumerate(prompts):
        start, end = entity_span(e)
        draw = torch.randn(samples, end - start, d_model, generator=generator)
        noise[i, :, start:end] = std * draw
    return noise


def trace_noise(
    model: TransformerBridge,
    prompts: Sequence[Example],
    noise: Float[Tensor, "prompt sample pos d_model"],
    alternatives: Sequence[int],
    sources: Sequence[Example] | None = None,
    *,
    acts: Sequence[str] = ACTS,
    batch_size: int = 512,
    progress: bool = False,
    desc: str = "noise",
) -> TraceGrids:
    """ROME's corruption: `noise[i, s]` added to prompt i's token embeddings; patch the clean run
    of `sources[i]` (default `prompts[i]`) into each noised run, scored by the logit of
    prompts[i]'s answer's first token against the mean logit of the `alternatives` (first tokens
    of the group's answers; a prompt's own is dropped). Patched and corrupted scores are means
    over the noise samples."""
    sources = prompts if sources is None else sources
    _check_aligned(prompts, sources, "noise source")
    device = next(model.parameters()).device
    n, samples = noise.shape[:2]
    clean_toks, lengths = _tokens(prompts, device)
    src_toks, _ = _tokens(sources, device)
    width = clean_toks.shape[1]
    final, right = lengths - 1, _first(prompts, device)
    alt = sorted(set(alternatives))
    wrong = torch.tensor(
        [[a if a != e.answer[0] else -1 for a in alt] for e in prompts],
        dtype=torch.long,
        device=device,
    )  # prompt n_alt
    if bool((wrong < 0).all(1).any()):
        raise ValueError("noise: every prompt needs an alternative answer other than its own")
    prompt_of = torch.arange(n, device=device).repeat_interleave(samples)  # run -> prompt

    def metric(
        logits: Float[Tensor, "batch pos d_vocab"], run: Int[Tensor, " batch"]
    ) -> Float[Tensor, " batch"]:
        return answer_score(logits, final[run], right[run], wrong[run])

    def run_metric_(
        logits: Float[Tensor, "batch pos d_vocab"], run: Int[Tensor, " batch"]
    ) -> Float[Tensor, " batch"]:
        return metric(logits, prompt_of[run])

    n_layers = model.cfg.n_layers
    names = hook_names(n_layers, acts)
    runs_noise = noise[:, :, :width].to(device).reshape(n * samples, width, -1)  # run pos d_model
    runs_toks = clean_toks[prompt_of]
    clean = run_metric(model, clean_toks, metric, batch_size=batch_size)
    corrupted = run_metric(model, runs_toks, run_metric_, runs_noise, batch_size)
    cache = cache_activations(model, src_toks, names, batch_size)
    cells = patch_cells(
        model,
        runs_toks,
        cache,
        names,
        run_metric_,
        lengths=lengths[prompt_of],
        source=prompt_of,
        embed_noise=runs_noise,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    patched = cells.reshape(n, samples, len(acts), n_layers, -1).mean(1)  # prompt act layer pos
    return TraceGrids(patched, clean, corrupted.reshape(n, samples).mean(1), lengths)


# --- choosing prompts, partners and position names ------------------------------------------


def template_pools(ds: FactDataset) -> dict[tuple[str, str, str, int], list[Example]]:
    """Prompts by (subset, direction, templates, template): where swap partners come from."""
    pools: dict[tuple[str, str, str, int], list[Example]] = defaultdict(list)
    for e in ds.prompts:
        pools[(e.subset, e.direction, e.templates, e.template)].append(e)
    return pools


def _key(e: Example) -> tuple[str, str, str, int]:
    return (e.subset, e.direction, e.templates, e.template)


def swap_partner(
    e: Example, pool: Sequence[Example], rng: random.Random, avoid_first: Sequence[int] = ()
) -> Example | None:
    """A prompt of the same template about another person whose entity has the same token
    length and whose answer's first token is neither e's nor any in `avoid_first`."""
    span = entity_span(e)
    cands = [
        o
        for o in pool
        if o.person != e.person
        and entity_span(o) == span
        and o.prompt_len == e.prompt_len
        and o.answer[0] != e.answer[0]
        and o.answer[0] not in avoid_first
    ]
    return rng.choice(cands) if cands else None


def position_labels(e: Example, fixed_entity_len: bool = True) -> list[str]:
    """The name of every prompt position relative to the entity span (see module docstring)."""
    start, end = entity_span(e)
    letter = entity_letter(e)
    out = []
    for p in range(e.prompt_len):
        if p == 0:
            out.append("<bos>")
        elif p < start:
            out.append("pre")
        elif p < end:
            k = p - start
            if fixed_entity_len:
                out.append(f"{letter}{k + 1}")
            else:
                out.append(
                    f"{letter}last"
                    if p == end - 1
                    else f"{letter}first"
                    if k == 0
                    else f"{letter}mid"
                )
        elif p == e.prompt_len - 1:
            out.append("final")
        elif p == end:
            out.append("post")
        else:
            out.append("mid")
    return out


def label_order(labels: Sequence[Sequence[str]]) -> list[str]:
    """Every label that occurs, in prompt order (<bos>, pre, entity, post, mid, final)."""
    seen = {x for ls in labels for x in ls}
    order = ["<bos>", "pre"]
    for letter in "AB":
        order += [f"{letter}{k}" for k in range(1, 65)]
        order += [f"{letter}first", f"{letter}mid", f"{letter}last"]
    order += ["post", "mid", "final"]
    return [x for x in order if x in seen]


def by_label(
    grid: Float[Tensor, "prompt act layer pos"],
    labels: Sequence[Sequence[str]],
    order: Sequence[str],
) -> Float[np.ndarray, "prompt act layer label"]:
    """Average each prompt's cells over the positions of each label (NaN where it has none)."""
    g = grid.detach().cpu().double().numpy()
    out = np.full((*g.shape[:3], len(order)), np.nan)
    for i, ls in enumerate(labels):
        for j, name in enumerate(order):
            pos = [p for p, x in enumerate(ls) if x == name]
            if pos:
                out[i, :, :, j] = g[i][..., pos].mean(axis=-1)
    return out


# --- the analysis ---------------------------------------------------------------------------


def _nan_to_none(a: np.ndarray) -> list[Any]:
    """A nested list for JSON, with NaN (no data) as null."""
    return [_nan_to_none(x) if np.ndim(x) else (None if np.isnan(x) else float(x)) for x in a]


def _select(
    ds: FactDataset, subset: str, direction: str, opts: PatchOptions, rng: random.Random
) -> list[Example]:
    prompts = ds.select(subset=subset, direction=direction, templates=opts.templates)
    if opts.max_prompts and len(prompts) > opts.max_prompts:
        prompts = sorted(
            rng.sample(prompts, opts.max_prompts), key=lambda e: (e.template, e.person)
        )
    return prompts


def _summarise_group(
    trace: TraceGrids,
    control: TraceGrids | None,
    control_idx: list[int],
    prompts: list[Example],
    opts: PatchOptions,
    ds: FactDataset,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Mean grids per position name, baselines, best cells and the meaningfulness flag."""
    fixed = len({entity_span(e)[1] - entity_span(e)[0] for e in prompts}) == 1
    labels = [position_labels(e, fixed) for e in prompts]
    order = label_order(labels)
    effect = by_label(trace.patched - trace.corrupted[:, None, None, None], labels, order)
    clean = trace.clean.cpu().double().numpy()
    corrupted = trace.corrupted.cpu().double().numpy()
    gap = clean - corrupted
    present = ~np.isnan(effect[:, 0, 0, :])  # prompt label
    n_label = present.sum(0)
    # Mean effect over the prompts that have each label, over the mean gap of those prompts.
    mean_effect = np.nansum(effect, axis=0) / n_label  # act layer label
    gap_label = (gap[:, None] * present).sum(0) / n_label  # label
    # Prompts of one person share the fact, so the interval counts people, not prompts.
    people = sorted({e.person for e in prompts})
    per_person = np.array([gap[[e.person == p for e in prompts]].mean() for p in people])
    p_mean, g_lo, g_hi, _ = mean_ci(per_person.tolist())
    g_mean = float(gap.mean())
    meaningful = abs(g_mean) >= opts.min_gap and (g_lo > 0 or g_hi < 0)
    normalised = mean_effect / gap_label
    out: dict[str, Any] = {
        "n_prompts": len(prompts),
        "corrupted_entity": entity_letter(prompts[0]),
        "example_prompt": ds.text(prompts[0].prompt),
        "labels": order,
        "label_counts": [int(c) for c in n_label],
        "clean": {"mean": float(clean.mean()), "per_prompt": clean.tolist()},
        "corrupted": {"mean": float(corrupted.mean()), "per_prompt": corrupted.tolist()},
        "clean_minus_corrupt": {
            "mean": g_mean,
            "mean_over_people": p_mean,
            "ci95_over_people": [g_lo, g_hi],
            "n_people": len(people),
            "frac_prompts_above_min_gap": float(np.mean(gap >= opts.min_gap)),
        },
        "meaningful": bool(meaningful),
        "effect_raw": {a: mean_effect[i].tolist() for i, a in enumerate(ACTS)},
        "normalised": {
            a: (normalised[i].tolist() if meaningful else None) for i, a in enumerate(ACTS)
        },
        "best": {},
    }
    for i, a in enumerate(ACTS):
        src = normalised[i] if meaningful else mean_effect[i]
        layer, j = np.unravel_index(int(np.argmax(src)), src.shape)
        out["best"][a] = {
            "value": float(src[layer, j]),
            "layer": int(layer),
            "position": order[j],
            "units": "normalised" if meaningful else "raw",
        }
    arrays = {
        "meaningful": np.array(meaningful),
        "normalised": normalised,
        "effect_raw": mean_effect,
        "clean": clean,
        "corrupted": corrupted,
        "per_prompt_effect": effect,
        "person": np.array([e.person for e in prompts]),
        "template": np.array([e.template for e in prompts]),
    }
    if control is not None:
        # Control runs exist for the prompts that found a third person (`control_idx`).
        c_effect = by_label(
            control.patched - control.corrupted[:, None, None, None],
            [labels[i] for i in control_idx],
            order,
        )
        c_present = ~np.isnan(c_effect[:, 0, 0, :])
        c_gap = (control.clean - control.corrupted).cpu().double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):  # a label no control prompt has
            c_norm = (np.nansum(c_effect, axis=0)[0] / c_present.sum(0)) / (
                (c_gap[:, None] * c_present).sum(0) / c_present.sum(0)
            )  # layer label
        layer, j = np.unravel_index(int(np.nanargmax(c_norm)), c_norm.shape)
        out["control"] = {
            "what": "resid_pre patched from a third person's clean run (wrong source)",
            "n_prompts": int(control.clean.shape[0]),
            "normalised_resid_pre": _nan_to_none(c_norm) if meaningful else None,
            "best": {"value": float(c_norm[layer, j]), "layer": int(layer), "position": order[j]}
            if meaningful
            else None,
        }
        arrays["control_normalised_resid_pre"] = c_norm
    return out, arrays


def _trace_group(
    run: Run,
    prompts: list[Example],
    corruption: str,
    opts: PatchOptions,
    rng: random.Random,
    gen: torch.Generator,
    std: float,
    progress: bool,
    desc: str,
) -> tuple[TraceGrids, TraceGrids | None, list[int], list[Example], int]:
    """Run one corruption on one group.

    Returns (trace, control, control_idx, prompts used, n skipped): the control covers the
    prompts `control_idx` of the prompts used (those for which a third person exists).
    """
    model, pools = run.model, template_pools(run.dataset)
    if corruption == "swap":
        pairs = [(e, swap_partner(e, pools[_key(e)], rng)) for e in prompts]
        used = [(e, q) for e, q in pairs if q is not None]
        skipped = len(prompts) - len(used)
        if not used:
            raise UserError(
                f"no swap partner for any prompt of {desc}: the subset needs people "
                "with same-length entities and different answers"
            )
        prompts = [e for e, _ in used]
        corrupters = [q for _, q in used]
        trace = trace_swap(
            model, prompts, corrupters, batch_size=opts.batch_size, progress=progress, desc=desc
        )
        third = [swap_partner(e, pools[_key(e)], rng, avoid_first=(q.answer[0],)) for e, q in used]
        idx = [i for i, r in enumerate(third) if r is not None]
        control = None
        if idx:
            control = trace_swap(
                model,
                [prompts[i] for i in idx],
                [corrupters[i] for i in idx],
                [t for t in third if t is not None],
                acts=("resid_pre",),
                batch_size=opts.batch_size,
                progress=progress,
                desc=desc + " control",
            )
    else:
        skipped = 0
        d_model = run.config.model.d_model
        noise = entity_noise(prompts, opts.noise_samples, d_model, opts.noise_scale * std, gen)
        e0 = prompts[0]
        alternatives = [
            o.answer[0]
            for o in run.dataset.select(
                subset=e0.subset, direction=e0.direction, templates=e0.templates
            )
        ]
        trace = trace_noise(
            model,
            prompts,
            noise,
            alternatives,
            batch_size=opts.batch_size,
            progress=progress,
            desc=desc,
        )
        third = [swap_partner(e, pools[_key(e)], rng) for e in prompts]
        idx = [i for i, r in enumerate(third) if r is not None]
        control = None
        if idx:
            control = trace_noise(
                model,
                [prompts[i] for i in idx],
                noise[idx],
                alternatives,
                [t for t in third if t is not None],
                acts=("resid_pre",),
                batch_size=opts.batch_size,
                progress=progress,
                desc=desc + " control",
            )
    return trace, control, idx, prompts, skipped


def run_analysis(
    run: Run,
    *,
    progress: bool = True,
    corruptions: Sequence[str] = CORRUPTIONS,
    templates: str = "train",
    batch_size: int = 512,
    max_prompts: int = 32,
    noise_samples: int = 5,
    noise_scale: float = 3.0,
    min_gap: float = 1.0,
    seed: int = 0,
    subsets: Sequence[str] = SUBSETS,
) -> dict[str, Any]:
    """Patch every subset x query (forward, reverse) x corruption; write analysis/patching.json
    and patching.npz, and return the JSON dict.

    JSON `groups[subset][query][corruption]` holds, per position name (`labels`), the mean raw
    effect grid [act][layer][label] (patched - corrupted, in `score_units`), the normalised grid
    (null where the clean-vs-corrupted gap is not meaningful), the baselines (mean and per
    prompt), the best cell per activation and the wrong-source control. Arrays in the .npz are
    named `<subset>/<query>/<corruption>/<array>`: `normalised` and `effect_raw` [act, layer,
    label] (acts in ACTS order; `normalised` is saved even where `meaningful` (0-d) is False,
    so check it), `per_prompt_effect` [prompt, act, layer, label], `clean`, `corrupted`,
    `person`, `template` [prompt], `control_normalised_resid_pre` [layer, label].
    """
    item_seed = run_seed(run.config, seed)  # item draws differ per (world, seed) run
    opts = PatchOptions(
        corruptions=tuple(corruptions),
        templates=templates,
        batch_size=batch_size,
        max_prompts=max_prompts,
        noise_samples=noise_samples,
        noise_scale=noise_scale,
        min_gap=min_gap,
        seed=item_seed,
    )
    opts.validate()
    if not subsets or any(s not in SUBSETS for s in subsets):
        raise UserError(f"subsets must be drawn from {SUBSETS}, got {list(subsets)}")
    model, ds = run.model, run.dataset
    model.eval()
    n_layers = run.config.model.n_layers
    entity_tokens = [
        t
        for e in ds.prompts
        for span in (e.a_span, e.b_span)
        if span[0] >= 0
        for t in e.tokens[span[0] : span[1]]
    ]
    std = embedding_std(model, entity_tokens)
    groups: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    jobs = [(s, q, c) for s in subsets for q in QUERIES for c in opts.corruptions]
    bar = tqdm(jobs, desc="patching", disable=not progress, dynamic_ncols=True)
    for k, (subset, query, corruption) in enumerate(bar):
        bar.set_postfix_str(f"{subset} {query} {corruption}")
        rng = random.Random(opts.seed * 1_000_003 + k)
        gen = torch.Generator().manual_seed(opts.seed * 1_000_003 + k)
        prompts = _select(ds, subset, QUERIES[query], opts, rng)
        if not prompts:
            continue
        desc = f"{subset} {query} {corruption}"
        trace, control, cidx, used, skipped = _trace_group(
            run, prompts, corruption, opts, rng, gen, std, progress, desc
        )
        res, arr = _summarise_group(trace, control, cidx, used, opts, ds)
        res = {"direction": QUERIES[query], "n_skipped_no_partner": skipped, **res}
        groups.setdefault(subset, {}).setdefault(query, {})[corruption] = res
        arrays.update({f"{subset}/{query}/{corruption}/{n}": v for n, v in arr.items()})

    result = {
        "options": asdict(opts) | {"subsets": list(subsets), "seed": seed},  # seed as asked
        "acts": list(ACTS),
        "n_layers": n_layers,
        "score_units": {c: SCORE_UNITS[c] for c in opts.corruptions},
        "noise_std": opts.noise_scale * std if "noise" in opts.corruptions else None,
        "embedding_std": std,
        "queries": {
            q: f"direction '{d}' prompts; the corrupted entity is the one the prompt "
            "names (A for n2d-order text, B for d2n-order text)"
            for q, d in QUERIES.items()
        },
        "groups": groups,
        "summary": summary(groups),
    }
    out = run.analysis_dir()
    tmp = out / "patching.tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(out / "patching.npz")
    write_json(out / "patching.json", result)
    return result


def summary(groups: dict[str, Any]) -> dict[str, float]:
    """Flat headline numbers. Per group `<subset>_<query>_<corruption>_`: `clean_minus_corrupt`
    (raw score gap, always), `<act>_best` and `control_best` (max normalised effect, only where
    the gap is meaningful). Headlines: `forward_*` / `reverse_*` are the n2d swap numbers."""
    out: dict[str, float] = {}
    for subset, by_q in groups.items():
        for query, by_c in by_q.items():
            for corruption, g in by_c.items():
                key = f"{subset}_{query}_{corruption}"
                out[f"{key}_clean_minus_corrupt"] = g["clean_minus_corrupt"]["mean"]
                if not g["meaningful"]:
                    continue
                for a in ACTS:
                    out[f"{key}_{a}_best"] = g["best"][a]["value"]
                if g.get("control") and g["control"]["best"]:
                    out[f"{key}_control_best"] = g["control"]["best"]["value"]
    for query in QUERIES:
        g = groups.get("n2d", {}).get(query, {}).get("swap")
        if g is None:
            continue
        out[f"{query}_clean_minus_corrupt"] = g["clean_minus_corrupt"]["mean"]
        out[f"{query}_clean"] = g["clean"]["mean"]
        out[f"{query}_corrupted"] = g["corrupted"]["mean"]
        if g["meaningful"]:
            out[f"{query}_best_restoration"] = g["best"]["resid_pre"]["value"]
            out[f"{query}_best_layer"] = float(g["best"]["resid_pre"]["layer"])
            if g.get("control") and g["control"]["best"]:
                out[f"{query}_control_best_restoration"] = g["control"]["best"]["value"]
    return out


def format_summary(result: dict[str, Any]) -> str:
    """A short table: per group the baselines, the gap and the best cell per activation."""
    lines = [
        f"{'group':<24} {'clean':>7} {'corrupt':>8} {'gap':>7}  best resid_pre / attn_out / "
        "mlp_out (value @ layer, position)"
    ]
    for subset, by_q in result["groups"].items():
        for query, by_c in by_q.items():
            for corruption, g in by_c.items():
                cells = []
                for a in ACTS:
                    b = g["best"][a]
                    cells.append(f"{b['value']:.2f}@L{b['layer']},{b['position']}")
                flag = "" if g["meaningful"] else "  [gap not meaningful: raw effects shown]"
                lines.append(
                    f"{subset + ' ' + query + ' ' + corruption:<24} "
                    f"{g['clean']['mean']:>7.2f} {g['corrupted']['mean']:>8.2f} "
                    f"{g['clean_minus_corrupt']['mean']:>7.2f}  {' / '.join(cells)}{flag}"
                )
    s = result["summary"]
    if "forward_best_restoration" in s:
        lines.append(
            f"forward (n2d, swap) best resid_pre restoration: "
            f"{s['forward_best_restoration']:.3f}; wrong-source control: "
            f"{s.get('forward_control_best_restoration', float('nan')):.3f}"
        )
    if "reverse_clean_minus_corrupt" in s:
        lines.append(
            f"reverse (n2d, swap) clean - corrupted logit difference: "
            f"{s['reverse_clean_minus_corrupt']:.3f}"
        )
    return "\n".join(lines)
