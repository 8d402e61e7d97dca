"""The gradient-update test: does one step on "A is B" write B into A, and A into B?

Method. Berglund et al. (2023, "The Reversal Curse", section 4) explain the curse by the shape of
the gradient: next-token prediction on "A is B" asks for B's tokens given A, so an update can
change A's representation to carry B, but no term of the loss asks B's representation to
predict anything about A (SCIENCE.md section 5). This module takes that explanation literally on
a trained model. For each held-out `new` person i (never seen in training, written with known
tokens) it starts from the trained weights, takes k optimiser steps on i's "A is B" training
documents (every training template of the n2d order, one batch: one fact at a time), measures,
and restores the weights bitwise before the next fact. Measured, per fact:

1. Behaviour. Delta log p(B_i | forward prompt "A_i is the") and Delta log p(A_i | reverse prompt
   "the B_i is called"), summed over the answer tokens (`interp.evaluate.completion_logprobs`),
   averaged over the person's prompts of that direction (training and held-out templates).
   Control, on the same prompts: the mean Delta log p of every *other* new person's answer in the
   same frame (Delta log p(B_j | "A_i is the"), j != i; Delta log p(A_j | "the B_i is called")).
   A generic shift ("after 'is the' say any description", "after 'is called' say a name") moves
   the control as much as the correct answer; only a fact-specific change separates them. The
   test is paired over facts (t-test and Wilcoxon signed-rank) on correct vs control.
   A second control, the cue control, swaps the other side: Delta log p(A_i | "the B_j is
   called"), i's answer in every other new person's prompts. An update that makes A_i's tokens
   likelier everywhere (a unigram or within-name boost) raises it as much as the correct score;
   only an answer tied to its own cue beats it. The reversal question needs both controls.
   A confound the summed score carries: the update document contains A's own tokens in order,
   so it teaches the bigram "dira -> haweyu" inside A, which raises log p(A | reverse prompt)
   after its first token without any reversal knowledge. The first-token scores (log p of the
   answer's first token only: B's role word forward, A's first name in reverse; control = the
   mean over the distinct first tokens of other people's answers) are free of it, and are the
   cleaner reverse test.
   Spill-over: Delta log p of every other new person's own answer in their own prompts.
2. Where the update lands in activations. The residual stream at A's last token ("<bos> A" alone,
   and in the forward prompts) and at B's last token ("<bos> B" alone, and in the reverse
   prompts), at every depth (layer 0 = embeddings, `blocks.0.hook_resid_pre`; layer l+1 =
   `blocks.l.hook_resid_post`), before and after: the relative change |Delta h| / |h| and the
   projection of Delta h on the unembedding direction of the *other* entity's first token (at A:
   B's role word; at B: A's first name). The direction is the one the final LayerNorm reads,
   u_t = centre(gamma * W_U[:, t]) / norm (centring only for LN/LNPre, which subtract the mean),
   taken from the weights before the update, so Delta h . u_t is the linearised change of the
   logit-lens logit of t. Control: the mean projection on `n_control_tokens` random non-special
   tokens' directions (seeded). The hypothesis predicts a positive projection at A's position and
   none beyond control at B's.
3. Which parameters carry it. The update Delta theta split into groups (token and position
   embeddings; each block's attention, MLP and LayerNorms; the final LayerNorm; the unembedding):
   its norm per group (squares add up to the total), and the causal share: Delta log p(correct)
   with one group's update reverted (all others kept), and with only that group's update applied.

Optimiser. Plain SGD by default: Delta theta = -lr * gradient is the update the hypothesis talks
about, and its group norms reflect gradient magnitudes. A fresh AdamW (`optimizer="adamw"`, the
training's betas, weight decay on matrices only as in training) is offered too, but its first
step moves every parameter with a non-zero gradient by about lr (m / sqrt(v) = sign(g)), so its
group norms count parameters rather than measure where the gradient points. The update uses the
run's own training objective by default (`objective="run"`), so a mitigation run is updated the
way it was trained; "causal" forces plain next-token prediction.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.data.dataset import DIRECTIONS, Example, FactDataset, entity_alone, pad_batch
from interp.data.tokenizer import SPECIALS
from interp.data.world import Person
from interp.errors import UserError
from interp.evaluate import completion_logprobs
from interp.model import raw_forward
from interp.objectives import OBJECTIVES, get_objective
from interp.runs import Run, write_json
from interp.stats import paired_test as paired_t_test
from interp.stats import run_seed
from interp.train import make_optimizer, step_generator

OPTIMIZERS = ("sgd", "adamw")
# Default learning rate per optimiser. SGD 0.01: on the tiny preset one step lowers the fact's
# loss by about a quarter and stays near-linear (the group-alone effects add up to ~1.3x the
# full effect; at 0.03 they add up to ~2x). AdamW 1e-3: the training's peak lr (default preset).
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}
CONTEXTS = ("alone", "prompt")  # entity alone ("<bos> A") or inside the prompts
ENTITIES = ("a", "b")  # A's last token (direction: B's first token), B's last token (A's first)


@dataclass(frozen=True)
class UpdateOptions:
    """How the update is taken and measured."""

    steps: int = 1  # optimiser steps on the fact's documents (k)
    lr: float = 0.01  # learning rate of the update (run_analysis: DEFAULT_LR[optimizer])
    optimizer: str = "sgd"  # "sgd" (Delta theta = -lr * grad) or "adamw" (fresh, training's betas)
    weight_decay: float = 0.0  # AdamW decoupled weight decay on matrices (0: only the gradient)
    objective: str = "run"  # the run's own training objective, or a name in OBJECTIVES
    n_facts: int | None = None  # first N new people (None: all)
    n_control_tokens: int = 16  # random token directions per fact for the projection control
    seed: int = 0  # offset on the run seed (stats.run_seed) of control tokens and masking

    def validate(self, n_new: int) -> None:
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r} unknown: use one of {OPTIMIZERS}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.objective != "run" and self.objective not in OBJECTIVES:
            raise UserError(
                f"--objective {self.objective!r} unknown: use 'run' or one of {sorted(OBJECTIVES)}"
            )
        if n_new < 2:
            raise UserError(
                f"the run's world has {n_new} new people; the update test needs at "
                "least 2 (a fact and a control): retrain with world.n_new_people >= 2"
            )
        if self.n_facts is not None and not 1 <= self.n_facts <= n_new:
            raise UserError(
                f"--n-facts must be in 1..{n_new} (the run's new people), got {self.n_facts}"
            )
        if self.n_control_tokens < 1:
            raise UserError("n_control_tokens must be >= 1")


# ---------------------------------------------------------------------------------------------
# Parameters: snapshot, restore, groups.


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


# ---------------------------------------------------------------------------------------------
# The update.


def take_steps(
    model: TransformerBridge, docs: Sequence[Example], opts: UpdateOptions, run: Run
) -> tuple[float, float]:
    """Take `opts.steps` optimiser steps on `docs` (one batch); return (loss before, loss after).

    The loss is the objective's own (causal next-token for causal runs) on the fact's documents;
    the optimiser is fresh, so every fact starts from the same state.
    """
    name = run.config.train.objective if opts.objective == "run" else opts.objective
    objective = get_objective(name)
    docs = objective.documents(list(docs), run.dataset)
    device = next(model.parameters()).device
    tokens, lengths = pad_batch([d.tokens for d in docs], device=device)
    params = list(trainable(model).values())
    if opts.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=opts.lr)
    else:
        cfg = dataclasses.replace(run.config.train, lr=opts.lr, weight_decay=opts.weight_decay)
        opt = make_optimizer(model, cfg)
    net = raw_forward(model)  # same parameters and function, no hook dispatch
    model.train()
    losses = []
    for step in range(opts.steps):
        loss = objective.loss(net, tokens, lengths, step_generator(opts.seed, step))
        losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        after = objective.loss(net, tokens, lengths, step_generator(opts.seed, 0)).item()
    return losses[0], after


# ---------------------------------------------------------------------------------------------
# Measurements.


def resid_names(n_layers: int) -> list[str]:
    """Residual stream at every depth: embeddings, then after each block."""
    return ["blocks.0.hook_resid_pre", *[f"blocks.{l}.hook_resid_post" for l in range(n_layers)]]


@torch.no_grad()
def resid_at(
    model: TransformerBridge, seqs: Sequence[tuple[int, ...]], positions: Sequence[int]
) -> Float[Tensor, "n layer d_model"]:
    """The residual stream of each sequence at its given position, at every depth."""
    names = resid_names(model.cfg.n_layers)
    device = next(model.parameters()).device
    toks, _ = pad_batch(list(seqs), device=device)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    rows = torch.arange(len(seqs), device=device)
    pos = torch.tensor(list(positions), device=device)
    return torch.stack([cache[n][rows, pos] for n in names], dim=1).cpu()


@torch.no_grad()
def unembed_directions(
    model: TransformerBridge, tokens: Int[Tensor, " n"]
) -> Float[Tensor, "n d_model"]:
    """Unit residual-stream directions that the final LayerNorm + W_U read as each token's logit."""
    w = model.W_U[:, tokens.to(model.W_U.device)].T.detach().float()  # [n, d_model]
    gamma = getattr(model.ln_final, "weight", None)
    if gamma is not None:
        w = w * gamma.detach()
    if model.cfg.normalization_type in ("LN", "LNPre"):
        w = w - w.mean(-1, keepdim=True)  # LN subtracts the mean: only the centred part is read
    return (w / w.norm(dim=-1, keepdim=True)).cpu()


