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

The batched engine that patches the cells (`patch_cells`, `get_act_patch`, the metric) is
`interp.analysis.activation_patching`, checked against TransformerLens; this module is the
reversal-curse study on it (the tracing), and `interp.analysis.patching_summary` its numbers
(position names, per-group summaries, sites, the severed path, `PatchingSummary`), re-exported
here.

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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.activation_patching import (
    ACTS,
    answer_score,
    cache_activations,
    hook_names,
    patch_cells,
    patch_positions,
    run_metric,
)
from interp.analysis.patching_summary import (  # the numbers of the study, re-exported
    QUERIES,
    SEVER,
    PatchingOptions,
    TraceGrids,
    details,
    entity_span,
    severed_restoration,
    summarise,
    summarise_group,
)
from interp.analysis.patching_summary import (
    PatchingSummary as PatchingSummary,
)
from interp.analysis.patching_summary import (
    by_label as by_label,
)
from interp.analysis.patching_summary import (
    entity_last_label as entity_last_label,
)
from interp.analysis.patching_summary import (
    entity_letter as entity_letter,
)
from interp.analysis.patching_summary import (
    format_summary as format_summary,
)
from interp.analysis.patching_summary import (
    label_order as label_order,
)
from interp.analysis.patching_summary import (
    position_labels as position_labels,
)
from interp.analysis.patching_summary import (
    site_restoration as site_restoration,
)
from interp.data.dataset import Example, FactDataset, pad_batch
from interp.errors import UserError
from interp.results import Result, summary_json, write_result
from interp.runs import Run
from interp.stats import run_seed

SCORE_UNITS = {
    "swap": "logit(right answer's first token) - logit(corrupting answer's first token), final "
    "prompt position",
    "noise": "logit(right answer's first token) - mean logit of the other answers' first tokens "
    "of the subset and query, final prompt position, mean over noise samples",
}

NAME = "patching"


# --- corruptions over sets of prompts -------------------------------------------------------


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
    span: bool = True,
) -> TraceGrids:
    """Entity swap: patch the clean run of `sources[i]` (default `prompts[i]`) into the run of
    `corrupters[i]` (the same template about another person), scored by the logit difference
    of prompts[i]'s answer over corrupters[i]'s answer (first tokens): every cell one position
    at a time (`patched`), and with `span` every token of the entity together (`span`, one
    forward pass per hook through TransformerLens's hooks)."""
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
    if not span:
        return TraceGrids(patched, clean, corrupted, lengths)
    # every token of the entity together (ROME restores the whole subject), per act and layer
    where = torch.zeros_like(corr_toks, dtype=torch.bool)
    for i, e in enumerate(prompts):
        start, end = entity_span(e)
        where[i, start:end] = True
    together = patch_positions(model, corr_toks, cache, names, where, metric)
    return TraceGrids(
        patched, clean, corrupted, lengths, together.reshape(len(prompts), len(acts), -1)
    )


