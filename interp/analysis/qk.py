"""QK symmetry: is each head's bilinear attention form symmetric? (Saponati et al., arXiv
2502.10927.)

Method. A head scores query position i against key position j by x_i^T W_Q W_K^T x_j, the
bilinear form M = W_Q W_K^T (d_model x d_model; TransformerLens's `W_Q`, `W_K`, [layer, head,
d_model, d_head]). Saponati et al. show that bidirectional training (every token both attends
and is attended, in both directions) pushes M towards a symmetric matrix, and next-token
training (a token attends only backwards) towards a directional, less symmetric one. Their
score per head, with M_s = (M + M^T) / 2 and M_a = (M - M^T) / 2,

    s = (||M_s||_F^2 - ||M_a||_F^2) / ||M||_F^2   in [-1, 1]

is 1 for a symmetric M, -1 for an antisymmetric one and about 0 for a random one (whose
symmetric and antisymmetric halves carry equal energy). Reported per layer as the mean over
heads, and against the control the same model had at initialisation (its seed rebuilt): the
objective moved the score only where the trained model differs from that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analysis.options import Options
from interp.model import build_model
from interp.results import Result, Summary, number, summary_json, write_result
from interp.runs import Run
from interp.stats import SIGNED_UNIT

NAME = "qk"
SCORE = SIGNED_UNIT  # the score's range


@dataclass(frozen=True)
class QkOptions(Options):
    """QK symmetry has no options: every head of every layer is scored."""


@dataclass(frozen=True)
class QkSummary(Summary):
    """Saponati et al.'s symmetry score of W_Q W_K^T, mean over heads and layers; per layer in
    the details (`symmetry_L<l>`), and the same model at initialisation as the control."""

    symmetry_mean: float | None = number("symmetry score, mean over heads and layers", SCORE,
                                         headline=True)  # fmt: skip
    symmetry_init_mean: float | None = number(
        "the same at initialisation (the control)", SCORE, headline=True
    )
    symmetry_first_layer: float | None = number("layer 0, mean over heads", SCORE, headline=True)
    symmetry_last_layer: float | None = number("the last layer, mean over heads", SCORE,
                                               headline=True)  # fmt: skip


def symmetry_scores(
    w_q: Float[Tensor, "layer head d_model d_head"], w_k: Float[Tensor, "layer head d_model d_head"]
) -> Float[Tensor, "layer head"]:
    """The symmetry score of each head's M = W_Q W_K^T (float64)."""
    m = w_q.double() @ w_k.double().transpose(-1, -2)  # [layer, head, d_model, d_model]
    sym = (m + m.transpose(-1, -2)) / 2
    anti = (m - m.transpose(-1, -2)) / 2
    total = m.pow(2).sum((-1, -2)).clamp_min(1e-300)
    return (sym.pow(2).sum((-1, -2)) - anti.pow(2).sum((-1, -2))) / total


def model_scores(model: torch.nn.Module) -> np.ndarray:
    """[layer, head] symmetry scores of a TransformerLens model's attention."""
    w_q, w_k = getattr(model, "W_Q"), getattr(model, "W_K")  # noqa: B009 (TransformerLens's stacks)
    with torch.no_grad():
        return symmetry_scores(w_q, w_k).numpy()


def run_analysis(
    run: Run, options: QkOptions | None = None, *, write: bool = True, progress: bool = True
) -> Result[QkSummary]:
    """Score every head of the run's model and of the same model at initialisation; with
    `write`, save analysis/qk.json (per-layer means in the details) and analysis/qk.npz
    (`scores`, `init_scores`: [layer, head])."""
    opts = options or QkOptions()
    scores = model_scores(run.model)
    init = build_model(run.config.model, run.dataset.d_vocab, run.config.train.seed)
    init_scores = model_scores(init)
    details = {f"symmetry_L{l}": float(v) for l, v in enumerate(scores.mean(1))}
    details |= {f"symmetry_init_L{l}": float(v) for l, v in enumerate(init_scores.mean(1))}
    summary = QkSummary(
        symmetry_mean=float(scores.mean()),
        symmetry_init_mean=float(init_scores.mean()),
        symmetry_first_layer=float(scores[0].mean()),
        symmetry_last_layer=float(scores[-1].mean()),
    )
    data = {"options": opts.resolved().to_json(), "summary": summary_json(summary, details)}
    result: Result[QkSummary] = Result(
        NAME, data, {"scores": scores, "init_scores": init_scores}, summary_type=QkSummary
    )
    if write:
        write_result(run.path, result)
    return result


def format_summary(result: Result[QkSummary]) -> str:
    s = result.data["summary"]
    layers = sorted(k for k in s if k.startswith("symmetry_L"))
    per = ", ".join(f"{k[9:]} {s[k]:+.3f}" for k in layers)
    return (
        f"QK symmetry (1 symmetric, 0 random, -1 antisymmetric), mean over heads: {per}; "
        f"mean {s['symmetry_mean']:+.3f} vs {s['symmetry_init_mean']:+.3f} at initialisation"
    )