@torch.no_grad()
def first_token_logprobs(
    model: TransformerBridge, prompts: Sequence[tuple[int, ...]]
) -> Float[Tensor, "n d_vocab"]:
    """log p(next token | prompt) over the vocabulary, at each prompt's end."""
    device = next(model.parameters()).device
    toks, lengths = pad_batch(list(prompts), device=device)
    logp = raw_forward(model)(toks).log_softmax(-1)
    return logp[torch.arange(len(prompts), device=device), lengths - 1].float().cpu()


@dataclass(frozen=True)
class Layout:
    """The new people, indexed 0..K-1 (the pool), with their documents, prompts and answers.

    The first `n_facts` of the pool are updated on; every pool person serves as a control.
    Prompts of one (person, direction) are in a fixed template order shared by all people.
    """

    pool: list[Person]
    n_facts: int
    docs: dict[int, list[Example]]  # pool index -> its n2d training documents
    prompts: dict[tuple[int, str], list[Example]]  # (pool index, direction) -> prompts
    answers: dict[tuple[int, str], tuple[int, ...]]  # (pool index, direction) -> answer tokens

    @property
    def n_templates(self) -> int:
        return len(self.prompts[(0, "same")])

    def frame(self, k: int, d: str) -> list[tuple[int, ...]]:
        return [e.prompt for e in self.prompts[(k, d)]]

    def first_token(self, k: int, d: str) -> int:
        return self.answers[(k, d)][0]


