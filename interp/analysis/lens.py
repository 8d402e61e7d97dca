"""The logit lens and the tuned lens: what each layer's residual stream already predicts.

Method. The logit lens (nostalgebraist 2020) reads an intermediate residual stream h_l as if it
were the last one: logits_l = unembed(ln_final(h_l)), with the final LayerNorm's statistics
recomputed on h_l itself (TransformerLens `ActivationCache.accumulated_resid` +
`apply_ln_to_stack(recompute_ln=True)` compute the same thing). Early layers need not speak the
unembedding's language, so the logit lens can miss information that is there. The tuned lens
(Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens",
arXiv 2303.08112) learns one affine translator per layer, h -> h + A_l h + b_l, initialised to the
identity (A_l = 0, b_l = 0) and trained to minimise KL(model's final distribution || lens_l) over
every position of the training documents; the final layer keeps the identity. The logit lens is
the tuned lens at its initialisation: one function (`lens_stack`) serves both, `translator=None`
being the identity.

Layers are depths of the residual stream: layer 0 is the embeddings (`blocks.0.hook_resid_pre`),
layer l + 1 is after block l (`blocks.l.hook_resid_post`); layer n_layers is the model's own
output, so the lens there equals the model's logits.

The question (SCIENCE.md section 2): at which depth, and at which position, is the answer
readable? Every test prompt holds exactly one entity and the answer is the other entity's text,
so the target is the answer's first token (B's role word for an n2d-order prompt, A's first name
for a d2n-order prompt) read at three named positions: A's last token, B's last token (only the
one in the prompt exists) and the final prompt position. At the entity's last token the same
target asks "is the other entity readable at this entity's position?". Ranks are 1-based over the
whole vocabulary (1 = top).

Controls.
- Random other entity: the same rank for the answer's first token of a random other person of
  the same subset (same direction and template, different first answer token), the lens-level
  version of the paper's log-probability test. A reverse prompt the model cannot answer ranks the
  correct token no better than this one, even when it ranks both well (it knows a name follows).
- Random initialisation: the logit lens on the run's own initial weights (`build_model` with
  `train.seed`): the answer's rank there is near chance, (d_vocab + 1) / 2.
- For the tuned lens, its KL to the final distribution on held-out people (every document about
  them left out of the fit) against the logit lens's on the same documents, per layer: a
  translator that does not beat the identity there has learned nothing that generalises.

The lens machinery (`lens_stack`, `lens_logits`, `TunedLens` and its training) is
:mod:`interp.analysis.tuned_lens`, re-exported here; this module reads it at named positions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.options import SEED_MAX, Options, option
from interp.analysis.tuned_lens import (
    BATCH,
    TunedLens,
    TunedLensOptions,
    doc_streams,
    fit_tuned_lens,
    kl_to_final,
    lens_stack,
    split_docs,
)
from interp.analysis.tuned_lens import (  # re-exported: the notebook's entry points
    lens_logits as lens_logits,
)
from interp.data.dataset import DIRECTIONS, TEMPLATE_KINDS, Example, pad_batch
from interp.data.world import SUBSETS
from interp.errors import UserError
from interp.model import build_bridge, residual_stack
from interp.model import resid_hook_names as resid_hook_names
from interp.results import Result, Section, Summary, number, section, summary_json, write_result
from interp.runs import Run
from interp.stats import NONNEGATIVE, RANK, run_seed

POSITIONS = ("a_last", "b_last", "final")  # where the lens reads the residual stream
TARGETS = ("answer", "random_entity")  # the answer's first token; the control's
STATS = ("mean_rank", "median_rank", "mean_log_rank", "mean_prob", "mean_logprob")
NAME = "lens"


@dataclass(frozen=True)
class RankByDirection(Section):
    """Median 1-based rank of the answer's first token (1 = top), over every prompt of a
    direction (all subsets pooled)."""

    same: float | None = number("forward prompts", RANK, headline=True)
    reverse: float | None = number("reverse prompts", RANK, headline=True)


@dataclass(frozen=True)
class LensSummary(Summary):
    """The lens's headline numbers (`result.summary` of `run_analysis`): median 1-based rank of
    the answer's first token over the vocabulary (1 = top; chance is `chance_rank`), last layer,
    and the held-out KL of each lens to the model's final distribution. Per-cell ranks (subset x
    direction x position, best layers) and KL per layer are details (`rank_last_layer`,
    `kl_by_layer`)."""

    final_pos_rank_last_layer_all: RankByDirection = section(
        RankByDirection, "logit lens, final prompt position, last layer"
    )
    control_random_init_final_pos_rank_last_layer_all: RankByDirection = section(
        RankByDirection, "the same on the run's random initial weights (about chance_rank)"
    )
    kl_logit_heldout_mean: float | None = number(
        "KL(final || logit lens), nats, on held-out people, mean over the layers before the last",
        NONNEGATIVE,
        headline=True,
    )
    kl_tuned_heldout_mean: float | None = number(
        "the same for the tuned lens (None unless it was trained: `tuned`)",
        NONNEGATIVE,
        headline=True,
    )
    chance_rank: float | None = number("(d_vocab + 1) / 2, the rank of a random guess", RANK)

    def kl_by_layer(self, lens: str = "logit") -> tuple[float, ...]:
        """KL(final || `lens`) on held-out people per layer 0 .. n_layers - 1 (nats)."""
        return self.series(f"kl_{lens}_layer{{}}")

    def rank_last_layer(
        self, position: str = "final", control: str | None = None
    ) -> dict[tuple[str, str], float]:
        """Median rank at `position` (a_last, b_last, final), last layer, by (subset,
        direction); `control` "random_entity" or "random_init" for those controls."""
        tag = "final_pos" if position == "final" else f"{position}_pos"
        pre = f"control_{control}_" if control else ""
        return self.cells(
            pre + tag + "_rank_last_layer_{subset}_{direction}",
            subset=SUBSETS,
            direction=DIRECTIONS,
        )


@dataclass(frozen=True)
class LensOptions(Options):
    """What the lens analysis reads and how the tuned lens is trained (each help line is also the
    CLI's --help)."""

    tuned: bool = option(
        False,
        "also train a tuned lens (affine translator per layer, Belrose et al. 2023) and save it "
        "as analysis/tuned_lens.safetensors",
    )
    templates: str = option(
        "train", "test prompts on training or held-out paraphrase templates", choices=TEMPLATE_KINDS
    )
    control_seed: int = option(
        0, "seed of the random same-subset control entity", min=0, max=SEED_MAX
    )
    tuned_steps: int = option(500, "optimiser steps of the tuned lens", min=1)
    tuned_lr: float = option(
        3e-3, "Adam learning rate of the tuned lens", min=0, max=10, min_open=True
    )
    tuned_batch_tokens: int = option(512, "token positions per tuned-lens step", min=1)
    tuned_heldout_frac: float = option(
        0.1,
        "fraction of people held out (every document about them) to measure the KL to the "
        "final layer on facts the tuned lens never saw",
        min=0,
        max=1,
        min_open=True,
    )
    tuned_seed: int = option(
        0, "seed of the held-out split and of the tuned-lens batches", min=0, max=SEED_MAX
    )

    def tuned_lens(self) -> TunedLensOptions:
        """The tuned-lens training options these name."""
        return TunedLensOptions(
            steps=self.tuned_steps,
            lr=self.tuned_lr,
            batch_tokens=self.tuned_batch_tokens,
            heldout_frac=self.tuned_heldout_frac,
            seed=self.tuned_seed,
        )


# ---------------------------------------------------------------------------------------------
# Ranks at named positions


def position_table(examples: Sequence[Example]) -> Int[np.ndarray, "n position"]:
    """Per prompt, the token position of A's last token, B's last token and the final prompt
    token (-1 where that entity is not in the prompt). Read from the examples' own spans."""
    out = np.full((len(examples), len(POSITIONS)), -1, dtype=np.int64)
    for i, e in enumerate(examples):
        if 0 <= e.a_span[0] and e.a_span[1] <= e.prompt_len:
            out[i, 0] = e.a_last
        if 0 <= e.b_span[0] and e.b_span[1] <= e.prompt_len:
            out[i, 1] = e.b_last
        out[i, 2] = e.prompt_len - 1
    return out


def control_targets(prompts: Sequence[Example], seed: int = 0) -> Int[np.ndarray, " n"]:
    """Per prompt, the answer's first token of a random other person of the same subset (same
    direction and template) whose first answer token differs; -1 if there is none."""
    rng = random.Random(seed)
    groups: dict[tuple, list[Example]] = {}
    for e in prompts:
        groups.setdefault((e.subset, e.direction, e.templates, e.template), []).append(e)
    out = np.full(len(prompts), -1, dtype=np.int64)
    for i, e in enumerate(prompts):
        others = [
            o.answer[0]
            for o in groups[(e.subset, e.direction, e.templates, e.template)]
            if o.person != e.person and o.answer[0] != e.answer[0]
        ]
        if others:
            out[i] = rng.choice(others)
    return out


@torch.no_grad()
def score_prompts(
    model: TransformerBridge,
    prompts: Sequence[Example],
    targets: Int[np.ndarray, "n target"],
    translator: TunedLens | None = None,
    progress: bool = False,
    desc: str = "lens",
) -> tuple[
    Float[np.ndarray, "n target position layer"], Float[np.ndarray, "n target position layer"]
]:
    """1-based rank and log-probability of each target token under the lens, at every named
    position and depth. NaN where the position is not in the prompt or the target is -1."""
    device = next(model.parameters()).device
    where = position_table(prompts)
    n_stack = model.cfg.n_layers + 1
    shape = (len(prompts), targets.shape[1], len(POSITIONS), n_stack)
    ranks, logps = np.full(shape, np.nan), np.full(shape, np.nan)
    for s in tqdm(range(0, len(prompts), BATCH), desc=desc, disable=not progress):
        chunk = prompts[s : s + BATCH]
        toks, _ = pad_batch([e.prompt for e in chunk], device=device)
        stack = residual_stack(model, toks)  # [layer, batch, pos, d_model]
        rows = torch.arange(len(chunk), device=device)
        tgt = torch.as_tensor(targets[s : s + len(chunk)], device=device)  # [batch, target]
        for k in range(len(POSITIONS)):
            pos = torch.as_tensor(where[s : s + len(chunk), k], device=device)
            h = stack[:, rows, pos.clamp(min=0)]  # [layer, batch, d_model]
            logp = lens_stack(model, h, translator).log_softmax(-1)  # [layer, batch, d_vocab]
            idx = tgt.clamp(min=0)[None].expand(n_stack, -1, -1)  # [layer, batch, target]
            t_logp = logp.gather(-1, idx)  # [layer, batch, target]
            rank = 1 + (logp[:, :, None, :] > t_logp[..., None]).sum(-1)  # [layer, batch, target]
            ok = ((pos >= 0)[:, None] & (tgt >= 0)).cpu().numpy()  # [batch, target]
            r = rank.permute(1, 2, 0).float().cpu().numpy()  # [batch, target, layer]
            lp = t_logp.permute(1, 2, 0).cpu().numpy()
            ranks[s : s + len(chunk), :, k] = np.where(ok[..., None], r, np.nan)
            logps[s : s + len(chunk), :, k] = np.where(ok[..., None], lp, np.nan)
    return ranks, logps


def cell_stats(
    ranks: Float[np.ndarray, "n target position layer"],
    logps: Float[np.ndarray, "n target position layer"],
    prompts: Sequence[Example],
) -> tuple[
    dict[str, Float[np.ndarray, "subset direction target position layer"]],
    Int[np.ndarray, "subset direction target position"],
]:
    """Mean/median rank, mean log-rank, mean probability, mean log-probability per subset x
    direction (NaN for an empty cell), and the number of prompts in each cell."""
    t, k, n_layer = ranks.shape[1:]
    shape = (len(SUBSETS), len(DIRECTIONS), t, k, n_layer)
    out = {s: np.full(shape, np.nan) for s in STATS}
    counts = np.zeros(shape[:-1], dtype=np.int64)
    subset = np.array([e.subset for e in prompts])
    direction = np.array([e.direction for e in prompts])
    for i, s in enumerate(SUBSETS):
        for j, d in enumerate(DIRECTIONS):
            sel = (subset == s) & (direction == d)
            for ti in range(t):
                for ki in range(k):
                    r = ranks[sel, ti, ki]  # [m, layer]
                    lp = logps[sel, ti, ki]
                    r, lp = r[~np.isnan(r[:, 0])], lp[~np.isnan(r[:, 0])]
                    counts[i, j, ti, ki] = len(r)
                    if not len(r):
                        continue
                    out["mean_rank"][i, j, ti, ki] = r.mean(0)
                    out["median_rank"][i, j, ti, ki] = np.median(r, 0)
                    out["mean_log_rank"][i, j, ti, ki] = np.log(r).mean(0)
                    out["mean_prob"][i, j, ti, ki] = np.exp(lp).mean(0)
                    out["mean_logprob"][i, j, ti, ki] = lp.mean(0)
    return out, counts


# ---------------------------------------------------------------------------------------------
# The analysis of a run


def run_analysis(
    run: Run, options: LensOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result:
    """Logit lens (and with `tuned`, the tuned lens) on the run's test prompts of `templates`.

    With `write`, saves analysis/lens.json (summary, options, per-layer curves), analysis/lens.npz
    (the arrays [subset, direction, target, position, layer] per lens and statistic, and
    per-prompt ranks); with `tuned`, analysis/tuned_lens.safetensors whatever `write` says.
    """
    opts = options or LensOptions()
    tuned, templates = opts.tuned, opts.templates
    tuned_options = opts.tuned_lens()
    # item draws (control targets, the tuned lens's split and batches) differ per run
    item_control_seed = run_seed(run.config, opts.control_seed)
    item_tuned = replace(tuned_options, seed=run_seed(run.config, tuned_options.seed))
    model, ds = run.model, run.dataset
    model.eval()
    prompts = [e for e in ds.prompts if e.templates == templates and e.subset in SUBSETS]
    if not prompts:
        raise UserError(
            f"the run has no test prompts on {templates!r} templates: "
            f"use --templates {'train' if templates == 'heldout' else 'heldout'}"
        )
    targets = np.stack(
        [np.array([e.answer[0] for e in prompts]), control_targets(prompts, item_control_seed)],
        axis=1,
    )  # [n, target]
    n_layers = model.cfg.n_layers

    lenses: dict[str, tuple[TransformerBridge, TunedLens | None]] = {"logit": (model, None)}
    arrays: dict[str, Any] = {}
    kl: dict[str, list[float]] = {}
    if tuned:
        lens, info = fit_tuned_lens(model, ds.train_docs, item_tuned, progress)
        lens.save(
            run.analysis_dir() / "tuned_lens.safetensors",
            metadata={
                "config_hash": run.config.hash(),
                **{k: str(v) for k, v in asdict(item_tuned).items()},
            },
        )
        lenses["tuned"] = (model, lens)
        kl = info
    else:
        _, held = split_docs(ds.train_docs, item_tuned.heldout_frac, item_tuned.seed)
        kl = {"kl_logit_heldout": kl_to_final(model, *doc_streams(model, held)).tolist()}
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global RNG; leave it be
        random_init = build_bridge(
            run.config.model,
            ds.d_vocab,
            run.config.train.seed,
            str(next(model.parameters()).device),
        ).eval()
    lenses["random_init"] = (random_init, None)

    stats_by_lens: dict[str, dict[str, np.ndarray]] = {}
    counts = np.zeros(0)
    for name, (m, translator) in lenses.items():
        ranks, logps = score_prompts(m, prompts, targets, translator, progress, desc=f"{name} lens")
        stats_by_lens[name], counts = cell_stats(ranks, logps, prompts)
        arrays[f"{name}_rank"] = ranks
        arrays[f"{name}_logprob"] = logps
        for stat, v in stats_by_lens[name].items():
            arrays[f"{name}_{stat}"] = v
    arrays["n"] = counts
    arrays["person"] = np.array([e.person for e in prompts])
    arrays["subset"] = np.array([e.subset for e in prompts])
    arrays["direction"] = np.array([e.direction for e in prompts])
    arrays["template"] = np.array([e.template for e in prompts])
    arrays["target_token"] = targets
    for key, values in kl.items():
        if key.startswith("kl_"):
            arrays[key] = np.array(values)

    data = {
        "options": opts.to_json(),
        "summary": summary_json(
            headline_summary(arrays, list(lenses), kl, n_layers, ds.d_vocab),
            summarise(stats_by_lens, counts, kl, n_layers),
        ),
        "axes": {
            "subset": list(SUBSETS),
            "direction": list(DIRECTIONS),
            "target": list(TARGETS),
            "position": list(POSITIONS),
            "layer": layer_labels(n_layers),
            "lens": list(lenses),
        },
        "d_vocab": ds.d_vocab,
        "chance_rank": (ds.d_vocab + 1) / 2,
        "n_layers": n_layers,
        "n_prompts": len(prompts),
        "curves": {
            name: {
                "median_rank": _nested(st["median_rank"]),
                "mean_log_rank": _nested(st["mean_log_rank"]),
            }
            for name, st in stats_by_lens.items()
        },
        "kl_to_final": {k: v for k, v in kl.items() if k.startswith("kl_")},
        "files": {"arrays": "lens.npz", "tuned_lens": "tuned_lens.safetensors" if tuned else None},
    }
    result: Result[LensSummary] = Result(NAME, data, arrays, summary_type=LensSummary)
    if write:
        write_result(run.path, result)
    return result


def layer_labels(n_layers: int) -> list[str]:
    return ["embed", *[f"block {i}" for i in range(n_layers)]]


def _nested(a: Float[np.ndarray, "subset direction target position layer"]) -> dict[str, Any]:
    """{subset: {direction: {target: {position: [per layer]}}}}, cells absent where empty."""
    out: dict[str, Any] = {}
    for i, s in enumerate(SUBSETS):
        for j, d in enumerate(DIRECTIONS):
            for t, tn in enumerate(TARGETS):
                for k, p in enumerate(POSITIONS):
                    if not np.isnan(a[i, j, t, k, 0]):
                        out.setdefault(s, {}).setdefault(d, {}).setdefault(tn, {})[p] = [
                            float(x) for x in a[i, j, t, k]
                        ]
    return out


def summarise(
    stats: dict[str, dict[str, np.ndarray]],
    counts: np.ndarray,
    kl: dict[str, Any],
    n_layers: int,
) -> dict[str, float]:
    """The details: median rank of the answer's first token at the final position and the
    in-prompt entity's last token (last layer, and best layer for the entity position), with the
    random-entity and random-init controls at the same places, and KL per layer."""
    out: dict[str, float] = {}
    ans, ctl = TARGETS.index("answer"), TARGETS.index("random_entity")
    for i, s in enumerate(SUBSETS):
        for j, d in enumerate(DIRECTIONS):
            for k, p in enumerate(POSITIONS):
                if counts[i, j, ans, k] == 0:
                    continue
                key = f"{s}_{d}"
                tag = "final_pos" if p == "final" else f"{p}_pos"
                med = stats["logit"]["median_rank"][i, j, :, k]  # [target, layer]
                out[f"{tag}_rank_last_layer_{key}"] = float(med[ans, -1])
                out[f"{tag}_logprob_last_layer_{key}"] = float(
                    stats["logit"]["mean_logprob"][i, j, ans, k, -1]
                )
                out[f"control_random_entity_{tag}_rank_last_layer_{key}"] = float(med[ctl, -1])
                out[f"control_random_entity_{tag}_logprob_last_layer_{key}"] = float(
                    stats["logit"]["mean_logprob"][i, j, ctl, k, -1]
                )
                out[f"control_random_init_{tag}_rank_last_layer_{key}"] = float(
                    stats["random_init"]["median_rank"][i, j, ans, k, -1]
                )
                if p != "final":
                    for lens in [x for x in ("logit", "tuned") if x in stats]:
                        m = stats[lens]["median_rank"][i, j, :, k]
                        out[f"{lens}_{tag}_best_rank_{key}"] = float(m[ans].min())
                        out[f"control_random_entity_{lens}_{tag}_best_rank_{key}"] = float(
                            m[ctl].min()
                        )
                    out[f"control_random_init_{tag}_best_rank_{key}"] = float(
                        stats["random_init"]["median_rank"][i, j, ans, k].min()
                    )
    for name, values in kl.items():
        if name.startswith("kl_") and name.endswith("heldout"):
            which = name.split("_")[1]
            for layer, v in enumerate(values[:n_layers]):
                out[f"kl_{which}_layer{layer}"] = float(v)
    return out


def headline_summary(
    arrays: dict[str, np.ndarray],
    lenses: list[str],
    kl: dict[str, Any],
    n_layers: int,
    d_vocab: int,
) -> LensSummary:
    """The declared numbers: median rank of the answer's first token at the final position, last
    layer, over every prompt of a direction (all subsets pooled; the random-init control's most
    stable number), and each lens's held-out KL, mean over the layers before the last (the last
    is the model itself, KL 0 for both)."""
    k, ans = POSITIONS.index("final"), TARGETS.index("answer")

    def pooled(lens: str) -> RankByDirection:
        if lens not in lenses:
            return RankByDirection()
        ranks = {
            d: float(np.median(arrays[f"{lens}_rank"][arrays["direction"] == d, ans, k, -1]))
            for d in DIRECTIONS
        }
        return RankByDirection(**ranks)

    def kl_mean(lens: str) -> float | None:
        values = kl.get(f"kl_{lens}_heldout")
        return None if values is None else float(np.mean(values[:n_layers]))

    return LensSummary(
        final_pos_rank_last_layer_all=pooled("logit"),
        control_random_init_final_pos_rank_last_layer_all=pooled("random_init"),
        kl_logit_heldout_mean=kl_mean("logit"),
        kl_tuned_heldout_mean=kl_mean("tuned"),
        chance_rank=(d_vocab + 1) / 2,
    )


def format_summary(result: Result) -> str:
    """A short text table: median rank of the answer's first token, last layer and best layer."""
    s = result["summary"]
    lens_names = ["logit"] + (["tuned"] if result["options"]["tuned"] else [])
    lines = [
        f"lens on {result['options']['templates']} templates, {result['n_prompts']} prompts, "
        f"d_vocab {result['d_vocab']} (chance rank {result['chance_rank']:.0f}); median rank "
        "of the answer's first token (1 = top), control = random same-subset entity",
        f"{'subset':<6} {'dir':<8} {'final':>6} {'ctrl':>6} {'rnd-init':>8}   "
        f"{'entity pos':<10} {'last':>6} "
        + " ".join(f"{'best ' + n:>10}" for n in lens_names)
        + f" {'ctrl':>6}",
    ]
    for sub in SUBSETS:
        for d in DIRECTIONS:
            key = f"{sub}_{d}"
            if f"final_pos_rank_last_layer_{key}" not in s:
                continue
            ent = next(
                (p for p in ("a_last", "b_last") if f"{p}_pos_rank_last_layer_{key}" in s), None
            )
            row = (
                f"{sub:<6} {d:<8} {s[f'final_pos_rank_last_layer_{key}']:>6.1f} "
                f"{s[f'control_random_entity_final_pos_rank_last_layer_{key}']:>6.1f} "
                f"{s[f'control_random_init_final_pos_rank_last_layer_{key}']:>8.1f}   "
            )
            if ent:
                tag = f"{ent}_pos"
                row += (
                    f"{ent:<10} {s[f'{tag}_rank_last_layer_{key}']:>6.1f} "
                    + " ".join(f"{s[f'{n}_{tag}_best_rank_{key}']:>10.1f}" for n in lens_names)
                    + f" {s[f'control_random_entity_logit_{tag}_best_rank_{key}']:>6.1f}"
                )
            lines.append(row)
    kls = [(k, v) for k, v in s.items() if k.startswith("kl_")]
    if kls:
        lines.append(
            "held-out KL to the final distribution (nats): "
            + ", ".join(f"{k[3:]}={v:.3f}" for k, v in kls)
        )
    return "\n".join(lines)
