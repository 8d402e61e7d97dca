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
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from interp.analysis.options import SEED_MAX, Options, option
from interp.data.dataset import DIRECTIONS, TEMPLATE_KINDS, Example, pad_batch
from interp.data.world import SUBSETS
from interp.errors import UserError
from interp.model import build_model, frozen
from interp.runs import Result, Run, write_result
from interp.stats import run_seed

POSITIONS = ("a_last", "b_last", "final")  # where the lens reads the residual stream
TARGETS = ("answer", "random_entity")  # the answer's first token; the control's
STATS = ("mean_rank", "median_rank", "mean_log_rank", "mean_prob", "mean_logprob")
BATCH = 256
NAME = "lens"
# The summary numbers the report prints: median rank of the answer's first token at the final
# position, last layer, forward vs reverse (all subsets pooled), and the random-init control.
HEADLINES = (
    "final_pos_rank_last_layer_all_same",
    "final_pos_rank_last_layer_all_reverse",
    "control_random_init_final_pos_rank_last_layer_all_same",
    "control_random_init_final_pos_rank_last_layer_all_reverse",
    # KL(final || lens) on held-out people, mean over the layers before the last: the tuned lens
    # beside the logit lens (the tuned one only where the study fits it)
    "kl_logit_heldout_mean",
    "kl_tuned_heldout_mean",
)


# ---------------------------------------------------------------------------------------------
# The lens: one generic function, the logit lens being its identity case


class TunedLens(nn.Module):
    """Affine translators h -> h + h @ weight[l] + bias[l], one per layer 0..n_layers-1.

    Zero-initialised, so a fresh `TunedLens` is the identity: the logit lens. Layer n_layers (the
    model's output) has no translator. Saved as safetensors (`save`/`load`), never pickled.
    """

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    def forward(
        self, h: Float[Tensor, "*rest d_model"], layer: int
    ) -> Float[Tensor, "*rest d_model"]:
        if layer == self.n_layers:
            return h
        return h + h @ self.weight[layer] + self.bias[layer]

    def check(self, model: TransformerBridge) -> None:
        """Refuse a lens made for another model shape."""
        if self.n_layers != model.cfg.n_layers or self.weight.shape[1] != model.cfg.d_model:
            raise UserError(
                f"tuned lens has {self.n_layers} layers x d_model {self.weight.shape[1]}, the "
                f"model {model.cfg.n_layers} x {model.cfg.d_model}: train a lens for this model "
                "(interp lens RUN_DIR --tuned)"
            )

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {
                "weight": self.weight.detach().cpu().contiguous(),
                "bias": self.bias.detach().cpu().contiguous(),
            },
            str(tmp),
            metadata=metadata,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> TunedLens:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"tuned lens {path} not found: make it with `interp lens RUN_DIR --tuned`"
            )
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(
                f"tuned lens {path} is truncated or corrupt ({e}): retrain it"
            ) from None
        if set(state) != {"weight", "bias"} or state["weight"].ndim != 3:
            raise UserError(f"{path} is not a tuned lens (keys {sorted(state)}): retrain it")
        lens = cls(state["weight"].shape[0], state["weight"].shape[1])
        lens.load_state_dict(state)
        return lens


def resid_hook_names(n_layers: int) -> list[str]:
    """Hooks of the accumulated residual stream: every block's resid_pre, the last resid_post."""
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


def residual_stack(
    model: TransformerBridge, cache_or_tokens: ActivationCache | Int[Tensor, "batch pos"]
) -> Float[Tensor, "layer batch pos d_model"]:
    """The residual stream at every depth (layer 0 = embeddings ... n_layers = final), from a cache
    or by running the tokens (no gradient)."""
    if isinstance(cache_or_tokens, ActivationCache):
        cache = cache_or_tokens
    else:
        names = set(resid_hook_names(model.cfg.n_layers))
        with torch.no_grad():
            _, cache = model.run_with_cache(cache_or_tokens, names_filter=lambda n: n in names)
    stack = cache.accumulated_resid(layer=None, incl_mid=False, apply_ln=False)
    assert isinstance(stack, Tensor)  # a tuple only with return_labels=True
    return stack