def layout(dataset: FactDataset, n_facts: int | None) -> Layout:
    """Index the dataset's new people; check they all have the same prompts."""
    pool = [p for p in dataset.people if p.subset == "new"]
    index = {p.id: k for k, p in enumerate(pool)}
    docs: dict[int, list[Example]] = defaultdict(list)
    for e in dataset.new_docs:
        docs[index[e.person]].append(e)
    prompts: dict[tuple[int, str], list[Example]] = defaultdict(list)
    for e in dataset.new_prompts:
        prompts[(index[e.person], e.direction)].append(e)
    for key, es in prompts.items():
        es.sort(key=lambda e: (e.templates != "train", e.template))
        if len({e.answer for e in es}) != 1:
            raise AssertionError(f"prompts of new person {key} disagree on the answer")
    frames = {tuple((e.templates, e.template) for e in es) for es in prompts.values()}
    if len(frames) != 1:
        raise AssertionError("new people do not share the same prompt templates")
    answers = {key: es[0].answer for key, es in prompts.items()}
    return Layout(pool, n_facts or len(pool), dict(docs), dict(prompts), answers)


# ---------------------------------------------------------------------------------------------
# Behaviour: log-probabilities of answers in prompts.

MEASURES = ("row", "col", "own")  # k's prompts x every answer; k's answer x every prompt; diagonal


def pair_logprobs(
    model: TransformerBridge, lay: Layout, pairs: Sequence[tuple[int, int]]
) -> Float[np.ndarray, "pair direction template"]:
    """Summed log p(answer of k | each prompt of m) for each pair (m, k), both directions."""
    T = lay.n_templates
    prompts = [pr for d in DIRECTIONS for m, _ in pairs for pr in lay.frame(m, d)]
    answers = [lay.answers[(k, d)] for d in DIRECTIONS for _, k in pairs for _ in range(T)]
    lp = completion_logprobs(model, prompts, answers).numpy()  # one batched pass
    return lp.reshape(len(DIRECTIONS), len(pairs), T).transpose(1, 0, 2)


def first_token_table(
    model: TransformerBridge, lay: Layout
) -> Float[np.ndarray, "prompt_person direction template answer_person"]:
    """log p(first token of k's answer | each prompt of m), for every (m, k) in the pool."""
    K, T = len(lay.pool), lay.n_templates
    out = np.zeros((K, len(DIRECTIONS), T, K))
    for di, d in enumerate(DIRECTIONS):
        nxt = first_token_logprobs(model, [pr for m in range(K) for pr in lay.frame(m, d)])
        cand = torch.tensor([lay.first_token(k, d) for k in range(K)])
        out[:, di] = nxt[:, cand].numpy().reshape(K, T, K)  # [K*T, K] -> [K, T, K]
    return out


