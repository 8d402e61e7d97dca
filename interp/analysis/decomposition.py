"""An exact decomposition of the update's MLP weight gradients into per-position terms.

Method (the Backward Lens view, Katz et al. 2024). An MLP's weight matrix W maps an input x_t to
an output at every position t of every document, so its gradient is a sum of rank-one terms, one
per (document, position):

    dL/dW_out = sum_t delta_t (x) a_t      delta_t = dL/d mlp_out_t (the backward signal),
                                           a_t = the hidden activation (the key) at t;
    dL/dW_in  = sum_t gamma_t (x) n_t      gamma_t = dL/d pre-activation, n_t = ln2's output.

An SGD step Delta W_out = -lr * sum_t delta_t (x) a_t therefore writes the value -delta_t,
keyed on a_t: a later input whose key resembles a_t gets -delta_t (times lr * a_t . a) added to
the residual stream. Grouping the positions by role (A's tokens, B's tokens, the final position
before B, the rest of the template) splits each layer's update exactly, so we can say *where* the
step writes: how much of the update's norm (the projection share <G_c, G> / |G|^2, which sums to
1 over the roles) and of its first-order effect on log p(B | A...) and log p(A | B...) comes from
each role, and whether the value written at A's positions reads as B's tokens on the vocabulary
(and anything of A at B's positions). The terms are computed from the activations and backward
signals captured with hooks on the MLPs' linear maps; `tests/test_update.py` checks that their
sum equals autograd's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.dataset import Example
from interp.model import padded_loss, raw

ROLES = ("a", "b", "final", "template")  # A's tokens, B's tokens, the position before B, the rest


def position_roles(docs: Sequence[Example], width: int) -> Int[Tensor, "batch pos"]:
    """Role index (into ROLES) of every position of the padded batch; -1 for padding. "final" is
    the position just before B's first token (it predicts B's first token), when not in A."""
    out = torch.full((len(docs), width), -1, dtype=torch.long)
    for n, d in enumerate(docs):
        out[n, : len(d.tokens)] = ROLES.index("template")
        b0, b1 = d.b_span
        if b0 > 0:
            out[n, b0 - 1] = ROLES.index("final")
            out[n, b0:b1] = ROLES.index("b")
        a0, a1 = d.a_span
        if a0 >= 0:
            out[n, a0:a1] = ROLES.index("a")
    return out


@dataclass(frozen=True)
class MlpTerms:
    """Per layer and role, the summed rank-one terms of the MLP weight gradients.

    `w_in[l, r]` sums gamma_t (x) n_t over the positions of role r (shape as blocks.l.mlp.in.weight,
    [d_mlp, d_model]); `w_out[l, r]` sums delta_t (x) a_t ([d_model, d_mlp]); `written[l, r]` sums
    -delta_t (the values an SGD step writes, in the residual stream); `count[r]` the positions."""

    w_in: Float[Tensor, "layer role d_mlp d_model"]
    w_out: Float[Tensor, "layer role d_model d_mlp"]
    written: Float[Tensor, "layer role d_model"]
    count: Int[Tensor, " role"]


@contextmanager
def captured_mlps(net: Any) -> Iterator[list[dict[str, Tensor]]]:
    """Capture, per block, the inputs of the MLP's two linear maps and the gradients of their
    outputs during the next forward + backward (hooks removed on exit)."""
    model = getattr(net, "net", net)  # RawForward wraps the native model
    store: list[dict[str, Tensor]] = [{} for _ in model.layers]
    handles = []

    def hook(layer: int, name: str) -> Callable[..., None]:
        def fwd(module: torch.nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            store[layer][f"{name}_input"] = inputs[0].detach()
            if output.requires_grad:

                def keep(g: Tensor) -> None:
                    store[layer][f"{name}_grad"] = g.detach()

                output.register_hook(keep)

        return fwd

    for layer, block in enumerate(model.layers):
        m = raw(block.mlp)
        handles.append(raw(m.fc_in).register_forward_hook(hook(layer, "in")))
        handles.append(raw(m.fc_out).register_forward_hook(hook(layer, "out")))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def mlp_terms(
    net: torch.nn.Module, docs: Sequence[Example], loss_of: Callable[[], Tensor], width: int
) -> MlpTerms:
    """Run `loss_of()` (a loss on the batch of `docs`, padded to `width`) forward and backward
    and sum each MLP weight gradient's per-position terms within each role (float64)."""
    roles = position_roles(docs, width)
    onehot = torch.stack([roles == r for r in range(len(ROLES))]).double()  # [role, batch, pos]
    with captured_mlps(net) as store, padded_loss():  # the hooks index (document, position)
        loss = loss_of()
        params = [p for p in net.parameters() if p.requires_grad]
        torch.autograd.grad(loss, params, allow_unused=True)
    w_in, w_out, written = [], [], []
    for s in store:
        n_in, g_in = s["in_input"].double(), s["in_grad"].double()  # [batch, pos, d_model/d_mlp]
        a, d = s["out_input"].double(), s["out_grad"].double()
        w_in.append(torch.einsum("rnt,ntm,ntd->rmd", onehot, g_in, n_in))
        w_out.append(torch.einsum("rnt,ntd,ntm->rdm", onehot, d, a))
        written.append(-torch.einsum("rnt,ntd->rd", onehot, d))
    return MlpTerms(
        torch.stack(w_in), torch.stack(w_out), torch.stack(written), onehot.sum((1, 2)).long()
    )


def role_shares(
    terms: MlpTerms,
    answer_grads: dict[str, Sequence[tuple[Tensor, Tensor]]],
) -> dict[str, Float[Tensor, "layer role"]]:
    """Per layer and role: `norm_share` (<G_r, G> / |G|^2 over both weight matrices; sums to 1
    over roles) and, for each key of `answer_grads` (per layer, the (in, out) weight gradients of
    a log-probability f), the first-order change of f per unit SGD step, -<G_r, grad f>, which
    sums over roles to the layer's MLP-weight alignment."""
    total_in, total_out = terms.w_in.sum(1), terms.w_out.sum(1)  # [layer, ...]
    dot = (terms.w_in * total_in[:, None]).sum((-1, -2)) + (terms.w_out * total_out[:, None]).sum(
        (-1, -2)
    )
    sq = (total_in**2).sum((-1, -2)) + (total_out**2).sum((-1, -2))
    out = {"norm_share": dot / sq[:, None].clamp_min(1e-300)}
    for key, per_layer in answer_grads.items():
        gi = torch.stack([g for g, _ in per_layer]).double()[:, None]
        go = torch.stack([g for _, g in per_layer]).double()[:, None]
        out[key] = -((terms.w_in * gi).sum((-1, -2)) + (terms.w_out * go).sum((-1, -2)))
    return out


def token_rank(
    written: Float[Tensor, "*lead d_model"], u_all: Float[Tensor, "d_vocab d_model"], token: int
) -> Int[Tensor, "*lead"]:
    """Rank of `token` (0 = top) when the written values are read on the vocabulary through
    the final norm's unembedding directions (`update.unembed_directions` of every token)."""
    scores = written.float() @ u_all.T  # [..., d_vocab]
    return (scores > scores[..., token : token + 1]).sum(-1)
