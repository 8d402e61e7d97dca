"""QK symmetry (interp.analysis.qk, Saponati et al.): the score is 1 for a symmetric W_Q W_K^T,
-1 for an antisymmetric one, near 0 for random weights, and the instrument reads a trained run
with its initialisation as the control."""

from __future__ import annotations

import dataclasses

import torch

from interp.analysis.qk import format_summary, run_analysis, symmetry_scores


def test_score_says_symmetric_antisymmetric_and_random():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, 16, 16, generator=g)
    sym = symmetry_scores(w, w)  # W W^T is symmetric
    a = torch.randn(16, 16, generator=g)
    anti_m = a - a.T  # antisymmetric: W_Q = anti_m, W_K = I gives M = anti_m
    anti = symmetry_scores(anti_m[None, None], torch.eye(16)[None, None])
    rand = symmetry_scores(
        torch.randn(1, 64, 16, 4, generator=g), torch.randn(1, 64, 16, 4, generator=g)
    )
    assert torch.allclose(sym, torch.ones_like(sym)), sym
    assert torch.allclose(anti, -torch.ones_like(anti)), anti
    assert rand.mean().abs() < 0.1, rand.mean()


def test_instrument_reads_a_run_and_its_initialisation(tiny_run, tmp_path):
    run = dataclasses.replace(tiny_run, path=tmp_path)
    result = run_analysis(run, write=False, progress=False)
    s = result.summary
    layers = tiny_run.config.model.n_layers
    assert result.arrays["scores"].shape == (layers, tiny_run.config.model.n_heads)
    assert -1 <= s.symmetry_mean <= 1 and -1 <= s.symmetry_init_mean <= 1, s
    assert s.symmetry_mean != s.symmetry_init_mean, "training left W_Q W_K^T unchanged"
    assert "symmetry_L0" in result.data["summary"], sorted(result.data["summary"])
    assert "at initialisation" in format_summary(result)