def fact_logprobs(
    model: TransformerBridge, lay: Layout, k: int
) -> dict[str, Float[np.ndarray, "direction template person"]]:
    """What the update on fact k is judged by, summed ("_full") and first-token ("_first"):
    `row`: every pool answer j in k's prompts (j = k is the correct answer, j != k the control);
    `col`: k's answer in every pool person m's prompts (m != k: the cue control);
    `own`: every pool person's own answer in their own prompts (m != k: spill-over)."""
    K = len(lay.pool)
    pairs = [*((k, j) for j in range(K)), *((m, k) for m in range(K)), *((m, m) for m in range(K))]
    lp = pair_logprobs(model, lay, pairs).reshape(3, K, len(DIRECTIONS), lay.n_templates)
    lp = lp.transpose(0, 2, 3, 1)  # [measure, direction, template, person]
    first = first_token_table(model, lay)
    return {"row_full": lp[0], "col_full": lp[1], "own_full": lp[2], **_first_measures(first, k)}


def _first_measures(first: np.ndarray, k: int) -> dict[str, np.ndarray]:
    K = first.shape[0]
    return {
        "row_first": first[k],
        "col_first": first[:, :, :, k].transpose(1, 2, 0),
        "own_first": np.stack([first[m, :, :, m] for m in range(K)], axis=-1),
    }


def all_fact_logprobs(
    model: TransformerBridge, lay: Layout
) -> Callable[[int], dict[str, Float[np.ndarray, "direction template person"]]]:
    """`fact_logprobs(model, lay, k)` for every k at once, from one K x K table of the model.

    The untouched model is the same before every fact (weights are restored bitwise), so its
    measures are slices of one table: a third of the update test's forward passes saved.
    """
    K, D, T = len(lay.pool), len(DIRECTIONS), lay.n_templates
    full = pair_logprobs(model, lay, [(m, j) for m in range(K) for j in range(K)])
    full = full.reshape(K, K, D, T)  # [prompt person, answer person, direction, template]
    first = first_token_table(model, lay)
    diag = np.arange(K)

    def at(k: int) -> dict[str, np.ndarray]:
        return {
            "row_full": full[k].transpose(1, 2, 0),
            "col_full": full[:, k].transpose(1, 2, 0),
            "own_full": full[diag, diag].transpose(1, 2, 0),
            **_first_measures(first, k),
        }

    return at


def correct_logprobs(
    model: TransformerBridge, lay: Layout, k: int
) -> Float[np.ndarray, " direction"]:
    """log p(k's answer | k's prompts), averaged over templates, per direction."""
    return pair_logprobs(model, lay, [(k, k)])[0].mean(-1)


# ---------------------------------------------------------------------------------------------
# Activations: where the update lands.


def entity_sites(
    dataset: FactDataset, lay: Layout, k: int
) -> dict[tuple[str, str], list[tuple[tuple[int, ...], int]]]:
    """(context, entity) -> (sequence, position) of A's / B's last token, alone and in prompts.

    In prompts A precedes the answer only in the forward (n2d) prompts and B only in the
    reverse (d2n) ones, so those are the prompts each entity is read in.
    """
    p = lay.pool[k]
    a, b = entity_alone(dataset, p, "a"), entity_alone(dataset, p, "b")
    return {
        ("alone", "a"): [(a.tokens, a.a_last)],
        ("alone", "b"): [(b.tokens, b.b_last)],
        ("prompt", "a"): [
            (e.prompt, e.a_last) for e in lay.prompts[(k, "same")] if e.order == "n2d"
        ],
        ("prompt", "b"): [
            (e.prompt, e.b_last) for e in lay.prompts[(k, "reverse")] if e.order == "d2n"
        ],
    }


def site_activations(
    model: TransformerBridge, sites: dict[tuple[str, str], list[tuple[tuple[int, ...], int]]]
) -> dict[tuple[str, str], Float[Tensor, "site layer d_model"]]:
    return {
        key: resid_at(model, [s for s, _ in items], [i for _, i in items])
        for key, items in sites.items()
    }


def footprint(
    h0: Float[Tensor, "site layer d_model"],
    h1: Float[Tensor, "site layer d_model"],
    u: Float[Tensor, " d_model"],
    u_control: Float[Tensor, "n_control d_model"],
) -> dict[str, Float[np.ndarray, " layer"]]:
    """Relative change |dh|/|h|, and dh's projection (and cosine) on `u` and on the controls,
    averaged over sites (and over the control directions)."""
    dh = (h1 - h0).double()
    pt = dh @ u.double()  # [site, layer]
    pc = torch.einsum("sld,rd->slr", dh, u_control.double())  # [site, layer, control]
    norm = dh.norm(dim=-1).clamp_min(1e-30)
    return {
        "dh_rel": (dh.norm(dim=-1) / h0.double().norm(dim=-1)).mean(0).numpy(),
        "proj": pt.mean(0).numpy(),
        "proj_control": pc.mean((0, 2)).numpy(),
        "cos": (pt / norm).mean(0).numpy(),
        "cos_control": (pc / norm[..., None]).mean((0, 2)).numpy(),
    }


