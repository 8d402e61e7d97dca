"""The gradient-update test: a step on "A is B" raises the fact's forward log-probability beyond
both controls, the weights come back bitwise, the parameter groups partition the update (norms
and, in the linear regime, effects), the projection direction is the one the unembedding reads,
and bad options fail in one line. Issue 13: the per-position decomposition equals autograd's
gradient, first-order alignment matches the measured change at a small step, the attribution
sums to the total, the positive controls (Both subset; the reverse-training step) fire, and a
projection on the wrong token fails."""

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


def test_outputs_on_disk(analysed, check_summary):
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
        "top_group_attribution_fraction_forward",
        "align_reverse_first_mean",
        "both_align_reverse_first_mean",
    ):
        assert key in saved["summary"], key
    assert saved["options"]["steps"] == 1 and saved["top_group_attribution"] in a["groups"]
    typed = check_summary(run.path, "update")
    groups = [str(g) for g in a["groups"]]
    assert list(typed.group_attribution()) == groups, (list(typed.group_attribution()), groups)
    assert list(typed.group_norm_sq_share()) == groups
    assert sum(typed.group_norm_sq_share().values()) == pytest.approx(1.0)
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


# ---------------------------------------------------------------------------------------------
# The alignment, the decomposition and the attribution (issue 13).


def test_decomposition_reconstructs_autograd_in_float64(tiny_run):
    """The per-position rank-one terms, summed over roles, equal autograd's MLP weight gradient
    (float64: max |diff| <= 1e-5), for the causal and the B-only loss."""
    import copy

    from interp.analysis.alignment import step_docs, step_loss, subset_items
    from interp.analysis.decomposition import mlp_terms
    from interp.model import raw_forward

    model = copy.deepcopy(tiny_run.model).to(torch.float64)
    net = raw_forward(model)
    item = subset_items(tiny_run.dataset, "new")[0]
    for condition in ("causal", "b_only"):
        docs = step_docs(item.docs, condition, "causal", tiny_run.dataset)

        def loss_of(condition: str = condition) -> torch.Tensor:
            return step_loss(net, item.docs, condition, "causal", tiny_run.dataset, 0, 0, 1)

        terms = mlp_terms(net, docs, loss_of, max(len(d.tokens) for d in docs))
        params = trainable(model)
        for l in range(model.cfg.n_layers):
            w_in, w_out = params[f"blocks.{l}.mlp.in.weight"], params[f"blocks.{l}.mlp.out.weight"]
            g_in, g_out = torch.autograd.grad(loss_of(), [w_in, w_out])
            for name, mine, ref in (("in", terms.w_in, g_in), ("out", terms.w_out, g_out)):
                diff = float((mine[l].sum(0) - ref).abs().max())
                assert diff <= 1e-5, (
                    f"{condition} L{l} {name}: terms vs autograd max |diff| {diff:.3g} "
                    f"(gradient max {float(ref.abs().max()):.3g})"
                )
        assert int(terms.count.sum()) == sum(len(d.tokens) for d in docs), terms.count


@pytest.fixture(scope="module")
def small_step(tiny_run, tmp_path_factory):
    """The analysis at a small SGD step (lr 1e-4), where first order must hold."""
    run = dataclasses.replace(tiny_run, path=tmp_path_factory.mktemp("small"))
    return run_analysis(run, UpdateOptions(lr=1e-4, n_facts=4), write=False, progress=False)


def test_first_order_alignment_matches_the_measured_change_at_a_small_step(small_step):
    a = small_step.arrays
    lr = float(a["lr"])
    for di, d in enumerate(DIRECTIONS):
        predicted = lr * a["align"][:, di].sum(-1)
        measured = a["full_correct"][:, di]
        numbers = f"{d}: lr * alignment {predicted} vs measured Delta log p {measured}"
        if d == "same":
            assert (np.abs(predicted - measured) <= 0.1 * np.abs(measured)).all(), numbers
        else:  # the reverse change is small: within 10% of it, or 1% of the forward change
            tol = np.maximum(0.1 * np.abs(measured), 0.01 * np.abs(a["full_correct"][:, 0]))
            assert (np.abs(predicted - measured) <= tol).all(), numbers
        print(numbers)


