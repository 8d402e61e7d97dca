"""Activation patching: our batched engine against TransformerLens, its invariants, and the
analysis on the tiny run (forward queries localise, reverse ones have no clean preference)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformer_lens import patching as tl_patching

from interp.analysis import activation_patching as E
from interp.analysis import patching as P
from interp.errors import UserError
from interp.model import build_model

TL_FUNCS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
}


def forward_prompts(ds, n=4, seed=0):
    """`n` forward n2d prompts on different templates (so lengths differ), with swap partners."""
    rng = random.Random(seed)
    pools = P.template_pools(ds)
    sel = ds.select(subset="n2d", direction="same", templates="train")
    by_t = {}
    for e in sel:
        by_t.setdefault(e.template, []).append(e)
    prompts = [by_t[t][k] for k in range(2) for t in sorted(by_t)][:n]
    partners = [P.swap_partner(e, pools[P._key(e)], rng) for e in prompts]
    assert all(q is not None for q in partners)
    return prompts, partners


def tl_swap_grid(model, e, q, clean, corrupted, act):
    """TL's get_act_patch_<act> on one prompt with our normalised metric."""
    clean_toks, corr_toks = torch.tensor([e.prompt]), torch.tensor([q.prompt])
    _, cache = model.run_with_cache(clean_toks)
    final, right = torch.tensor([e.prompt_len - 1]), torch.tensor([e.answer[0]])
    wrong = torch.tensor([[q.answer[0]]])

    def metric(logits):
        return E.patching_metric(
            logits, final, right, wrong, clean.reshape(1), corrupted.reshape(1)
        )[0]

    return TL_FUNCS[act](model, corr_toks, cache, metric)


def max_diff_vs_tl(model, prompts, partners, batch_size=7):
    """Largest |ours - TL| over every prompt, activation and cell (normalised metric)."""
    trace = P.trace_swap(model, prompts, partners, batch_size=batch_size)
    ours = trace.normalised()
    worst = 0.0
    for i, (e, q) in enumerate(zip(prompts, partners, strict=True)):
        for j, act in enumerate(E.ACTS):
            tl = tl_swap_grid(model, e, q, trace.clean[i], trace.corrupted[i], act)
            assert tl.shape == (model.cfg.n_layers, e.prompt_len)
            worst = max(worst, float((ours[i, j, :, : e.prompt_len] - tl).abs().max()))
    return worst, trace


def test_swap_matches_transformer_lens_on_trained_run(tiny_run):
    model = tiny_run.model
    prompts, partners = forward_prompts(tiny_run.dataset)
    worst, trace = max_diff_vs_tl(model, prompts, partners)
    gaps = (trace.clean - trace.corrupted).tolist()
    assert worst <= 1e-5, f"ours vs TL max |diff| {worst:.2e} (gaps {gaps})"
    assert min(gaps) > 1, f"the trained model should prefer the right answer: gaps {gaps}"
    # The TL-shaped single-prompt entry point, with TL's own ActivationCache.
    e, q = prompts[0], partners[0]
    _, cache = model.run_with_cache(torch.tensor([e.prompt]))
    final, right = torch.tensor([e.prompt_len - 1]), torch.tensor([e.answer[0]])
    wrong = torch.tensor([[q.answer[0]]])
    for act in E.ACTS:
        ours = E.get_act_patch(
            model,
            torch.tensor([q.prompt]),
            cache,
            act,
            lambda lg: E.answer_score(
                lg, final.expand(len(lg)), right.expand(len(lg)), wrong.expand(len(lg), -1)
            ),
            batch_size=5,
        )
        tl = TL_FUNCS[act](
            model,
            torch.tensor([q.prompt]),
            cache,
            lambda lg: E.answer_score(lg, final, right, wrong)[0],
        )
        diff = float((ours - tl).abs().max())
        assert diff <= 1e-5, f"get_act_patch({act}) vs TL: max |diff| {diff:.2e}"
    # TL's own scalar metric (row 0 of a one-row batch) gives TL's grid, not row 0 everywhere
    r, w = int(e.answer[0]), int(q.answer[0])

    def scalar(lg):
        return lg[0, -1, r] - lg[0, -1, w]

    corr = torch.tensor([q.prompt])
    ours = E.get_act_patch(model, corr, cache, "resid_pre", scalar, batch_size=5)
    tl = TL_FUNCS["resid_pre"](model, corr, cache, scalar)
    diff = float((ours - tl).abs().max())
    assert diff <= 1e-5 and float(tl.abs().max()) > 0.1, (diff, float(tl.abs().max()))
    with pytest.raises(UserError, match="return one value per row"):
        E.get_act_patch(model, torch.tensor([q.prompt]), cache, "resid_pre", lambda lg: lg[:, -1])