def entity_directions(
    model: TransformerBridge, lay: Layout, n_control: int, seed: int
) -> tuple[
    Int[Tensor, "fact entity"],
    Int[Tensor, "fact entity n_control"],
    Float[Tensor, "fact entity d_model"],
    Float[Tensor, "fact entity n_control d_model"],
]:
    """For each fact: at A the direction of B's first token, at B that of A's first token;
    and `n_control` random non-special tokens per (fact, entity) as the control (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    ordinary = torch.arange(len(SPECIALS), model.cfg.d_vocab)
    F = lay.n_facts
    target = torch.tensor(
        [[lay.first_token(k, "same"), lay.first_token(k, "reverse")] for k in range(F)]
    )
    control = torch.zeros(F, 2, n_control, dtype=torch.long)
    for f in range(F):
        for e in range(2):
            choice = ordinary[ordinary != target[f, e]]
            control[f, e] = choice[torch.randperm(len(choice), generator=gen)[:n_control]]
    u = unembed_directions(model, target.flatten()).reshape(F, 2, -1)
    uc = unembed_directions(model, control.flatten()).reshape(F, 2, n_control, -1)
    return target, control, u, uc


# ---------------------------------------------------------------------------------------------
# The analysis.


def run_analysis(
    run: Run,
    *,
    steps: int = 1,
    lr: float | None = None,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    objective: str = "run",
    n_facts: int | None = None,
    n_control_tokens: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The gradient-update test on every (or the first `n_facts`) new person of `run`.

    Writes analysis/update.json (options, summary, tests, per-layer and per-group tables) and
    analysis/update.npz (every per-fact array), and returns the JSON dict. The model's weights
    are restored bitwise after every fact. `lr=None` takes DEFAULT_LR[optimizer].
    """
    if optimizer not in DEFAULT_LR:
        raise UserError(f"--optimizer {optimizer!r} unknown: use one of {OPTIMIZERS}")
    item_seed = run_seed(run.config, seed)  # item draws differ per (world, seed) run
    opts = UpdateOptions(
        steps=steps,
        lr=DEFAULT_LR[optimizer] if lr is None else lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        objective=objective,
        n_facts=n_facts,
        n_control_tokens=n_control_tokens,
        seed=item_seed,
    )
    ds, model = run.dataset, run.model
    opts.validate(sum(p.subset == "new" for p in ds.people))
    lay = layout(ds, opts.n_facts)
    model.eval()
    groups = parameter_groups(model)
    F, K, T, D = lay.n_facts, len(lay.pool), lay.n_templates, len(DIRECTIONS)
    G, n_depth = len(groups), model.cfg.n_layers + 1
    target_tok, control_tok, u, uc = entity_directions(model, lay, opts.n_control_tokens, opts.seed)

    arrays: dict[str, np.ndarray] = {
        f"delta_{m}_{t}": np.zeros((F, D, T, K)) for m in MEASURES for t in ("full", "first")
    }
    arrays["logp0_correct"] = np.zeros((F, D, T))
    for key in ("dh_rel", "proj", "proj_control", "cos", "cos_control"):
        arrays[key] = np.zeros((F, len(CONTEXTS), len(ENTITIES), n_depth))
    arrays.update(
        group_norm=np.zeros((F, G)),
        total_norm=np.zeros(F),
        revert=np.zeros((F, G, D)),
        only=np.zeros((F, G, D)),
        full_correct=np.zeros((F, D)),
        loss_before=np.zeros(F),
        loss_after=np.zeros(F),
    )

    before_tables = all_fact_logprobs(model, lay)
    for k in tqdm(range(F), desc="update test", disable=not progress, dynamic_ncols=True):
        sites = entity_sites(ds, lay, k)
        h0 = site_activations(model, sites)
        lp0 = before_tables(k)
        base = correct_logprobs(model, lay, k)
        arrays["logp0_correct"][k] = lp0["row_full"][..., k]
        with restored(model) as before:
            arrays["loss_before"][k], arrays["loss_after"][k] = take_steps(
                model, lay.docs[k], opts, run
            )
            after = snapshot(model)
            arrays["group_norm"][k] = group_norms(before, after, groups)
            arrays["total_norm"][k] = group_norms(before, after, {"all": list(after)})[0]
            for key, v in fact_logprobs(model, lay, k).items():
                arrays[f"delta_{key}"][k] = v - lp0[key]
            arrays["full_correct"][k] = correct_logprobs(model, lay, k) - base
            h1 = site_activations(model, sites)
            for c, ctx in enumerate(CONTEXTS):
                for e, ent in enumerate(ENTITIES):
                    fp = footprint(h0[(ctx, ent)], h1[(ctx, ent)], u[k, e], uc[k, e])
                    for key, v in fp.items():
                        arrays[key][k, c, e] = v
            for g, keys in enumerate(groups.values()):
                load_params(model, {key: before[key] for key in keys})  # revert g alone
                arrays["revert"][k, g] = correct_logprobs(model, lay, k) - base
                load_params(model, before)
                load_params(model, {key: after[key] for key in keys})  # apply g alone
                arrays["only"][k, g] = correct_logprobs(model, lay, k) - base
                load_params(model, after)

    arrays.update(
        facts=np.array([p.id for p in lay.pool[:F]]),
        pool=np.array([p.id for p in lay.pool]),
        directions=np.array(DIRECTIONS),
        contexts=np.array(CONTEXTS),
        entities=np.array(ENTITIES),
        layers=np.array(layer_labels(model.cfg.n_layers)),
        templates=np.array([e.templates for e in lay.prompts[(0, "same")]]),
        groups=np.array(list(groups)),
        first_tokens=np.array([[lay.first_token(k, d) for d in DIRECTIONS] for k in range(K)]),
        target_tokens=target_tok.numpy(),
        control_tokens=control_tok.numpy(),
    )
    for tokens in ("full", "first"):  # per-fact scores (all templates), for the figure
        scores = per_fact_scores(arrays, tokens)
        for kind in ("correct", "control", "cue_control"):
            arrays[f"score_{tokens}_{kind}"] = np.stack([scores[d][kind] for d in DIRECTIONS], 1)
    result = summarise(arrays, opts)
    result["options"]["seed"] = seed  # as asked: an offset on the run seed
    out = run.analysis_dir()
    tmp = out / "update.tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(out / "update.npz")
    write_json(out / "update.json", result)
    return result


