"""The logit lens and the tuned lens: invariants, the trained translator, controls, files."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.analysis.lens import (
    POSITIONS,
    LensOptions,
    TunedLens,
    TunedLensOptions,
    control_targets,
    fit_tuned_lens,
    lens_logits,
    lens_stack,
    position_table,
    residual_stack,
    run_analysis,
    score_prompts,
)
from interp.data.dataset import pad_batch
from interp.data.tokenizer import encode
from interp.errors import UserError
from interp.runs import load_run


def _plot_script():
    """main() of experiments/plot.py, drawing the lens figure (a script, not a module)."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "plot.py"
    main = runpy.run_path(str(script))["main"]
    return lambda argv: main(["lens", *argv])


def _prompts(run, n=48):
    prompts = run.dataset.select(templates="train")
    return prompts[:: max(1, len(prompts) // n)]


def test_logit_lens_at_last_layer_equals_model_logits(tiny_run):
    model = tiny_run.model
    exs = _prompts(tiny_run)
    toks, _ = pad_batch([e.prompt for e in exs])
    with torch.no_grad():
        logits = model(toks)  # [batch, pos, d_vocab]
        native = model.original_model(toks)
        lens = lens_stack(model, residual_stack(model, toks))  # [layer, batch, pos, d_vocab]
    diff = (lens[-1] - logits).abs().max().item()
    diff_native = (lens[-1] - native).abs().max().item()
    assert diff <= 1e-4 and diff_native <= 1e-4, (
        f"last-layer lens vs logits: {diff}, vs native model {diff_native}"
    )
    # A layer that is not the last must differ, or the lens is reading the output everywhere.
    assert (lens[0] - logits).abs().max().item() > 1.0

    # The notebook function: per-row positions, from tokens or from a cache, same numbers.
    pos = torch.tensor([e.prompt_len - 1 for e in exs])
    rows = torch.arange(len(exs))
    from_tokens = lens_logits(model, toks, model.cfg.n_layers, pos)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
    from_cache = lens_logits(model, cache, -1, pos)
    d1 = (from_tokens - logits[rows, pos]).abs().max().item()
    d2 = (from_cache - from_tokens).abs().max().item()
    assert d1 <= 1e-4 and d2 <= 1e-5, f"lens_logits vs logits {d1}, cache vs tokens {d2}"

    # The logit lens is the tuned lens at its (identity) initialisation, at every layer.
    identity = TunedLens(model.cfg.n_layers, model.cfg.d_model)
    for layer in range(model.cfg.n_layers + 1):
        a = lens_logits(model, cache, layer, pos, translator=identity)
        b = lens_logits(model, cache, layer, pos)
        assert torch.equal(a, b), f"identity translator changed layer {layer}"


def test_ranks_match_argsort_and_positions_come_from_spans(tiny_run):
    run = tiny_run
    exs = _prompts(run, 24)
    where = position_table(exs)
    tok = run.dataset.tokenizer
    for e, w in zip(exs, where, strict=True):
        person = run.dataset.people[e.person]
        assert w[2] == e.prompt_len - 1
        if e.order == "n2d":  # A first: A's last token is in the prompt, B is the answer
            assert w[1] == -1 and e.tokens[w[0]] == encode(tok, person.last)[0]
        else:
            assert w[0] == -1 and e.tokens[w[1]] == encode(tok, person.title[-1])[0]
    targets = np.stack([[e.answer[0] for e in exs], control_targets(exs)], axis=1)
    assert (targets[:, 1] != targets[:, 0]).all(), "control token equals the answer's"
    ranks, logps = score_prompts(run.model, exs, targets)
    toks, _ = pad_batch([e.prompt for e in exs])
    with torch.no_grad():
        logp = run.model(toks).log_softmax(-1)[torch.arange(len(exs)), torch.tensor(where[:, 2])]
    order = logp.argsort(-1, descending=True)  # [batch, d_vocab]
    ref = (order == torch.tensor(targets[:, 0])[:, None]).float().argmax(-1) + 1
    k = POSITIONS.index("final")
    np.testing.assert_array_equal(ranks[:, 0, k, -1], ref.numpy())
    np.testing.assert_allclose(
        logps[:, 0, k, -1], logp[torch.arange(len(exs)), targets[:, 0]].numpy(), atol=1e-5
    )
    absent = np.isnan(ranks[:, 0, :2, 0])
    np.testing.assert_array_equal(absent, where[:, :2] < 0)


def test_tuned_lens_beats_logit_lens_at_layer_0(tiny_run):
    lens, info = fit_tuned_lens(
        tiny_run.model, tiny_run.dataset.train_docs, TunedLensOptions(steps=100), progress=False
    )
    logit, tuned = info["kl_logit_heldout"], info["kl_tuned_heldout"]
    msg = f"held-out KL per layer: logit lens {logit}, tuned lens {tuned}"
    assert tuned[0] < 0.5 * logit[0], msg
    assert all(t <= lo + 1e-4 for t, lo in zip(tuned, logit, strict=True)), msg
    assert abs(logit[-1]) < 1e-5 and abs(tuned[-1]) < 1e-5, msg  # the last layer is the model
    assert lens.weight.abs().max() > 0, "the translators never moved"
    assert all(not p.requires_grad or p.grad is None for p in tiny_run.model.parameters()), (
        "fitting the lens left gradients on the model"
    )


def test_analysis_effect_and_random_init_control(tiny_run_copy, check_summary):
    run = load_run(tiny_run_copy)
    state = torch.random.get_rng_state()
    result = run_analysis(run, progress=False)
    assert torch.equal(state, torch.random.get_rng_state()), "the analysis moved the global RNG"
    s, d_vocab = result["summary"], result["d_vocab"]
    assert result["options"]["tuned"] is False and result["options"]["templates"] == "train"
    # The trained model answers forward (and both-subset) prompts: rank 1 at the final position.
    for sub in ("n2d", "d2n", "both"):
        assert s[f"final_pos_rank_last_layer_{sub}_same"] == 1.0, s
    assert s["final_pos_rank_last_layer_all_same"] == 1.0, s
    # Control: the same lens on the run's initial weights is near chance.
    for d in ("same", "reverse"):
        r = s[f"control_random_init_final_pos_rank_last_layer_all_{d}"]
        assert r > d_vocab / 5, f"random-init median rank {r} for {d}, d_vocab {d_vocab}"
    assert all(isinstance(v, float) for v in s.values())
    with np.load(tiny_run_copy / "analysis" / "lens.npz", allow_pickle=False) as z:
        n_layers = run.model.cfg.n_layers
        assert z["logit_median_rank"].shape == (3, 2, 2, 3, n_layers + 1)
        assert z["logit_rank"].shape == (result["n_prompts"], 2, 3, n_layers + 1)
        assert "tuned_median_rank" not in z.files and "random_init_median_rank" in z.files
    assert json.loads((tiny_run_copy / "analysis" / "lens.json").read_text())["summary"] == s
    assert not (tiny_run_copy / "analysis" / "tuned_lens.safetensors").exists()
    typed = check_summary(tiny_run_copy, "lens", absent=("kl_tuned_heldout_mean",))
    assert typed.final_pos_rank_last_layer_all.same == 1.0, typed
    ranks = typed.rank_last_layer()
    assert ranks[("n2d", "same")] == s["final_pos_rank_last_layer_n2d_same"], ranks
    assert set(ranks) == {(sub, d) for sub in ("n2d", "d2n", "both") for d in ("same", "reverse")}
    assert len(typed.kl_by_layer()) == run.model.cfg.n_layers and not typed.kl_by_layer("tuned")


def test_cli_tuned_saves_safetensors_and_plot(tiny_run_copy, tmp_path, capsys, check_summary):
    from interp.cli import main

    assert (
        main(
            [
                "lens",
                str(tiny_run_copy),
                "--tuned",
                "--tuned-steps",
                "60",
                "--templates",
                "heldout",
                "--no-progress",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "n2d    same" in table and "tuned" in table, table
    result = json.loads((tiny_run_copy / "analysis" / "lens.json").read_text())
    assert result["options"]["templates"] == "heldout" and result["options"]["tuned"]
    assert result["summary"]["kl_tuned_layer0"] < result["summary"]["kl_logit_layer0"]
    s = result["summary"]
    assert s["kl_tuned_heldout_mean"] < s["kl_logit_heldout_mean"], (
        f"held-out people, mean KL over layers: tuned {s['kl_tuned_heldout_mean']}, "
        f"logit {s['kl_logit_heldout_mean']}"
    )
    typed = check_summary(tiny_run_copy, "lens")
    assert typed.kl_tuned_heldout_mean == s["kl_tuned_heldout_mean"]
    assert typed.kl_by_layer("tuned")[0] == s["kl_tuned_layer0"]
    lens = TunedLens.load(tiny_run_copy / "analysis" / "tuned_lens.safetensors")
    run = load_run(tiny_run_copy)
    lens.check(run.model)
    assert lens.weight.abs().max() > 0

    plot_main = _plot_script()
    out = tmp_path / "fig" / "lens"
    assert plot_main([str(tiny_run_copy), str(tiny_run_copy), "--out", str(out)]) == 0
    for suffix in (".png", ".pdf"):
        assert out.with_suffix(suffix).stat().st_size > 10_000


def test_bad_input_is_a_user_error(tiny_run, tmp_path):
    with pytest.raises(UserError, match="templates"):
        run_analysis(tiny_run, LensOptions(templates="bogus"), progress=False)
    toks = torch.tensor([[1, 5, 6]])
    with pytest.raises(UserError, match="layer"):
        lens_logits(tiny_run.model, toks, tiny_run.model.cfg.n_layers + 1, -1)
    with pytest.raises(UserError, match="not found"):
        TunedLens.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="corrupt"):
        TunedLens.load(bad)
    with pytest.raises(UserError, match="tuned lens"):
        TunedLens(1, 8).check(tiny_run.model)
    plot_main = _plot_script()
    assert plot_main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def test_tuned_lens_split_holds_out_whole_people(tiny_run):
    from interp.analysis.lens import split_docs

    docs = tiny_run.dataset.train_docs
    fit, held = split_docs(docs, 0.25, seed=3)
    fit_people = {d.person for d in fit if d.person >= 0}
    held_people = {d.person for d in held}
    assert held and fit and not fit_people & held_people, sorted(fit_people & held_people)
    assert len(fit) + len(held) == len(docs)
    n = len({d.person for d in docs if d.person >= 0})
    assert len(held_people) == max(1, round(0.25 * n)), (len(held_people), n)
    assert split_docs(docs, 0.25, seed=3) == (fit, held)  # seeded


def test_tuned_lens_in_the_study_reports_heldout_kl_beside_the_logit_lens():
    from interp.analysis import INSTRUMENTS
    from interp.presets import make_plan

    for preset in ("default", "tiny"):
        lens = make_plan(preset).instruments["lens"]
        assert lens.options.tuned is True and lens.applies("causal", 0)
    assert {"kl_logit_heldout_mean", "kl_tuned_heldout_mean"} <= set(INSTRUMENTS["lens"].headlines)
