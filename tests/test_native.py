"""Native-mode evaluation (interp.native): the masking objectives asked in their own mode.

The mode must (1) never show the model the answer it is asked for, (2) read each masked token at
the position the masking objectives train (t - 1), (3) leave the model causal afterwards, and
(4) be what `evaluate_run` reports, beside causal decoding, for BICO and MLM-U only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from interp.data.tokenizer import EOS, MASK
from interp.evaluate import evaluate_run, is_masked_objective
from interp.native import document_suffix, native_exact_match, native_predict, prompt_suffixes
from interp.objectives.masking import bidirectional, is_causal


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


@pytest.fixture(scope="module")
def model(fresh_model):
    return fresh_model


def test_suffix_is_the_documents_tail(dataset):
    suffix = document_suffix(dataset)
    assert suffix[-1] == EOS, suffix
    assert dataset.text(suffix[:-1]).strip() == ".", dataset.text(suffix)


def test_suffix_completes_each_prompts_own_template(dataset):
    """The masked answer sits in its template's whole sentence: prompt + answer + suffix is the
    template's full text for that person (a training document, for training templates)."""
    docs = {d.tokens for d in dataset.train_docs}
    prompts = [e for e in dataset.prompts if e.templates == "train"]
    for e, suffix in zip(prompts, prompt_suffixes(dataset, prompts), strict=True):
        assert suffix[-1] == EOS, suffix
        assert tuple(e.tokens) + suffix in docs or e.direction == "reverse", dataset.text(e.tokens)
    long_tail = [s for s in prompt_suffixes(dataset, dataset.prompts) if len(s) > 2]
    assert long_tail, "no template with words after its answer: the test checks nothing"


def test_native_reads_masked_positions_before_each_token(model, dataset):
    prompts = [e for e in dataset.prompts if e.direction == "reverse"][:12]
    suffixes = prompt_suffixes(dataset, prompts)
    pred = native_predict(model, prompts, suffixes)
    for e, p, suffix in zip(prompts, pred, suffixes, strict=True):
        seq = torch.tensor([tuple(e.prompt) + (MASK,) * len(e.answer) + suffix])
        with bidirectional(model), torch.no_grad():
            logits = model(seq)[0]
        n = len(e.prompt)
        want = tuple(logits[n - 1 : n - 1 + len(e.answer)].argmax(-1).tolist())
        assert p == want, (p, want)
    assert is_causal(model), "native mode left the model bidirectional"


def test_native_never_sees_the_answer(model, dataset):
    """Swapping every answer for another person's of the same length changes no prediction:
    the answer only enters as <mask> tokens."""
    prompts = [e for e in dataset.prompts if e.direction == "reverse"][:20]
    others = list(reversed(prompts))
    swapped = [
        replace(e, tokens=tuple(e.prompt) + tuple(o.answer))
        for e, o in zip(prompts, others, strict=True)
        if len(o.answer) == len(e.answer)
    ]
    assert len(swapped) >= 5, len(swapped)
    originals = [e for e, o in zip(prompts, others, strict=True) if len(o.answer) == len(e.answer)]
    assert native_predict(model, swapped) == native_predict(model, originals)


def test_native_exact_match_scores_a_perfect_reader(dataset):
    """A 'model' whose bidirectional logits at t - 1 name the answer token scores 100%, and 0%
    when it names any other token: the score can say yes and no."""

    class Oracle(torch.nn.Module):
        def __init__(self, shift: int) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(1, 1)
            self.attn.causal = True  # the flag `bidirectional` flips
            self.shift = shift
            self.answers = {tuple(e.prompt): tuple(e.answer) for e in dataset.prompts}

        def forward(self, toks: torch.Tensor) -> torch.Tensor:
            assert not self.attn.causal, "native mode must run bidirectionally"
            out = torch.zeros(*toks.shape, dataset.d_vocab)
            for r, row in enumerate(toks.tolist()):
                k = row.index(MASK)
                ans = self.answers[tuple(row[:k])]
                for j, a in enumerate(ans):
                    out[r, k - 1 + j, (a + self.shift) % dataset.d_vocab] = 1.0
            return out

    right = native_exact_match(Oracle(0), dataset)[0]["exact_match"]
    wrong = native_exact_match(Oracle(1), dataset)[0]["exact_match"]
    for s, by_d in right.items():
        for d, by_k in by_d.items():
            for k, v in by_k.items():
                assert v == 1.0 and wrong[s][d][k] == 0.0, (s, d, k, v, wrong[s][d][k])