def test_swap_matches_transformer_lens_on_untrained_model(tiny_config, tiny_run):
    ds = tiny_run.dataset
    model = build_model(tiny_config.model, ds.d_vocab, seed=123)
    model.eval()
    prompts, partners = forward_prompts(ds, seed=1)
    worst, trace = max_diff_vs_tl(model, prompts, partners, batch_size=11)
    gaps = (trace.clean - trace.corrupted).abs()
    assert bool((gaps > 1e-3).all()), f"normalising needs a nonzero gap: {gaps.tolist()}"
    assert worst <= 1e-5, f"ours vs TL max |diff| {worst:.2e} (gaps {gaps.tolist()})"


def test_noise_matches_transformer_lens(tiny_run):
    """Noise on the embeddings (via a context hook for TL), averaged over samples."""
    model, ds = tiny_run.model, tiny_run.dataset
    prompts = ds.select(subset="n2d", direction="same", templates="train")[::9][:3]
    alternatives = [e.answer[0] for e in ds.select(subset="n2d", direction="same")]
    noise = P.entity_noise(prompts, 2, model.cfg.d_model, 0.5, torch.Generator().manual_seed(0))
    trace = P.trace_noise(model, prompts, noise, alternatives, batch_size=13)
    worst = 0.0
    for i, e in enumerate(prompts):
        toks = torch.tensor([e.prompt])
        _, cache = model.run_with_cache(toks)
        final, right = torch.tensor([e.prompt_len - 1]), torch.tensor([e.answer[0]])
        wrong = torch.tensor([[a for a in sorted(set(alternatives)) if a != e.answer[0]]])

        def metric(logits, final=final, right=right, wrong=wrong):
            return E.answer_score(logits, final, right, wrong)[0]

        for j, act in enumerate(E.ACTS):
            tl = 0.0
            for s in range(noise.shape[1]):
                nz = noise[i, s, : e.prompt_len][None]
                with model.hooks(fwd_hooks=[("hook_embed", lambda a, hook, nz=nz: a + nz)]):
                    tl = tl + TL_FUNCS[act](model, toks, cache, metric) / noise.shape[1]
            worst = max(worst, float((trace.patched[i, j, :, : e.prompt_len] - tl).abs().max()))
    assert worst <= 1e-5, f"noise: ours vs TL max |diff| {worst:.2e}"
    gap = (trace.clean - trace.corrupted).tolist()
    assert min(gap) > 0.5, f"noise should hurt the trained model's answer: gaps {gap}"


@pytest.mark.parametrize("path", ["stream", "hooks"])
def test_broken_patch_is_caught(tiny_run, monkeypatch, path):
    """Patching the position after the intended one must fail the comparison with TL, on the
    stored-stream path and on the hook path alike."""

    def off_by_one(act, rows, pos, clean):
        act[rows, (pos + 1).clamp(max=act.shape[1] - 1)] = clean
        return act

    prompts, partners = forward_prompts(tiny_run.dataset, n=2)
    monkeypatch.setattr(E, "_write_rows", off_by_one)
    if path == "hooks":
        monkeypatch.setattr(E, "_raw_net", lambda model: None)
    worst, _ = max_diff_vs_tl(tiny_run.model, prompts, partners)
    assert worst > 0.1, f"an off-by-one patch went unnoticed: max |diff| vs TL {worst:.3g}"


