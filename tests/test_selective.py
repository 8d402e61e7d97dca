"""Selective prediction (ASPIRE): metrics, beam search, soft-prompt self-evaluation, analysis."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from interp.analysis import selective as S
from interp.analysis import soft_prompt as SP
from interp.beam import beam_search
from interp.data.dataset import pad_batch
from interp.evaluate import completion_logprobs, greedy_generate
from interp.results import read_result


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny models run many small ops: one thread avoids oversubscription on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- metrics ---------------------------------------------------------------------------------


def test_auroc_separating_random_and_undefined():
    rng = np.random.default_rng(0)
    correct = rng.random(20_000) < 0.3
    perfect = S.auroc(correct + rng.random(len(correct)) * 0.5, correct)
    assert perfect == 1.0, f"a perfectly separating score must give AUROC 1, got {perfect}"
    inverted = S.auroc(-correct.astype(float), correct)
    assert inverted == 0.0, f"an inverted score must give AUROC 0, got {inverted}"
    rand = S.auroc(rng.random(len(correct)), correct)
    assert abs(rand - 0.5) < 0.02, f"a random score must give AUROC ~0.5, got {rand:.4f}"
    const = S.auroc(np.zeros(len(correct)), correct)
    assert const == 0.5, f"a constant score (all ties) must give AUROC 0.5, got {const}"
    assert math.isnan(S.auroc(rng.random(10), np.zeros(10, dtype=bool))), "one class -> NaN"


def test_accuracy_coverage_end_point_ties_and_oracle():
    rng = np.random.default_rng(1)
    correct = rng.random(500) < 0.4
    score = rng.integers(0, 5, size=500).astype(float)  # many ties
    cov, acc = S.accuracy_coverage(score, correct)
    assert cov[-1] == 1.0 and abs(acc[-1] - correct.mean()) < 1e-12, (
        f"at full coverage accuracy must be plain accuracy: {acc[-1]} vs {correct.mean()}"
    )
    perm = rng.permutation(500)
    _, acc_perm = S.accuracy_coverage(score[perm], correct[perm])
    assert np.allclose(acc, acc_perm), "the curve must not depend on the order of tied answers"
    const = S.auacc(np.zeros(500), correct)
    assert abs(const - correct.mean()) < 1e-12, f"constant score: AUACC {const} != accuracy"
    oracle = S.auacc(correct.astype(float), correct)
    rand = S.auacc(rng.random(500), correct)
    assert oracle > rand + 0.2, f"oracle AUACC {oracle:.3f} must beat a random score's {rand:.3f}"
    assert abs(rand - correct.mean()) < 0.08, (
        f"random AUACC {rand:.3f} vs accuracy {correct.mean():.3f}"
    )


# --- splits, beam search, soft prompt -----------------------------------------------------------


def test_split_people_disjoint_and_stratified(tiny_run):
    qs = [e for e in tiny_run.dataset.prompts if e.templates == "train"]
    people = S.split_people(qs, 0.25, 0.25, seed=0)
    sets = {k: set(v) for k, v in people.items()}
    for a in S.SPLITS:
        for b in S.SPLITS:
            if a < b:
                assert not sets[a] & sets[b], f"{a} and {b} share people {sets[a] & sets[b]}"
    assert set().union(*sets.values()) == {e.person for e in qs}, "every person lands in a split"
    subset_of = {e.person: e.subset for e in qs}
    for split, ps in people.items():
        assert {subset_of[p] for p in ps} == {"n2d", "d2n", "both"}, f"{split} lacks a subset"
    assert S.split_people(qs, 0.25, 0.25, seed=0) == people, "the split must be seeded"
    assert S.split_people(qs, 0.25, 0.25, seed=1) != people, "another seed, another split"


def test_beam_search_one_beam_is_greedy_and_scores_are_logprobs(tiny_run):
    model, ds = tiny_run.model, tiny_run.dataset
    qs = ds.prompts[::5]
    n_new = [len(e.answer) for e in qs]
    beams1 = beam_search(model, [e.prompt for e in qs], n_new, beams=1)
    for n in sorted(set(n_new)):
        idx = [i for i, k in enumerate(n_new) if k == n]
        greedy = greedy_generate(model, [qs[i].prompt for i in idx], n)
        got = [list(beams1[i][0].tokens) for i in idx]
        bad = sum(a != b for a, b in zip(got, greedy, strict=True))
        assert got == greedy, f"1 beam != greedy decoding for {bad} of {len(idx)} prompts"

    beams3 = beam_search(model.original_model, [e.prompt for e in qs], n_new, beams=3)
    # candidates that emitted no <eos> (an <eos> step adds log p(<eos>), which the tokens omit)
    full = [(i, c) for i, cs in enumerate(beams3) for c in cs if len(c.tokens) == n_new[i]]
    recomputed = completion_logprobs(
        model, [qs[i].prompt for i, _ in full], [c.tokens for _, c in full]
    ).numpy()
    claimed = np.array([c.logprob for _, c in full])
    assert np.allclose(claimed, recomputed, atol=1e-4), (
        f"beam log-probs disagree with a fresh forward pass: max diff "
        f"{np.abs(claimed - recomputed).max():.2e}"
    )
    for cs in beams3:
        assert len({c.tokens for c in cs}) == 3, "beams must be distinct"
        lp = [c.logprob for c in cs]
        assert lp == sorted(lp, reverse=True), f"beams must come best first: {lp}"


def test_soft_prompt_of_real_embeddings_reproduces_model_logits(tiny_run):
    """Soft vectors equal to real tokens' embeddings must give the model's own logits, at the
    right position, for rows of different lengths (so placement and positions are right)."""
    net = tiny_run.model.original_model
    qs = tiny_run.dataset.prompts[:40:3]
    suffix = (7, 18, 9)  # three real token ids used as the "soft prompt"
    soft = net.tok_embed.weight[list(suffix)].detach()
    toks, lens = pad_batch([e.tokens for e in qs])
    with torch.no_grad():
        got = SP.soft_prompt_logits(net, soft, toks, lens)
        ref_toks, ref_lens = pad_batch([e.tokens + suffix for e in qs])
        ref = net(ref_toks)[torch.arange(len(qs)), ref_lens - 1]
    diff = (got - ref).abs().max().item()
    assert diff < 1e-4, f"soft-prompt logits differ from the token run by {diff:.2e}"
    assert len(set(lens.tolist())) > 1, "the check needs rows of different lengths"


def test_prefix_cache_equals_the_plain_forward_pass_and_its_gradient(tiny_run):
    """The cached path (prefix keys/values computed once, only soft positions run) must give the
    plain forward pass's logits and soft-prompt gradient, on rows of different lengths and on a
    subset of rows in another order."""
    net = tiny_run.model.original_model
    seqs = [e.tokens for e in tiny_run.dataset.prompts[:60:2]]
    assert SP.supports_raw(net), "the tiny model must take the cached path"
    cache = SP.prefix_cache(net, seqs)
    rows = [5, 0, 17, 3, 29, 11]
    soft = torch.randn(
        3, net.cfg.d_model, generator=torch.Generator().manual_seed(0)
    ).requires_grad_(True)
    got = SP.cached_soft_logits(net, soft, cache, torch.tensor(rows))
    (g_got,) = torch.autograd.grad(got[:, 7].sum(), soft)
    toks, lens = pad_batch([seqs[i] for i in rows])
    ref = SP.soft_prompt_logits(net, soft, toks, lens)
    (g_ref,) = torch.autograd.grad(ref[:, 7].sum(), soft)
    diff, gdiff = (got - ref).abs().max().item(), (g_got - g_ref).abs().max().item()
    assert diff < 1e-4 and gdiff < 1e-4, f"cached vs plain: logits {diff:.2e}, grad {gdiff:.2e}"
    assert len(set(lens.tolist())) > 1, "the check needs rows of different lengths"


# --- self-evaluation training -------------------------------------------------------------------


@pytest.fixture(scope="module")
def answers(tiny_run):
    qs = [e for e in tiny_run.dataset.prompts if e.templates == "train"]
    people = S.split_people(qs, 0.25, 0.25, seed=0)
    ans = S.answer_questions(tiny_run.model.original_model, tiny_run.dataset, qs, beams=3)
    return ans, people


def test_self_eval_positive_control_learns_and_its_shuffled_label_does_not(tiny_run, answers):
    """Positive control: the label 'the question asks for the name' (readable from the rows)
    must be learned, beat ln 2 on validation and generalise to new people; the same label
    shuffled across training rows must not generalise; with the real labels, training must lower
    the loss."""
    net = tiny_run.model.original_model
    ans, people = answers
    opts = S.SelectiveOptions(max_epochs=6, patience=6, batch_size=32)
    tr, va, te = (ans.rows(people[s], False) for s in S.SPLITS)
    qs = ans.questions
    y, yv, yt = (S.answer_is_name(r, qs) for r in (tr, va, te))
    assert 0.2 < y.mean() < 0.8 and 0 < yt.mean() < 1, f"both types in the splits: {y.mean()}"

    def fit_and_score(labels):
        fit = SP.train_self_eval(net, (tr.seqs, labels), (va.seqs, yv), (7, 18), opts, 0)
        with torch.no_grad():
            margin = SP.self_eval_margins(net, fit.soft, te.seqs, (7, 18)).numpy().astype(float)
        return fit, S.auroc(margin, yt)

    fit, auc = fit_and_score(y)
    best = fit.val_loss[fit.best_epoch]
    shuffled = np.random.default_rng(0).permutation(y)
    sfit, sauc = fit_and_score(shuffled)
    numbers = (
        f"control: val loss {fit.val_loss[0]:.3f} -> {best:.3f} (ln 2 = {S.LN2:.3f}), test AUROC "
        f"{auc:.3f}; shuffled: val loss {min(sfit.val_loss):.3f}, test AUROC {sauc:.3f}"
    )
    print(numbers)
    assert best < 0.5 * S.LN2, numbers
    assert auc > 0.95, numbers
    assert abs(sauc - 0.5) < 0.25 and sauc < auc - 0.25, numbers

    real = SP.train_self_eval(
        net, (tr.seqs, tr.correct), (va.seqs, va.correct), (7, 18), replace(opts, max_epochs=4), 0
    )
    assert min(real.train_loss[1:]) < real.train_loss[0], (
        f"self-evaluation training must lower its loss: {real.train_loss}"
    )
    assert all(p.requires_grad for p in net.parameters()), "frozen() must restore requires_grad"


# --- the analysis, CLI and figure ----------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(tiny_run_dir, tmp_path_factory):
    """A private copy of the tiny run, analysed once through the CLI (small training budget)."""
    from interp.cli import main

    run_dir = tmp_path_factory.mktemp("selective") / "tiny"
    shutil.copytree(tiny_run_dir, run_dir)
    status = main(
        [
            "selective",
            str(run_dir),
            "--beams",
            "3",
            "--max-epochs",
            "4",
            "--patience",
            "4",
            "--no-progress",
        ]
    )
    assert status == 0
    return run_dir


def test_run_analysis_summary_controls_and_nan_reasons(analysed, capsys, check_summary):
    res = json.loads((analysed / "analysis" / "selective.json").read_text())
    s = res["summary"]
    assert all(isinstance(v, float) or v is None for v in s.values()), (
        "summary must be a flat dict of floats (null where undefined)"
    )
    for name in (*S.SCORES, *S.CONTROLS):
        for st in S.SETS:
            assert f"auroc_{name}_{st}" in s and f"auacc_{name}_{st}" in s, (name, st)
    assert res["options"]["beams"] == 3
    people = res["splits"]["people"]
    assert not (set(people["train"]) & set(people["test"])), "train and test share people"
    # The tiny model answers every forward training-template question right: AUROC undefined.
    if s["accuracy_forward"] == 1.0:
        assert s["auroc_likelihood_forward"] is None, s["auroc_likelihood_forward"]
        assert "auroc_likelihood_forward" in res["undefined"], res["undefined"]
    # The summary is what the saved per-question arrays say, score by score and set by set.
    with np.load(analysed / "analysis" / "selective.npz") as z:
        correct, direction = z["correct"], z["direction"]
        masks = {"mixed": np.ones(len(correct), bool), "forward": direction == "same"}
        masks["reverse"] = direction == "reverse"
        for name in (*S.SCORES, *S.CONTROLS):
            for st, m in masks.items():
                want = S.auroc(z[f"score_{name}"][m], correct[m])
                got = s[f"auroc_{name}_{st}"]
                same = got is None if math.isnan(want) else abs(got - want) < 1e-12
                assert same, f"auroc_{name}_{st}: summary {got}, recomputed {want}"
        acc = z["accuracy_mixed_likelihood"]
        assert abs(acc[-1] - s["accuracy_mixed"]) < 1e-12, "curve end point must be accuracy"
        assert abs(acc.mean() - s["auacc_likelihood_mixed"]) < 1e-12
    # The measured fact on the tiny world: its own likelihood separates right from wrong, and a
    # probe trained on shuffled labels (the Hewitt & Liang control) does not.
    real, shuffled = s["auroc_likelihood_mixed"], s["auroc_probe_shuffled_mixed"]
    assert real > 0.9, f"likelihood AUROC {real}"
    assert shuffled < real - 0.15, f"shuffled-label probe AUROC {shuffled} vs likelihood {real}"
    assert s["accuracy_mixed"] > s["accuracy_reverse"], (s["accuracy_mixed"], s["accuracy_reverse"])
    table = S.format_summary(read_result(analysed, "selective"))
    assert "likelihood" in table and "reverse AUROC" in table
    print(table)
    # The report states the learner's validation loss against ln 2, and its positive control
    # (is the answer a name?) is learned inside the analysis itself.
    assert "vs ln 2 = 0.693" in table, table
    assert abs(s["self_eval_val_loss_minus_ln2"] - (s["self_eval_val_loss_best"] - S.LN2)) < 1e-12
    assert s["positive_control_auroc_test"] > 0.9, s["positive_control_auroc_test"]
    assert s["positive_control_val_loss_best"] < S.LN2, s["positive_control_val_loss_best"]
    assert set(res["probe"]["position"]) == set(S.PROBES), res["probe"]
    # The learner on a confidence label (the chosen answers' correctness, from the state's own
    # log-probabilities) reads what likelihood reads; the linear probe on the same state, trained
    # on all candidates, does not reach it (0.48 against 1.00 in the default study).
    conf = s["auroc_probe_question_logprobs_mixed"]
    assert conf > 0.85 and conf > s["auroc_probe_question_mixed"] + 0.1, (
        conf,
        s["auroc_probe_question_mixed"],
        real,
    )
    lo, hi = s["auroc_likelihood_mixed_low"], s["auroc_likelihood_mixed_high"]
    assert lo <= real <= hi and hi - lo < 0.5, f"likelihood AUROC {real} interval [{lo}, {hi}]"
    assert "95% interval" in table, table
    typed = check_summary(analysed, "selective")
    assert typed.auroc.likelihood_mixed == real and typed.aurocs()["likelihood"] == real
    assert typed.aurocs("reverse") == {
        k[len("auroc_") : -len("_reverse")]: v
        for k, v in s.items()
        if k.startswith("auroc_") and k.endswith("_reverse")
    }
    assert typed.interval("auroc", "likelihood") == (lo, hi)


def test_plot_selective_writes_png_and_pdf(analysed, tmp_path):
    from interp.plots import figure_paths
    from interp.plots.selective import plot_selective

    plot_selective([analysed, analysed], tmp_path / "fig" / "selective")
    paths = figure_paths(tmp_path / "fig" / "selective")
    for p in paths:
        assert p.is_file() and p.stat().st_size > 10_000, f"{p} missing or empty"


def test_state_logprobs_are_the_models_log_probs(tiny_run):
    """The confidence control's features are the model's own next-token log-probabilities at
    the read position (the lens at the last layer equals the logits)."""
    import torch

    model, e = tiny_run.model, tiny_run.dataset.prompts[0]
    toks = torch.tensor([e.prompt])
    hidden = S.final_hidden(model, [tuple(e.prompt)], positions=[len(e.prompt) - 1])
    with torch.no_grad():
        want = model(toks)[0, -1].float().log_softmax(-1).double().numpy()
    got = S.state_logprobs(model, hidden)[0]
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
