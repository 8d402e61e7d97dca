"""The gradient-update test: a step on "A is B" raises the fact's forward log-probability beyond
both controls, the weights come back bitwise, the parameter groups partition the update (norms
and, in the linear regime, effects), the projection direction is the one the unembedding reads,
and bad options fail in one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from interp.analysis.update import (
    DIRECTIONS,
    UpdateOptions,
    layout,
    parameter_groups,
    run_analysis,
    trainable,
    unembed_directions,
)
from interp.cli import main
from interp.data.dataset import pad_batch
from interp.objectives.base import next_token_loss


@pytest.fixture(scope="module")
def analysed(tiny_run, tiny_run_copy_module):
    """The analysis on every new person of the tiny run, with the weights before and after."""
    run = dataclasses.replace(tiny_run, path=tiny_run_copy_module)
    before = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    result = run_analysis(run, progress=False)
    after = run.model.state_dict()
    with np.load(run.analysis_dir() / "update.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return run, result, arrays, before, after


@pytest.fixture(scope="module")
def tiny_run_copy_module(tiny_run_dir, tmp_path_factory):
    import shutil

    dst = tmp_path_factory.mktemp("update") / "tiny"
    shutil.copytree(tiny_run_dir, dst)
    return dst


def test_forward_step_raises_the_fact_beyond_both_controls(analysed):
    _, result, _, _, _ = analysed
    s = result["summary"]
    numbers = (
        f"forward Delta log p {s['delta_logp_forward_mean']:.3f}, other answers "
        f"{s['delta_logp_forward_control_mean']:.3f} (p={s['delta_logp_forward_p']:.2g}), "
        f"same answer in other prompts {s['delta_logp_forward_cue_control_mean']:.3f} "
        f"(p={s['delta_logp_forward_cue_p']:.2g}); reverse "
        f"{s['delta_logp_reverse_mean']:.3f} vs {s['delta_logp_reverse_control_mean']:.3f}"
        f" (p={s['delta_logp_reverse_p']:.2g}), cue {s['delta_logp_reverse_cue_p']:.2g}; "
        f"update loss {s['update_loss_before_mean']:.3f} -> "
        f"{s['update_loss_after_mean']:.3f}"
    )
    assert s["update_loss_after_mean"] < s["update_loss_before_mean"], numbers
    assert s["delta_logp_forward_mean"] > 0, numbers
    assert s["delta_logp_forward_mean"] > s["delta_logp_forward_control_mean"] + 1.0, numbers
    assert s["delta_logp_forward_mean"] > s["delta_logp_forward_cue_control_mean"], numbers
    assert s["delta_logp_forward_p"] < 0.01, numbers
    assert s["delta_logp_forward_first_mean"] > s["delta_logp_forward_first_control_mean"], numbers
    print(numbers)


def test_weights_are_restored_bitwise(analysed):
    run, _, _, before, after = analysed
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"weights not restored after the analysis: {changed}"
    grads = [n for n, p in run.model.named_parameters() if p.grad is not None]
    assert not grads, f"gradients left behind on {grads[:3]}"
    assert not run.model.training, "the model must be back in eval mode"


def test_group_norms_partition_the_update(analysed):
    run, result, a, _, _ = analysed
    groups = parameter_groups(run.model)
    keys = [k for ks in groups.values() for k in ks]
    assert sorted(keys) == sorted(trainable(run.model)), "groups must cover each parameter once"
    sq = (a["group_norm"] ** 2).sum(1)
    np.testing.assert_allclose(
        sq,
        a["total_norm"] ** 2,
        rtol=1e-9,
        err_msg="group norms must add up in squares to the update norm",
    )
    assert abs(sum(g["norm_sq_share"] for g in result["groups"]) - 1) < 1e-9


def test_sgd_update_norm_is_lr_times_gradient_norm(analysed):
    """Independent check of the update itself: one SGD step moves the weights by lr * |grad|."""
    run, result, a, _, _ = analysed
    lr = result["options"]["lr"]
    lay = layout(run.dataset, None)
    model = run.model
    tokens, lengths = pad_batch([d.tokens for d in lay.docs[0]])
    loss = next_token_loss(model.original_model(tokens), tokens, lengths)
    grads = torch.autograd.grad(loss, list(trainable(model).values()))
    gnorm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    assert abs(a["total_norm"][0] - lr * gnorm) < 1e-4 * lr * gnorm, (
        f"update norm {a['total_norm'][0]:.6g} != lr * |grad| = {lr * gnorm:.6g}"
    )
    assert abs(a["loss_before"][0] - loss.item()) < 1e-5, (a["loss_before"][0], loss.item())


def test_outputs_on_disk(analysed):
    run, result, a, _, _ = analysed
    saved = json.loads((run.analysis_dir() / "update.json").read_text())
    assert saved["summary"] == pytest.approx(result["summary"], nan_ok=True)
    assert all(isinstance(v, float) for v in saved["summary"].values())
    for key in (
        "delta_logp_forward_mean",
        "delta_logp_forward_control_mean",
        "delta_logp_forward_p",
        "delta_logp_reverse_mean",
        "delta_logp_reverse_control_mean",
        "delta_logp_reverse_p",
        "proj_a_to_b_mean",
        "proj_b_to_a_mean",
        "top_group_revert_fraction_forward",
    ):
        assert key in saved["summary"], key
    assert saved["options"]["steps"] == 1 and saved["top_group_revert"] in a["groups"]
    n_new = sum(p.subset == "new" for p in run.dataset.people)
    assert a["delta_row_full"].shape[0] == n_new and a["proj"].shape[-1] == 3  # embed + 2 layers


def test_summary_recomputed_from_saved_arrays_alone(analysed):
    """update_summary rebuilds update.json from update.npz and the options, with no model."""
    from interp.analysis.update_summary import summary_from_saved

    run, _, _, _, _ = analysed
    saved = json.loads((run.analysis_dir() / "update.json").read_text())
    again = json.loads(json.dumps(summary_from_saved(run.path)))
    assert again.keys() == saved.keys(), set(again) ^ set(saved)
    bad = [k for k in saved["summary"] if saved["summary"][k] != again["summary"][k]
           and not (saved["summary"][k] != saved["summary"][k])]  # fmt: skip
    assert not bad, {k: (saved["summary"][k], again["summary"][k]) for k in bad}
    assert again["groups"] == saved["groups"] and again["projections"] == saved["projections"]


def test_group_effects_add_up_in_the_linear_regime(tiny_run, tmp_path):
    """With a tiny step the update is linear: the groups' effects alone sum to the full effect,
    and reverting a group removes what it adds alone. A group missing parameters breaks both."""
    run = dataclasses.replace(tiny_run, path=tmp_path)
    run_analysis(run, UpdateOptions(lr=1e-4, n_facts=2), progress=False)
    with np.load(tmp_path / "analysis" / "update.npz") as z:
        full, only, revert = z["full_correct"], z["only"], z["revert"]
    for di, d in enumerate(DIRECTIONS):
        summed = only[:, :, di].sum(1)
        np.testing.assert_allclose(
            summed,
            full[:, di],
            rtol=0.05,
            atol=1e-4,
            err_msg=f"{d}: sum of group-alone effects {summed} vs full {full[:, di]}",
        )
        lost = full[:, None, di] - revert[:, :, di]
        np.testing.assert_allclose(
            lost,
            only[:, :, di],
            rtol=0.1,
            atol=2e-4,
            err_msg=f"{d}: revert loss vs group-alone effect",
        )
    assert (np.abs(full[:, 0]) > 1e-3).all(), f"forward effect too small to test: {full[:, 0]}"


def test_adamw_update_also_teaches_the_fact(tiny_run, tmp_path):
    run = dataclasses.replace(tiny_run, path=tmp_path)
    s = run_analysis(run, UpdateOptions(optimizer="adamw", n_facts=3), progress=False).summary
    assert s["delta_logp_forward_mean"] > s["delta_logp_forward_control_mean"], (
        f"AdamW: forward {s['delta_logp_forward_mean']:.3f} vs control "
        f"{s['delta_logp_forward_control_mean']:.3f}"
    )


def test_unembed_direction_is_what_the_final_norm_and_unembedding_read(tiny_run):
    """Nudging h along u_t raises token t's logit at the rate the direction predicts, and a
    random direction's projection does not: the projection is the linearised logit change."""
    model = tiny_run.model
    net = model.original_model
    gen = torch.Generator().manual_seed(0)
    tokens = torch.tensor([10, 20, 30])
    u = unembed_directions(model, tokens)
    # A centred h orthogonal to the three directions: then moving along u_t leaves the norm's
    # scale unchanged to first order, and the rate is exactly |centred gamma * W_U[:, t]| / sigma.
    h = torch.randn(model.cfg.d_model, generator=gen) * 3
    basis, _ = torch.linalg.qr(torch.cat([torch.ones(1, model.cfg.d_model), u]).T.double())
    h = (h.double() - basis @ (basis.T @ h.double())).float()[None, None]
    eps = 1e-3
    with torch.no_grad():
        base = net.head(net.ln_out(h))[0, 0].double()
        for i, t in enumerate(tokens):
            moved = net.head(net.ln_out(h + eps * u[i]))[0, 0].double()
            rate = float(moved[t] - base[t]) / eps
            # d logit_t / d h . u = |centred gamma * W_U[:, t]| / sigma(h)
            w = (model.ln_final.weight * model.W_U[:, t]).double()
            w = w - w.mean()
            sigma = float(h.double().std(unbiased=False))
            expected = float(w.norm()) / (sigma**2 + 1e-5) ** 0.5
            assert abs(rate - expected) < 0.02 * expected, (
                f"token {int(t)}: logit rises at {rate:.4f} per unit along u, expected "
                f"{expected:.4f}"
            )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--n-facts", "999"], "--n-facts must be in 1.."),
        (["--objective", "telepathy"], "--objective 'telepathy' unknown"),
    ],
)
def test_bad_options_fail_in_one_line(capsys, tiny_run_dir, args, needle):
    rc = main(["update", str(tiny_run_dir), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"exit status {rc}, stderr: {err}"
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tiny_run_dir / "analysis" / "update.json").exists()