def test_stream_path_is_taken_and_matches_hooks(tiny_run, monkeypatch):
    """On the kit's models the engine patches from the stored stream (no bridge forward at all),
    and it agrees with the hook path cell for cell, for swaps and noise, across batch splits."""
    model, ds = tiny_run.model, tiny_run.dataset
    prompts, partners = forward_prompts(ds)
    alternatives = [e.answer[0] for e in ds.select(subset="n2d", direction="same")]
    noise = P.entity_noise(prompts, 2, model.cfg.d_model, 0.5, torch.Generator().manual_seed(0))

    def both(batch_size):  # the cells only: the entity-span patch goes through TL's hooks
        swap = P.trace_swap(model, prompts, partners, batch_size=batch_size, span=False)
        nz = P.trace_noise(model, prompts, noise, alternatives, batch_size=batch_size)
        return torch.stack([swap.patched, nz.patched])

    def no_bridge(*args, **kwargs):
        raise AssertionError("the stored-stream path ran a bridge forward")

    with monkeypatch.context() as m:
        m.setattr(model, "run_with_hooks", no_bridge)
        m.setattr(model, "run_with_cache", no_bridge)
        fast = {b: both(b) for b in (3, 512)}
    monkeypatch.setattr(E, "_raw_net", lambda model: None)
    hooks = both(512)
    for b, grid in fast.items():
        assert bool((grid.isnan() == hooks.isnan()).all()), f"batch {b}: padding cells differ"
        diff = float((grid - hooks).nan_to_num().abs().max())
        assert diff <= 1e-5, f"batch {b}: stream vs hook path max |diff| {diff:.2e}"


def test_clean_into_clean_gives_one(tiny_run):
    model, ds = tiny_run.model, tiny_run.dataset
    prompts, partners = forward_prompts(ds)
    trace = P.trace_swap(model, prompts, partners)  # real baselines, nonzero gaps
    toks, lengths = P._tokens(prompts, torch.device("cpu"))
    names = E.hook_names(model.cfg.n_layers)
    cache = E.cache_activations(model, toks, names)
    final, right = lengths - 1, P._first(prompts, torch.device("cpu"))
    wrong = P._first(partners, torch.device("cpu"))[:, None]

    def metric(logits, run):
        return E.patching_metric(
            logits, final[run], right[run], wrong[run], trace.clean[run], trace.corrupted[run]
        )

    grid = E.patch_cells(model, toks, cache, names, metric, lengths=lengths, batch_size=16)
    valid = grid[~grid.isnan()]
    assert valid.numel() == len(names) * int(lengths.sum())
    err = float((valid - 1).abs().max())
    assert err < 1e-4, f"clean into clean should give 1 everywhere; max |x - 1| = {err:.2e}"


def test_unchanged_positions_restore_nothing(tiny_run):
    """Before the swapped entity the runs are identical, so patching there must give 0; and at
    layer 0 resid_pre only the entity's own positions differ."""
    prompts, partners = forward_prompts(tiny_run.dataset)
    norm = P.trace_swap(tiny_run.model, prompts, partners).normalised()
    for i, e in enumerate(prompts):
        start, end = P.entity_span(e)
        before = norm[i, :, :, :start].abs().max()
        assert before < 1e-4, f"positions before the entity moved the metric by {before:.2e}"
        outside = torch.cat([norm[i, 0, 0, :start], norm[i, 0, 0, end : e.prompt_len]])
        assert outside.abs().max() < 1e-4, f"layer-0 resid_pre off the entity: {outside}"
        inside = norm[i, 0, 0, start:end]
        assert inside.abs().max() > 0.05, f"patching the entity's embeddings did nothing: {inside}"


def test_position_labels(tiny_run):
    ds = tiny_run.dataset
    e = ds.select(subset="n2d", direction="same", templates="train")[0]  # "<A> is the <B> ."
    assert P.position_labels(e) == ["<bos>", "A1", "A2", "post", "final"], ds.text(e.prompt)
    r = ds.select(subset="n2d", direction="reverse", templates="train")[0]  # "the <B> is called"
    assert P.position_labels(r) == ["<bos>", "pre", "B1", "B2", "B3", "B4", "post", "final"]
    assert P.entity_letter(r) == "B"