def test_attribution_groups_sum_to_the_total_first_order_change(small_step, tiny_run):
    """Per group grad f . Delta theta sums to the full dot product; for one SGD step it is
    lr times the alignment, and it matches the measured change."""
    a = small_step.arrays
    total = a["attribution"].sum(-1)  # [F, D]
    lr = float(a["lr"])
    # Delta theta = after - before in float32 rounds at ~1e-7 of the weights: compare per group
    # with a tolerance of 1e-4 of the forward change
    scale = np.abs(total[:, :1, None]).max()
    np.testing.assert_allclose(
        a["attribution"],
        lr * a["align"],
        rtol=1e-3,
        atol=1e-4 * scale,
        err_msg="per-group attribution vs lr * alignment",
    )
    s = small_step.summary
    assert abs(s["attribution_total_forward_mean"] - total[:, 0].mean()) < 1e-12
    rel = np.abs(total[:, 0] - a["full_correct"][:, 0]) / np.abs(a["full_correct"][:, 0])
    assert (rel < 0.1).all(), f"attribution {total[:, 0]} vs measured {a['full_correct'][:, 0]}"
    tables = small_step["revert_only_tables"]
    assert tables == "kept", f"at lr 1e-4 the revert/only tables must be kept: {tables}"
    assert "revert_loss_forward" in small_step["groups"][0]


def test_both_subset_reverse_alignment_is_positive_and_above_control(analysed):
    """The positive control: where the fact was learned in both orders, the instrument reports
    a positive reverse alignment above the other Both people's (first token and full answer),
    and the step on both orders' documents is positive by construction."""
    _, result, _, _, _ = analysed
    s = result["summary"]
    numbers = {
        k: round(s[k], 4)
        for k in s
        if k.startswith("both") and ("reverse" in k) and k.endswith(("_mean", "_p"))
    }
    numbers["causal reverse first"] = (s["align_reverse_first_mean"], s["align_reverse_first_p"])
    assert s["both_align_reverse_first_mean"] > 0, numbers
    assert s["both_align_reverse_first_mean"] > s["both_align_reverse_first_control_mean"], numbers
    assert s["both_align_reverse_first_p"] < 0.05, numbers
    assert s["both_all_align_reverse_mean"] > s["both_all_align_reverse_control_mean"], numbers
    assert s["both_all_align_reverse_p"] < 0.05, numbers
    print(numbers)


def test_causal_forward_alignment_dwarfs_reverse(analysed):
    """On the causal model the forward first-token alignment is far above its control, and the
    reverse one is bounded below a small share of it (the hypothesis; a finding, not a rule:
    printed so a change shows)."""
    _, result, _, _, _ = analysed
    s = result["summary"]
    numbers = {k: s[k] for k in s if k.startswith(("align_", "reverse_first_bound"))}
    assert s["align_forward_first_mean"] > s["align_forward_first_control_mean"], numbers
    assert s["align_forward_first_p"] < 0.01, numbers
    assert s["reverse_first_bound_pct_of_forward"] < 25, numbers
    print(numbers)


def test_projection_on_the_wrong_token_fails(analysed):
    """The value written at the final position (the one before B) reads as B's first token:
    rank 0 on the vocabulary in the last layer, above the other roles' cosine. The deliberately
    broken variant, scoring the same saved values against another role word, must fail it."""
    from interp.analysis.decomposition import ROLES, token_rank
    from interp.analysis.update import matched_controls

    run, _, a, _, _ = analysed
    final = ROLES.index("final")
    assert (a["written_rank"][:, -1, final, 0] == 0).all(), a["written_rank"][:, -1, final, 0]
    assert (a["written_cos"][:, -1, final, 0] > a["written_cos_control"][:, -1, final, 0]).all()
    u_all = unembed_directions(run.model, torch.arange(run.model.cfg.d_vocab))
    written = torch.from_numpy(a["written"][:, -1, final])  # [fact, d_model]
    right = [
        int(token_rank(written[f], u_all, int(t))) for f, t in enumerate(a["target_tokens"][:, 0])
    ]
    assert right == [int(r) for r in a["written_rank"][:, -1, final, 0]], right
    roles, _ = matched_controls(run.dataset)
    broken = [
        int(token_rank(written[f], u_all, next(r for r in roles if r != int(t))))
        for f, t in enumerate(a["target_tokens"][:, 0])
    ]
    assert all(r > 0 for r in broken), f"a wrong role token must not rank first: {broken}"