@torch.no_grad()
def trace_severed(
    model: TransformerBridge, prompts: Sequence[Example], corrupters: Sequence[Example]
) -> Float[Tensor, "prompt sever layer"]:
    """ROME's severed-path tracing (Meng et al. 2022, section 2.2, Figure 3) under the entity
    swap: for every layer l, patch the clean `resid_pre` of block l at the entity's last token
    into the corrupted run, once as it is (`none`), once with the MLP outputs (`mlp`) and once
    with the attention outputs (`attn`) of blocks l..n_layers-1 at that token frozen at their
    corrupted values. What the patch still restores with the MLPs frozen does not need them: the
    gap between `none` and `mlp` is what the MLPs at that token carry (likewise attention).
    Scores are the swap's logit difference at the final position (raw; normalise with the
    trace's clean and corrupted scores)."""
    _check_aligned(prompts, corrupters, "severed")
    device = next(model.parameters()).device
    clean_toks, lengths = _tokens(prompts, device)
    corr_toks, _ = _tokens(corrupters, device)
    final, right = lengths - 1, _first(prompts, device)
    wrong = _first(corrupters, device)[:, None]
    pos = torch.tensor([entity_span(e)[1] - 1 for e in prompts], device=device)
    rows = torch.arange(len(prompts), device=device)
    n_layers = model.cfg.n_layers
    _, clean_cache = model.run_with_cache(
        clean_toks, names_filter=lambda n: n.endswith("hook_resid_pre")
    )
    _, corr_cache = model.run_with_cache(
        corr_toks, names_filter=lambda n: n.endswith(("hook_mlp_out", "hook_attn_out"))
    )

    def put(src: Tensor) -> Callable[..., Tensor]:
        def hook(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            act[rows, pos] = src[rows, pos].to(act.dtype)
            return act

        return hook

    out = torch.empty(len(prompts), len(SEVER), n_layers)
    for layer in range(n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        for v, sever in enumerate(SEVER):
            hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
                (name, put(clean_cache[name]))
            ]
            if sever != "none":
                frozen_names = [f"blocks.{m}.hook_{sever}_out" for m in range(layer, n_layers)]
                hooks += [(n, put(corr_cache[n])) for n in frozen_names]
            logits = model.run_with_hooks(corr_toks, fwd_hooks=hooks)
            out[:, v, layer] = answer_score(logits, final, right, wrong).cpu()
    return out


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


# --- the analysis ---------------------------------------------------------------------------


def _select(
    ds: FactDataset, subset: str, direction: str, opts: PatchingOptions, rng: random.Random
) -> list[Example]:
    prompts = ds.select(subset=subset, direction=direction, templates=opts.templates)
    if opts.max_prompts and len(prompts) > opts.max_prompts:
        prompts = sorted(
            rng.sample(prompts, opts.max_prompts), key=lambda e: (e.template, e.person)
        )
    return prompts


def _trace_group(
    run: Run,
    prompts: list[Example],
    corruption: str,
    opts: PatchingOptions,
    rng: random.Random,
    gen: torch.Generator,
    std: float,
    progress: bool,
    desc: str,
) -> tuple[TraceGrids, TraceGrids | None, list[int], list[Example], int, Tensor | None]:
    """Run one corruption on one group.

    Returns (trace, control, control_idx, prompts used, n skipped, severed): the control covers
    the prompts `control_idx` of the prompts used (those for which a third person exists);
    `severed` is `trace_severed`'s scores under the swap (None under noise).
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
        severed = trace_severed(model, prompts, corrupters)
        third = [swap_partner(e, pools[_key(e)], rng, avoid_first=(q.answer[0],)) for e, q in used]
        idx = [i for i, r in enumerate(third) if r is not None]
        control = None
        if idx:
            control = trace_swap(
                model,
                [prompts[i] for i in idx],
                [corrupters[i] for i in idx],
                [t for t in third if t is not None],
                batch_size=opts.batch_size,
                progress=progress,
                desc=desc + " control",
            )  # every act, for the same-site comparison
    else:
        skipped, severed = 0, None
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
    return trace, control, idx, prompts, skipped, severed


def run_analysis(
    run: Run, options: PatchingOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """Patch every subset x query (forward, reverse) x corruption; with `write`, save
    analysis/patching.json and patching.npz.

    JSON `groups[subset][query][corruption]` holds, per position name (`labels`), the mean raw
    effect grid [act][layer][label] (patched - corrupted, in `score_units`), the normalised grid
    (null where the clean-vs-corrupted gap is not meaningful), the baselines (mean and per
    prompt), the best cell per activation and the wrong-source control. Arrays in the .npz are
    named `<subset>/<query>/<corruption>/<array>`: `normalised` and `effect_raw` [act, layer,
    label] (acts in ACTS order; `normalised` is saved even where `meaningful` (0-d) is False,
    so check it), `per_prompt_effect` [prompt, act, layer, label], `clean`, `corrupted`,
    `person`, `template` [prompt], `control_normalised_resid_pre` [layer, label], and where
    the gap is meaningful `sites/entity_last` and `sites/final` [person, act, layer], each
    person's restored fraction at the entity's last token and at the final position (JSON
    `sites`: the mean over people per layer with its 95% interval, and the largest layer), and
    under the swap `severed` [person, sever, layer] (`trace_severed`, SEVER order; JSON
    `severed`).
    """
    asked = options or PatchingOptions()
    # item draws (prompts, swap partners, noise) differ per (world, seed) run
    opts = replace(asked, seed=run_seed(run.config, asked.seed))
    subsets = opts.subsets
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
        trace, control, cidx, used, skipped, severed = _trace_group(
            run, prompts, corruption, opts, rng, gen, std, progress, desc
        )
        res, arr = summarise_group(trace, control, cidx, used, opts, ds)
        if severed is not None and res["meaningful"]:
            res["severed"], arr["severed"] = severed_restoration(severed, trace, used)
        res = {"direction": QUERIES[query], "n_skipped_no_partner": skipped, **res}
        groups.setdefault(subset, {}).setdefault(query, {})[corruption] = res
        arrays.update({f"{subset}/{query}/{corruption}/{n}": v for n, v in arr.items()})

    data = {
        "options": asked.to_json(),  # as asked: the seed is an offset on the run's item seed
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
        "summary": summary_json(summarise(groups), details(groups)),
    }
    result: Result[PatchingSummary] = Result(NAME, data, arrays, summary_type=PatchingSummary)
    if write:
        write_result(run.path, result)
    return result
