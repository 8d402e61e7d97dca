"""The gradient-update test's measurements: the facts' layout, log-probabilities of every new
person's answer in every prompt (the behaviour and its controls), and the activations at the
entities' sites (where the update lands, the unembedding directions it is read along).

The experiment (one update per fact, restored bitwise) is :mod:`interp.analysis.update`, which
re-exports everything here; the method is described there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from interp.data.dataset import DIRECTIONS, Example, FactDataset, entity_alone, pad_batch
from interp.data.world import Person
from interp.evaluate import completion_logprobs
from interp.model import raw_forward, resid_at

# ---------------------------------------------------------------------------------------------
# Measurements.


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
        .transpose(0, 1)
        .contiguous()
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


def matched_controls(dataset: FactDataset) -> tuple[list[int], list[int]]:
    """The answer classes of the projection controls: every role word (the first token of a
    description) and every first name (the first token of a name) in the world, sorted."""
    roles = {entity_alone(dataset, p, "b").tokens[1] for p in dataset.people}
    firsts = {entity_alone(dataset, p, "a").tokens[1] for p in dataset.people}
    return sorted(roles), sorted(firsts)


def entity_directions(
    model: TransformerBridge, lay: Layout, dataset: FactDataset
) -> tuple[Int[Tensor, "fact entity"], list[list[Tensor]], Float[Tensor, "fact entity d_model"]]:
    """For each fact: at A the direction of B's first token (its role word), at B that of A's
    first token (its first name); the matched controls are the *other* role words (at A) and the
    *other* first names (at B), so target and control are of one answer class."""
    roles, firsts = matched_controls(dataset)
    F = lay.n_facts
    target = torch.tensor(
        [[lay.first_token(k, "same"), lay.first_token(k, "reverse")] for k in range(F)]
    )
    control = [
        [
            torch.tensor([t for t in cls if t != int(target[f, e])])
            for e, cls in enumerate((roles, firsts))
        ]
        for f in range(F)
    ]
    u = unembed_directions(model, target.flatten()).reshape(F, 2, -1)
    return target, control, u


@torch.no_grad()
def site_logits(
    model: TransformerBridge, sites: dict[tuple[str, str], list[tuple[tuple[int, ...], int]]]
) -> dict[tuple[str, str], Float[Tensor, "site d_vocab"]]:
    """The model's logits at each site (the answer token's actual logit change is read here)."""
    net = raw_forward(model)
    out = {}
    for key, items in sites.items():
        toks, _ = pad_batch([q for q, _ in items], device=next(model.parameters()).device)
        logits = net(toks)
        out[key] = logits[torch.arange(len(items)), torch.tensor([i for _, i in items])].cpu()
    return out