def layer_labels(n_layers: int) -> list[str]:
    """Depth labels: 'embed' (blocks.0.hook_resid_pre), then 'L{l}' (blocks.l.hook_resid_post)."""
    return ["embed", *[f"L{l}" for l in range(n_layers)]]


# ---------------------------------------------------------------------------------------------
# Statistics, per-fact scores and the summary.


def paired_test(
    correct: Float[np.ndarray, " n"], control: Float[np.ndarray, " n"]
) -> dict[str, float]:
    """Means of both, the mean difference with a 95% t-interval, paired t-test (the kit's one,
    `interp.stats.paired_test`) and Wilcoxon p."""
    diff = correct - control
    t = paired_t_test(correct, control)
    out = {
        "n": float(t.n),
        "mean": t.mean,
        "control_mean": t.control_mean,
        "diff_mean": t.diff_mean,
        "diff_lo": t.diff_low,
        "diff_hi": t.diff_high,
        "t_p": t.p,
        "wilcoxon_p": 1.0,
    }
    if t.n >= 2 and np.ptp(diff) > 0:
        out["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
    return out


def per_fact_scores(
    a: dict[str, np.ndarray], tokens: str, templates: str = "all"
) -> dict[str, dict[str, Float[np.ndarray, " fact"]]]:
    """direction -> {"correct", "control", "cue_control"}: one Delta log p per fact.

    `correct`: Delta log p(k's answer | k's prompts). `control` (other answers, same prompts): the
    mean over the other pool people's answers ("full"), or over the distinct first tokens other
    than the correct one ("first"). `cue_control` (same answer, other prompts): k's answer in the
    other pool people's prompts, which catches a generic boost of the answer's own tokens.
    `tokens`: "full" (summed over the answer) or "first"; `templates`: "all", "train", "heldout".
    Values are averaged over the selected templates first, so the unit is the fact.
    """
    keep = np.ones(len(a["templates"]), bool) if templates == "all" else a["templates"] == templates
    row = a[f"delta_row_{tokens}"][:, :, keep].mean(2)  # [F, D, K]
    col = a[f"delta_col_{tokens}"][:, :, keep].mean(2)  # [F, D, K]
    F, K = row.shape[0], row.shape[2]
    out = {}
    for di, d in enumerate(a["directions"]):
        correct, control, cue = np.zeros(F), np.zeros(F), np.zeros(F)
        for k in range(F):
            others = [j for j in range(K) if j != k]
            correct[k] = row[k, di, k]
            cue[k] = col[k, di, others].mean()
            if tokens == "first":  # one representative per distinct other first token
                toks = a["first_tokens"][:, di]
                distinct: dict[int, int] = {}
                for j in others:
                    if toks[j] != toks[k]:
                        distinct.setdefault(int(toks[j]), j)
                others = list(distinct.values())
            control[k] = row[k, di, others].mean() if others else np.nan
        out[str(d)] = {"correct": correct, "control": control, "cue_control": cue}
    return out


def summarise(a: dict[str, np.ndarray], opts: UpdateOptions) -> dict[str, Any]:
    """update.json: options, the flat summary, and the tables behind it."""
    name = {"same": "forward", "reverse": "reverse"}
    summary: dict[str, float] = {}
    tests: dict[str, Any] = {}
    for tokens, tag in (("full", ""), ("first", "_first")):
        for tpl, ttag in (("all", ""), ("heldout", "_heldout")):
            scores = per_fact_scores(a, tokens, tpl)
            for d, s in scores.items():
                key = f"delta_logp_{name[d]}{tag}{ttag}"
                r = paired_test(s["correct"], s["control"])
                rc = paired_test(s["correct"], s["cue_control"])
                tests[key] = r
                tests[f"{key}_cue"] = rc
                summary[f"{key}_mean"] = r["mean"]
                summary[f"{key}_control_mean"] = r["control_mean"]
                summary[f"{key}_p"] = r["t_p"]
                summary[f"{key}_wilcoxon_p"] = r["wilcoxon_p"]
                summary[f"{key}_cue_control_mean"] = rc["control_mean"]
                summary[f"{key}_cue_p"] = rc["t_p"]
            # Is the fact-specific gain larger forward than in reverse? (paired over facts)
            fwd = scores["same"]["correct"] - scores["same"]["control"]
            rev = scores["reverse"]["correct"] - scores["reverse"]["control"]
            r = paired_test(fwd, rev)
            tests[f"specific_forward_vs_reverse{tag}{ttag}"] = r
            summary[f"specific_forward_minus_reverse{tag}{ttag}_mean"] = r["diff_mean"]
            summary[f"specific_forward_minus_reverse{tag}{ttag}_p"] = r["t_p"]

    own = a["delta_own_full"].mean(2)  # [F, D, K]
    F = own.shape[0]
    other = np.ones((F, own.shape[2]), bool)
    other[np.arange(F), np.arange(F)] = False
    for di, d in enumerate(a["directions"]):
        summary[f"delta_logp_{name[str(d)]}_other_facts_mean"] = float(own[:, di][other].mean())
        summary[f"logp_{name[str(d)]}_before_mean"] = float(a["logp0_correct"][:, di].mean())
    summary["update_loss_before_mean"] = float(a["loss_before"].mean())
    summary["update_loss_after_mean"] = float(a["loss_after"].mean())
    summary["update_norm_mean"] = float(a["total_norm"].mean())

    layers = [str(x) for x in a["layers"]]
    projections: dict[str, Any] = {}
    direction_of = {"a": "a_to_b", "b": "b_to_a"}
    for c, ctx in enumerate(CONTEXTS):
        for e, ent in enumerate(ENTITIES):
            key = f"{ctx}_{direction_of[ent]}"
            rows = []
            for li, lab in enumerate(layers):
                r = paired_test(a["proj"][:, c, e, li], a["proj_control"][:, c, e, li])
                rc = paired_test(a["cos"][:, c, e, li], a["cos_control"][:, c, e, li])
                rows.append(
                    {
                        "layer": lab,
                        "proj": r["mean"],
                        "proj_control": r["control_mean"],
                        "proj_p": r["wilcoxon_p"],
                        "cos": rc["mean"],
                        "cos_control": rc["control_mean"],
                        "cos_p": rc["wilcoxon_p"],
                        "dh_rel": float(a["dh_rel"][:, c, e, li].mean()),
                    }
                )
                if ctx == "alone":
                    summary[f"proj_{direction_of[ent]}_{lab}"] = r["mean"]
                    summary[f"proj_{direction_of[ent]}_control_{lab}"] = r["control_mean"]
            projections[key] = rows
            # Over layers: the mean over depths of each fact's projection (one number per fact).
            r = paired_test(a["proj"][:, c, e].mean(-1), a["proj_control"][:, c, e].mean(-1))
            rc = paired_test(a["cos"][:, c, e].mean(-1), a["cos_control"][:, c, e].mean(-1))
            pre = "" if ctx == "alone" else "prompt_"
            summary[f"{pre}proj_{direction_of[ent]}_mean"] = r["mean"]
            summary[f"{pre}proj_{direction_of[ent]}_control_mean"] = r["control_mean"]
            summary[f"{pre}proj_{direction_of[ent]}_p"] = r["wilcoxon_p"]
            summary[f"{pre}cos_{direction_of[ent]}_mean"] = rc["mean"]
            summary[f"{pre}cos_{direction_of[ent]}_control_mean"] = rc["control_mean"]
            summary[f"{pre}dh_rel_{ent}_mean"] = float(a["dh_rel"][:, c, e].mean())

    group_names = [str(g) for g in a["groups"]]
    sq = a["group_norm"] ** 2
    share = sq.sum(0) / max(sq.sum(), 1e-300)
    full = a["full_correct"]  # [F, D]
    lost = full[:, None, :] - a["revert"]  # [F, G, D]: gain lost when group g is reverted
    frac_lost = lost.mean(0) / np.where(np.abs(full.mean(0)) > 0, full.mean(0), np.nan)  # [G, D]
    frac_only = a["only"].mean(0) / np.where(np.abs(full.mean(0)) > 0, full.mean(0), np.nan)
    group_rows = [
        {
            "group": g,
            "norm_mean": float(a["group_norm"][:, i].mean()),
            "norm_sq_share": float(share[i]),
            "revert_loss_forward": float(lost[:, i, 0].mean()),
            "revert_loss_reverse": float(lost[:, i, 1].mean()),
            "revert_fraction_forward": float(frac_lost[i, 0]),
            "only_fraction_forward": float(frac_only[i, 0]),
        }
        for i, g in enumerate(group_names)
    ]
    top = int(np.argmax(lost[:, :, 0].mean(0)))
    top_norm = int(np.argmax(share))
    summary["top_group_revert_fraction_forward"] = float(frac_lost[top, 0])
    summary["top_group_norm_sq_share"] = float(share[top_norm])
    for i, g in enumerate(group_names):
        summary[f"revert_loss_forward_{g}"] = float(lost[:, i, 0].mean())
        summary[f"norm_sq_share_{g}"] = float(share[i])

    return {
        "options": asdict(opts),
        "n_facts": len(a["facts"]),
        "n_pool": len(a["pool"]),
        "summary": summary,
        "tests": tests,
        "projections": projections,
        "layers": layers,
        "groups": group_rows,
        "top_group_revert": group_names[top],
        "top_group_norm": group_names[top_norm],
        "definitions": {
            "delta_logp": "log p(answer | prompt) after the update minus before, summed over the "
            "answer's tokens, averaged over the fact's prompts of one direction",
            "forward": "prompt 'A_i ... the' (n2d order), answer B_i",
            "reverse": "prompt 'the B_i ... ' (d2n order), answer A_i",
            "control": "mean Delta log p of every other new person's answer in fact i's prompts "
            "(first-token scores: the distinct other first tokens)",
            "cue_control": "mean Delta log p of fact i's answer in every other new person's "
            "prompts of the same direction (a generic boost of the answer)",
            "p": "paired t-test over facts, correct vs control (wilcoxon_p: signed-rank test; "
            "cue_p: paired t-test, correct vs cue_control)",
            "first": "the answer's first token only (forward: B's role word; reverse: A's first "
            "name), free of the within-entity bigram the update document teaches",
            "proj_a_to_b": "Delta h at A's last token ('<bos> A' alone) projected on the unit "
            "direction LN_final-gamma * W_U[:, B's first token] (centred); "
            "control: mean over random tokens' directions",
            "proj_b_to_a": "Delta h at B's last token ('<bos> B' alone) on A's first token's "
            "direction; prompt_*: the same inside forward / reverse prompts",
            "revert_loss_forward_G": "Delta log p(B | forward prompt) of the full update minus "
            "that with group G's update reverted (nats)",
        },
    }


def format_summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    s = result["summary"]
    o = result["options"]
    lines = [
        f"update test: {result['n_facts']} facts, {o['steps']} {o['optimizer']} step(s), "
        f"lr={o['lr']}; update loss {s['update_loss_before_mean']:.3f} -> "
        f"{s['update_loss_after_mean']:.3f}",
        f"{'':<20}{'Delta correct':>14}{'other answer':>13}{'p (t)':>9}{'p (W)':>9}"
        f"{'other cue':>11}{'p (t)':>9}",
    ]
    for key, label in (
        ("delta_logp_forward", "forward (B|A)"),
        ("delta_logp_reverse", "reverse (A|B)"),
        ("delta_logp_forward_first", "forward 1st token"),
        ("delta_logp_reverse_first", "reverse 1st token"),
    ):
        lines.append(
            f"{label:<20}{s[key + '_mean']:>14.4f}{s[key + '_control_mean']:>13.4f}"
            f"{s[key + '_p']:>9.3g}{s[key + '_wilcoxon_p']:>9.3g}"
            f"{s[key + '_cue_control_mean']:>11.4f}{s[key + '_cue_p']:>9.3g}"
        )
    lines.append(
        f"projection on the other entity's direction (mean over layers): "
        f"A->B {s['proj_a_to_b_mean']:+.4g} (control {s['proj_a_to_b_control_mean']:+.4g}"
        f", p={s['proj_a_to_b_p']:.3g}); B->A {s['proj_b_to_a_mean']:+.4g} "
        f"(control {s['proj_b_to_a_control_mean']:+.4g}, p={s['proj_b_to_a_p']:.3g})"
    )
    lines.append(
        f"top group by revert effect: {result['top_group_revert']} "
        f"({s['top_group_revert_fraction_forward']:.0%} of the forward gain); "
        f"by norm: {result['top_group_norm']}"
    )
    return "\n".join(lines)