def test_objective_condition_averages_seeded_mask_draws(tiny_run):
    """A masked objective's own step averages n_mask_draws masks seeded per fact: the same seed
    gives the same loss, another person gets other masks, and 16 draws differ from one."""
    from interp.analysis.alignment import step_loss, subset_items
    from interp.model import raw_forward

    net = raw_forward(tiny_run.model)
    items = subset_items(tiny_run.dataset, "new")
    ds = tiny_run.dataset
    with torch.no_grad():
        one = step_loss(net, items[0].docs, "objective", "mlm_u", ds, 5, items[0].person, 1)
        again = step_loss(net, items[0].docs, "objective", "mlm_u", ds, 5, items[0].person, 16)
        same = step_loss(net, items[0].docs, "objective", "mlm_u", ds, 5, items[0].person, 16)
        causal = step_loss(net, items[0].docs, "causal", "mlm_u", ds, 5, items[0].person, 16)
    assert float(again) == float(same), "same seed and person must give the same masks"
    assert float(again) != float(one), (float(again), float(one))
    assert float(causal) != float(again)


def test_reverse_training_step_shows_a_reverse_alignment(tiny_run):
    """The instrument can say yes on the new facts too: the reverse-training step (the reversed
    copy of "A is B" in the batch, --condition objective) has a reverse first-token alignment
    clearly above its control, a large share of the forward one; the causal step does not."""
    run = tiny_run
    opts = UpdateOptions(condition="objective", objective="reverse_entity", n_facts=6, n_both=0)
    s = run_analysis(run, opts, write=False, progress=False).summary
    numbers = {k: round(v, 4) for k, v in s.items() if k.startswith("align_")}
    assert s["align_reverse_first_mean"] > s["align_reverse_first_control_mean"], numbers
    assert s["align_reverse_first_p"] < 0.05, numbers
    assert s["align_reverse_over_forward_first"] > 0.2, numbers
    print(numbers)


def test_figures_read_the_saved_result(analysed, tmp_path):
    """The alignment and where-written figures draw from update.json/.npz alone."""
    from interp.plots.update import plot_alignment, plot_update_sites

    run, _, _, _, _ = analysed
    fig = plot_alignment({"causal": [run.path]}, tmp_path / "align")
    assert len(fig.axes[0].patches) == 4 * 3, "4 bars per column: causal, Both, Both both-orders"
    fig = plot_update_sites([run.path], tmp_path / "sites")
    assert len(fig.axes) == 6  # three heatmaps and their colour bars
    assert (tmp_path / "align.png").is_file() and (tmp_path / "sites.pdf").is_file()


def test_own_step_of_the_causal_objective_is_the_main_condition(analysed):
    """For next-token training its own step is the causal step and its own mode causal decoding,
    so the own-step alignment equals the main condition's, fact by fact (float tolerance)."""
    _, _, a, _, _ = analysed
    main_first = a["align_first"].sum(-1)  # [fact, direction] summed over groups
    assert np.allclose(a["own_first_align"], main_first, rtol=1e-4, atol=1e-6), (
        a["own_first_align"][:3],
        main_first[:3],
    )


def test_positive_control_on_both_orders_sees_the_reverse(analysed):
    """The own step on "A is B" plus "B is A" of each new person moves the reverse first-token
    log-prob far above its control, comparable to the forward one: the instrument can say yes
    on the people the null is stated for."""
    _, result, _, _, _ = analysed
    s = result["summary"]
    numbers = {k: round(s[k], 4) for k in s if k.startswith(("pair_", "own_"))}
    assert s["pair_align_reverse_first_mean"] > s["pair_align_reverse_first_control_mean"], numbers
    assert s["pair_align_reverse_first_p"] < 0.01, numbers
    ratio = s["pair_reverse_over_forward_first"]
    assert 0.2 < ratio < 5, numbers
    assert s["own_reverse_over_forward_first"] < 0.2, numbers  # the causal step alone: no
    print(numbers)


def test_masked_mode_logprob_is_the_evaluations(tiny_run):
    """The differentiable own-mode log-prob the own-step alignment reads equals, for MLM-U's
    masked mode, the evaluation's chain-rule log-prob (interp.modes.stepwise_logprobs)."""
    from interp.analysis.own_step import mode_answer_logprob
    from interp.model import raw_forward
    from interp.modes import prompt_suffixes, stepwise_logprobs
    from interp.objectives.mlm_u import MASKED_DECODING

    ds = tiny_run.dataset
    prompts = ds.new_prompts[:5]
    suffixes = prompt_suffixes(ds, prompts)
    net = raw_forward(tiny_run.model)
    with torch.no_grad():
        got = mode_answer_logprob(net, prompts, MASKED_DECODING, suffixes)
        want = stepwise_logprobs(
            tiny_run.model, MASKED_DECODING, [e.prompt for e in prompts],
            [e.answer for e in prompts], suffixes,
        ).mean()  # fmt: skip
    assert abs(float(got) - float(want)) < 1e-4, (float(got), float(want))