def test_run_analysis_and_plot(tiny_run_copy, tmp_path, check_summary):
    from interp.plots import figure_paths
    from interp.plots.patching import plot_patching
    from interp.runs import load_run

    run = load_run(tiny_run_copy)
    opts = P.PatchingOptions(max_prompts=12, noise_samples=2, subsets=("n2d",))
    res = P.run_analysis(run, opts, progress=False)
    on_disk = json.loads((tiny_run_copy / "analysis" / "patching.json").read_text())
    assert on_disk["summary"] == res["summary"]
    arrays = np.load(tiny_run_copy / "analysis" / "patching.npz")
    n_layers = run.config.model.n_layers
    fwd = res["groups"]["n2d"]["forward"]["swap"]
    assert arrays["n2d/forward/swap/normalised"].shape == (3, n_layers, len(fwd["labels"]))
    s = res["summary"]
    msg = json.dumps({k: round(v, 3) for k, v in s.items()})
    # Forward queries: a real gap, a localised restoration that beats the wrong-source control.
    assert fwd["meaningful"] and s["forward_clean_minus_corrupt"] > 5, msg
    # At least half the gap restored at the best cell (0.59 on the tiny run's seeded draw of 12
    # prompts; the last block's attention still reads the corrupted entity, so not all of it).
    assert s["forward_best_restoration"] >= 0.5, msg
    assert s["forward_best_restoration"] > s["forward_control_best_restoration"] + 0.2, msg
    assert s["n2d_forward_noise_resid_pre_best"] > s["n2d_forward_noise_control_best"] + 0.2, msg
    # Reverse queries: the clean run has far less preference; never a normalised map without one.
    assert abs(s["reverse_clean_minus_corrupt"]) < 0.5 * s["forward_clean_minus_corrupt"], msg
    for corruption in ("swap", "noise"):
        g = res["groups"]["n2d"]["reverse"][corruption]
        if not g["meaningful"]:
            assert g["normalised"]["resid_pre"] is None
            assert f"n2d_reverse_{corruption}_resid_pre_best" not in s
    reverse = res["groups"]["n2d"]["reverse"]["swap"]
    absent = () if reverse["meaningful"] else (
        "reverse_best_restoration", "reverse_best_layer", "reverse_control_best_restoration",
        "reverse_entity_last", "reverse_entity_all", "reverse_final", "reverse_severed",
        "reverse_control_entity",
    )  # fmt: skip
    typed = check_summary(tiny_run_copy, "patching", absent=absent)
    assert typed.forward.best_restoration == s["forward_best_restoration"]
    site = typed.forward.entity_last.mlp_out_max
    assert site.value == s["forward_entity_last_mlp_out_max"], site
    assert (
        site.low <= site.value <= site.high
        and site.layer == s["forward_entity_last_mlp_out_max_layer"]
    )
    severed = typed.forward.severed
    assert None not in (severed.none_max.value, severed.mlp_max.value, severed.attn_max.value)
    assert typed.group_gaps()[("n2d", "forward", "swap")] == s["forward_clean_minus_corrupt"]
    plot_patching([tiny_run_copy], tmp_path / "patching")
    paths = figure_paths(tmp_path / "patching")
    assert all(p.stat().st_size > 10_000 for p in paths), paths


def test_cli_patch(tiny_run_copy, capsys):
    from interp.cli import main

    code = main(
        ["patch", str(tiny_run_copy), "--corruption", "swap", "--max-prompts", "4", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "n2d forward swap" in out and "patching.json" in out, out
    res = json.loads((tiny_run_copy / "analysis" / "patching.json").read_text())
    assert res["options"]["corruptions"] == ["swap"]
    assert set(res["groups"]) == {"n2d", "d2n", "both"}
    assert main(["patch", str(tiny_run_copy), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad", [dict(corruptions=("blur",)), dict(templates="x"), dict(max_prompts=-1)]
)
def test_bad_options(bad):
    from interp.errors import UserError

    with pytest.raises(UserError):
        P.PatchingOptions(**bad)