def test_evaluate_run_reports_native_mode_for_masking_objectives(
    tmp_path, tiny_config, dataset, model
):
    assert is_masked_objective("mlm_u") and is_masked_objective("bico")
    assert not is_masked_objective("causal") and not is_masked_objective("reverse_entity")
    for objective in ("mlm_u", "causal"):
        cfg = replace(tiny_config, train=replace(tiny_config.train, objective=objective))
        out = tmp_path / objective
        out.mkdir()
        m = evaluate_run(out, model=model, dataset=dataset, config=cfg)
        assert ("native" in m) == (objective == "mlm_u"), (objective, sorted(m))
        saved = np.load(out / "eval_logprobs.npz")
        assert ("native_exact_match" in saved) == (objective == "mlm_u"), sorted(saved)
    assert set(m) >= {"exact_match"}


def test_report_lists_native_mode_beside_causal_decoding(tmp_path, fakes, quick_bootstrap):
    """A run whose eval_logprobs.npz holds native-mode hits gets a native-mode row in the
    report's exact-match table, with its own rate; a run without them shows '-'."""
    from interp.report import behaviour_section

    study = fakes.study(tmp_path, "tiny", objectives=["causal", "mlm_u"], seeds=[0])
    for run in study.runs:
        fakes.evaluation(run)
    masked = study.runs[1].path
    a = dict(np.load(masked / "eval_logprobs.npz"))
    a["native_exact_match"] = (a["direction"] == "reverse") & (a["subset"] == "n2d")
    np.savez(masked / "eval_logprobs.npz", **a)
    text = "\n".join(behaviour_section(study))
    rows = [ln for ln in text.splitlines() if "native mode |" in ln]
    assert rows, text
    n2d = next(ln for ln in rows if ln.startswith("| n2d reverse (train"))
    d2n = next(ln for ln in rows if ln.startswith("| d2n reverse (train"))
    assert n2d.split("|")[2].strip() == "-", n2d  # the causal run has no native mode
    assert n2d.split("|")[3].strip().startswith("100.0%"), n2d
    assert d2n.split("|")[3].strip().startswith("0.0%"), d2n


def test_comparison_figure_shows_forward_beside_reverse_and_native(tmp_path):
    """The comparison's first panel has trained-order bars beside reversed ones, and native-mode
    bars with the masking objective's value (nothing for the causal one)."""
    import json

    from interp.plots.comparison import plot_comparison

    def run(name, native):
        d = tmp_path / name
        d.mkdir()
        em = {s: {"same": {"train": 0.97}, "reverse": {"train": 0.0}} for s in ("n2d", "d2n")}
        m = {"exact_match": em}
        if native:
            m["native"] = {"exact_match": {s: {"reverse": {"train": 0.6}} for s in ("n2d", "d2n")}}
        (d / "metrics.json").write_text(json.dumps(m))
        return d

    fig = plot_comparison({"causal": [run("c", False)], "mlm_u": [run("m", True)]})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["n2d same", "d2n same"] and "n2d reversed, native" in labels, labels
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = {c.get_label(): [p.get_height() for p in c] for c in bars}
    native = heights["n2d reversed, native"]
    assert np.isnan(native[0]) and native[1] == pytest.approx(0.6), heights
    assert heights["n2d same"] == [pytest.approx(0.97)] * 2, heights


def test_infill_masks_one_entity_and_scores_a_perfect_reader(dataset):
    """infill_exact_match masks the first (reverse) or second (same) entity of each training
    document; a reader that fills masks from the document scores 1, a shifted one 0."""
    from interp.native import infill_exact_match

    full = {}
    for d in dataset.train_docs:
        for span in (d.a_span, d.b_span):
            t = list(d.tokens)
            t[span[0] : span[1]] = [MASK] * (span[1] - span[0])
            full[tuple(t)] = d.tokens

    class Reader(torch.nn.Module):
        def __init__(self, shift: int) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(1, 1)
            self.attn.causal = True
            self.shift = shift

        def forward(self, toks: torch.Tensor) -> torch.Tensor:
            assert not self.attn.causal
            row = toks[0].tolist()
            orig = full[tuple(row)]  # KeyError if the input is not a doc with one entity masked
            out = torch.zeros(1, len(row), dataset.d_vocab)
            for t, tok in enumerate(row):
                if tok == MASK:
                    out[0, t - 1, (orig[t] + self.shift) % dataset.d_vocab] = 1.0
            return out

    right, wrong = infill_exact_match(Reader(0), dataset), infill_exact_match(Reader(1), dataset)
    for s in right:
        for d in ("same", "reverse"):
            assert right[s][d]["rate"] == 1.0 and wrong[s][d]["rate"] == 0.0, (s, d, right, wrong)