def lens_stack(
    model: TransformerBridge,
    resid: Float[Tensor, "layer *rest d_model"],
    translator: TunedLens | None = None,
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "layer *rest d_vocab"]:
    """The generic lens: translate each layer's stream, final LayerNorm with its statistics
    recomputed on that stream, unembed. `resid[i]` is the stream at depth `layers[i]` (default
    0..n_layers); `translator=None` is the identity, i.e. the logit lens."""
    layers = list(range(resid.shape[0])) if layers is None else list(layers)
    if len(layers) != resid.shape[0]:
        raise ValueError(f"{len(layers)} layer indices for a stack of {resid.shape[0]}")
    out = []
    for i, layer in enumerate(layers):
        h = resid[i] if translator is None else translator(resid[i], layer)
        flat = h.reshape(1, -1, h.shape[-1])  # [1, n, d_model]: ln_final acts per row
        out.append(model.unembed(model.ln_final(flat)).reshape(*h.shape[:-1], -1))
    return torch.stack(out)


def lens_logits(
    model: TransformerBridge,
    cache_or_tokens: ActivationCache | Int[Tensor, "batch pos"],
    layer: int,
    positions: int | Int[Tensor, " batch"],
    translator: TunedLens | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """Lens logits at depth `layer` (0 = embeddings, n_layers = the model's output), at one
    position per row (an int for all rows, or a tensor of per-row positions). For notebooks:

        lens_logits(run.model, tokens, layer=1, positions=torch.tensor([e.a_last for e in exs]))
    """
    n_layers = model.cfg.n_layers
    if not -n_layers - 1 <= layer <= n_layers:
        raise UserError(f"layer {layer} out of range: use 0 (embeddings) .. {n_layers} (output)")
    layer %= n_layers + 1
    stack = residual_stack(model, cache_or_tokens)  # [layer, batch, pos, d_model]
    batch = stack.shape[1]
    pos = torch.as_tensor(positions, device=stack.device).expand(batch) % stack.shape[2]
    h = stack[layer, torch.arange(batch, device=stack.device), pos]  # [batch, d_model]
    return lens_stack(model, h[None], translator, layers=[layer])[0]


# ---------------------------------------------------------------------------------------------
# Training the tuned lens


@dataclass(frozen=True)
class TunedLensOptions:
    """How the tuned lens is trained (Adam on the summed per-layer KL, sampled token batches)."""

    steps: int = 500  # optimiser steps
    lr: float = 3e-3  # Adam learning rate
    batch_tokens: int = 512  # token positions per step
    heldout_frac: float = 0.1  # fraction of people (all their documents) held out to measure KL
    seed: int = 0  # offset on the run seed (stats.run_seed) of the held-out split and batches


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
    tuned_lr: float = option(3e-3, "Adam learning rate of the tuned lens", min=0, min_open=True)
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


def split_docs(
    docs: Sequence[Example], heldout_frac: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded person-disjoint split of documents into (fit, held-out): `heldout_frac` of the
    people (at least one, never all) with every document about them are held out.

    A split by document would leave a held-out person's other paraphrases in the fit set, so the
    held-out KL would be measured on facts the translator has already seen; holding out whole
    people measures it on facts it never saw. Documents about no person (`person` < 0) go to
    the fit set.
    """
    people = sorted({d.person for d in docs if d.person >= 0})
    if len(people) < 2:
        raise UserError(
            f"the tuned lens needs documents about at least 2 people to hold some out, got "
            f"{len(people)}: use a world with more people"
        )
    random.Random(seed).shuffle(people)
    n_out = min(len(people) - 1, max(1, round(heldout_frac * len(people))))
    held_people = set(people[:n_out])
    fit = [d for d in docs if d.person not in held_people]
    return fit, [d for d in docs if d.person in held_people]


@torch.no_grad()
def doc_streams(
    model: TransformerBridge, docs: Sequence[Example], progress: bool = False
) -> tuple[Float[Tensor, "layer n d_model"], Float[Tensor, "n d_vocab"]]:
    """Residual streams at every real (non-pad) position of `docs`, and the model's final
    log-probabilities there."""
    device = next(model.parameters()).device
    streams, finals = [], []
    for s in tqdm(range(0, len(docs), BATCH), desc="lens streams", disable=not progress):
        toks, lengths = pad_batch([d.tokens for d in docs[s : s + BATCH]], device=device)
        stack = residual_stack(model, toks)  # [layer, batch, pos, d_model]
        real = torch.arange(toks.shape[1], device=device)[None] < lengths[:, None]  # [batch, pos]
        streams.append(stack[:, real])  # [layer, n_real, d_model]
        finals.append(
            lens_stack(model, stack[-1:, real], layers=[model.cfg.n_layers])[0].log_softmax(-1)
        )
    return torch.cat(streams, dim=1), torch.cat(finals)


def kl_to_final(
    model: TransformerBridge,
    streams: Float[Tensor, "layer n d_model"],
    final_logp: Float[Tensor, "n d_vocab"],
    translator: TunedLens | None = None,
) -> Float[Tensor, " layer"]:
    """Mean over positions of KL(final distribution || lens distribution), per layer (nats)."""
    logp = lens_stack(model, streams, translator).log_softmax(-1)  # [layer, n, d_vocab]
    return (final_logp.exp() * (final_logp - logp)).sum(-1).mean(-1)


def fit_tuned_lens(
    model: TransformerBridge,
    docs: Sequence[Example],
    options: TunedLensOptions = TunedLensOptions(),
    progress: bool = True,
) -> tuple[TunedLens, dict[str, list[float]]]:
    """Train a tuned lens on `docs` (all real positions) minus a held-out split of people.

    Returns the lens and per-layer KL to the final distribution on the held-out documents for the
    logit lens (identity) and the tuned lens, plus the tuned lens's KL on the fitted documents.
    """
    fit, held = split_docs(docs, options.heldout_frac, options.seed)
    streams, final_logp = doc_streams(model, fit, progress)
    h_streams, h_final = doc_streams(model, held)
    device = streams.device
    n_layers = model.cfg.n_layers
    lens = TunedLens(n_layers, model.cfg.d_model).to(device)
    opt = torch.optim.Adam(lens.parameters(), lr=options.lr)
    g = torch.Generator().manual_seed(options.seed)
    model.eval()
    with frozen(model):
        for _ in tqdm(range(options.steps), desc="tuned lens", disable=not progress):
            idx = torch.randint(streams.shape[1], (options.batch_tokens,), generator=g).to(device)
            kl = kl_to_final(model, streams[:n_layers, idx], final_logp[idx], lens)
            opt.zero_grad(set_to_none=True)
            kl.sum().backward()
            opt.step()
        with torch.no_grad():
            info = {
                "kl_logit_heldout": kl_to_final(model, h_streams, h_final).tolist(),
                "kl_tuned_heldout": kl_to_final(model, h_streams, h_final, lens).tolist(),
                "kl_tuned_fit": kl_to_final(model, streams, final_logp, lens).tolist(),
            }
    info["n_tokens_fit"] = [float(streams.shape[1])]
    info["n_tokens_heldout"] = [float(h_streams.shape[1])]
    return lens.eval(), info


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
        random_init = build_model(
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
        "summary": {
            **summarise(stats_by_lens, counts, kl, n_layers, ds.d_vocab),
            **pooled_final_ranks(arrays, list(lenses)),
        },
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
    result = Result(NAME, data, arrays)
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
    d_vocab: int,
) -> dict[str, float]:
    """The flat headline numbers: median rank of the answer's first token at the final position
    and the in-prompt entity's last token (last layer, and best layer for the entity position),
    with the random-entity and random-init controls at the same places, and KL per layer."""
    out: dict[str, float] = {"chance_rank": (d_vocab + 1) / 2}
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
            # the last layer is the model itself (KL 0 for both), so it is left out of the mean
            out[f"kl_{which}_heldout_mean"] = float(np.mean(values[:n_layers]))
    return out


def pooled_final_ranks(arrays: dict[str, np.ndarray], lenses: list[str]) -> dict[str, float]:
    """Median rank of the answer's first token at the final position, last layer, over every
    prompt of a direction (all subsets pooled): the random-init control's most stable number."""
    out = {}
    k, ans = POSITIONS.index("final"), TARGETS.index("answer")
    for lens in ("logit", "random_init"):
        if lens not in lenses:
            continue
        prefix = "" if lens == "logit" else "control_random_init_"
        for d in DIRECTIONS:
            r = arrays[f"{lens}_rank"][arrays["direction"] == d, ans, k, -1]
            out[f"{prefix}final_pos_rank_last_layer_all_{d}"] = float(np.median(r))
    return out


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
