"""Each objective asked in its own mode (interp.modes), and the masking losses as their papers set
them (interp.objectives.masking).

Masked decoding must (1) never show the model the answer it is asked for, (2) read each token
where the mode says (t for MLM-U, t - 1 for the causal head), left to right, the rest of the
answer still masked, and equal one-shot reading on a one-token answer, (3) hide masked tokens
from attention (a changed masked token changes nothing elsewhere), (4) leave the model causal.
The MLM-U loss weighs each sequence the same (Kitouni et al.'s eq. 5).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from interp.data.tokenizer import EOS, MASK
from interp.evaluate import evaluate_run, exact_match
from interp.model import raw_forward
from interp.modes import (
    document_suffix,
    infill_exact_match,
    masked_decode,
    prompt_suffixes,
    stepwise_logprobs,
)
from interp.objectives import get_objective
from interp.objectives.masking import bidirectional, is_causal, keyed_forward, masked_loss
from interp.objectives.mlm_u import MASKED_DECODING


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


def test_the_bridge_needs_explicit_positions_under_a_key_mask(model, dataset):
    """A TransformerLens habit that bites: with an attention mask and no position_ids, the
    bridge derives positions from the mask's running sum (Hugging Face's left-padding rule),
    shifting every token after a hidden <mask>. `keyed_forward` passes them, and then the
    bridge equals the kit's RawForward."""
    toks = torch.tensor([dataset.train_docs[0].tokens])
    toks[0, 2] = MASK
    keep = (toks != MASK).long()
    with torch.no_grad(), bidirectional(model):
        fast = raw_forward(model)(toks, attention_mask=keep)
        bridge = keyed_forward(model, toks, keep)
        derived = model(toks, attention_mask=keep)
    assert torch.allclose(bridge, fast, atol=1e-5), (bridge - fast).abs().max()
    assert not torch.allclose(derived, fast, atol=1e-3), "the bridge no longer shifts positions"


def test_a_masked_token_is_never_attended(model, dataset):
    """Under Kitouni et al.'s and Lv et al.'s key mask, changing the token under a mask changes
    no other position's logits; with masks attended (BERT), it does."""
    doc = dataset.train_docs[0].tokens
    a = torch.tensor([doc])
    b = a.clone()
    b[0, 3] = doc[1]  # another token at the masked position
    keep = torch.ones_like(a)
    keep[0, 3] = 0
    with torch.no_grad(), bidirectional(model):
        la, lb = keyed_forward(model, a, keep), keyed_forward(model, b, keep)
        open_a, open_b = model(a), model(b)
    others = [t for t in range(len(doc)) if t != 3]
    assert torch.equal(la[0, others], lb[0, others]), (la[0, others] - lb[0, others]).abs().max()
    assert not torch.allclose(open_a[0, others], open_b[0, others]), "the test cannot fail"


def test_per_sequence_weighting_on_a_hand_made_batch(model, dataset):
    """Two sequences, one masked token in the first and three in the second: MLM-U's loss is the
    mean of (the first's loss, the mean of the second's three), each sequence weighing the
    same; the token mean weighs the second three times as much."""
    docs = [d.tokens for d in dataset.train_docs if len(d.tokens) >= 7][:2]
    width = min(len(d) for d in docs)
    tokens = torch.tensor([d[:width] for d in docs])
    lengths = torch.tensor([width, width])
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[0, 2] = True
    mask[1, [1, 3, 5]] = True
    inputs = tokens.masked_fill(mask, MASK)
    with torch.no_grad():
        keep = (~mask).long()
        with bidirectional(model):
            logits = keyed_forward(model, inputs, keep)
        ce = (
            F.cross_entropy(logits[0], tokens[0], reduction="none"),
            F.cross_entropy(logits[1], tokens[1], reduction="none"),
        )
        want_seq = (ce[0][2] + ce[1][[1, 3, 5]].mean()) / 2
        want_tok = (ce[0][2] + ce[1][[1, 3, 5]].sum()) / 4
        got_seq, got_tok = (
            masked_loss(model, tokens, lengths, mask, shift=0, masks_attended=False,
                        per_sequence=p)
            for p in (True, False)
        )  # fmt: skip
    assert torch.allclose(got_seq, want_seq, atol=1e-5), (got_seq, want_seq)
    assert torch.allclose(got_tok, want_tok, atol=1e-5), (got_tok, want_tok)
    assert not torch.allclose(want_seq, want_tok, atol=1e-3), "weightings coincide: no test"


def _one_token(prompts):
    """The prompts cut to a one-token answer (the answer's first token)."""
    return [replace(e, tokens=tuple(e.prompt) + tuple(e.answer[:1])) for e in prompts]


def test_left_to_right_masked_decoding_equals_one_shot_on_a_one_token_answer(model, dataset):
    prompts = _one_token([e for e in dataset.prompts if e.direction == "reverse"][:12])
    suffixes = prompt_suffixes(dataset, prompts)
    pred = masked_decode(model, MASKED_DECODING, [e.prompt for e in prompts], [1] * 12, suffixes)
    for e, p, suffix in zip(prompts, pred, suffixes, strict=True):
        seq = torch.tensor([tuple(e.prompt) + (MASK,) + suffix])
        with torch.no_grad(), bidirectional(model):
            logits = keyed_forward(model, seq, (seq != MASK).long())[0]
        assert p == (int(logits[len(e.prompt)].argmax()),), (p, logits[len(e.prompt)].argmax())
    assert is_causal(model), "masked decoding left the model bidirectional"


def test_left_to_right_fills_each_token_before_reading_the_next(dataset):
    """At step j the answer's first j tokens are in the input (as decoded), the rest masked."""
    seen: list[list[int]] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(1, 1)
            self.attn.causal = True

        def forward(self, toks, attention_mask=None, position_ids=None):
            seen.append(toks[0].tolist())
            out = torch.zeros(*toks.shape, dataset.d_vocab)
            out[..., 7] = 1.0  # always decode token 7
            return out

    e = dataset.prompts[0]
    masked_decode(Spy(), MASKED_DECODING, [e.prompt], [3], [(EOS,)])
    p = len(e.prompt)
    assert [s[p : p + 3] for s in seen] == [[MASK] * 3, [7, MASK, MASK], [7, 7, MASK]], seen


def test_masked_decoding_never_sees_the_answer(model, dataset):
    """Swapping every answer for another person's of the same length changes no prediction:
    the answer only enters as <mask> tokens."""
    prompts = [e for e in dataset.prompts if e.direction == "reverse"][:20]
    others = list(reversed(prompts))
    keep = [(e, o) for e, o in zip(prompts, others, strict=True) if len(o.answer) == len(e.answer)]
    assert len(keep) >= 5, len(keep)
    swapped = [replace(e, tokens=tuple(e.prompt) + tuple(o.answer)) for e, o in keep]
    originals = [e for e, _ in keep]
    got = [exact_match(model, dataset, x, mode=MASKED_DECODING) for x in (originals, swapped)]
    preds = [
        masked_decode(model, MASKED_DECODING, [e.prompt for e in x], [len(e.answer) for e in x],
                      prompt_suffixes(dataset, x))
        for x in (originals, swapped)
    ]  # fmt: skip
    assert preds[0] == preds[1] and len(got[0]) == len(got[1])


class Oracle(torch.nn.Module):
    """A 'model' whose bidirectional logits at position (masked position - shift) name a token:
    the answer's (offset 0) or another (offset 1)."""

    def __init__(self, dataset, shift: int, offset: int) -> None:
        super().__init__()
        self.attn = torch.nn.Linear(1, 1)
        self.attn.causal = True  # the flag `bidirectional` flips
        self.shift, self.offset, self.vocab = shift, offset, dataset.d_vocab
        self.answers = {tuple(e.prompt): tuple(e.answer) for e in dataset.prompts}

    def forward(self, toks, attention_mask=None, position_ids=None):
        assert not self.attn.causal, "masked decoding must run bidirectionally"
        out = torch.zeros(*toks.shape, self.vocab)
        for r, row in enumerate(toks.tolist()):
            k = next(p for p in range(len(row)) if tuple(row[:p]) in self.answers)
            for j, a in enumerate(self.answers[tuple(row[:k])]):
                out[r, k + j - self.shift, (a + self.offset) % self.vocab] = 1.0
        return out


def test_masked_exact_match_and_logprobs_score_a_perfect_reader(dataset):
    """A reader that names the answer at the mode's readout position scores 100% and a higher
    log-prob than a reader that names another token, which scores 0%: the score can say yes and
    no, and reads where the mode says."""
    prompts = dataset.select(subset="n2d", templates="train")[:16]
    right = exact_match(Oracle(dataset, 0, 0), dataset, prompts, mode=MASKED_DECODING)
    wrong = exact_match(Oracle(dataset, 0, 1), dataset, prompts, mode=MASKED_DECODING)
    misread = exact_match(Oracle(dataset, 1, 0), dataset, prompts, mode=MASKED_DECODING)
    assert right.all() and not wrong.any() and not misread.any(), (right, wrong, misread)
    answers = [e.answer for e in prompts]
    lp = [
        stepwise_logprobs(Oracle(dataset, 0, off), MASKED_DECODING, [e.prompt for e in prompts],
                          answers, prompt_suffixes(dataset, prompts))
        for off in (0, 1)
    ]  # fmt: skip
    assert (lp[0] > lp[1]).all(), lp


def test_infill_masks_one_entity_and_scores_a_perfect_reader(dataset):
    """infill_exact_match masks the first (reverse) or second (same) entity of each training
    document; a reader that fills masks from the document scores 1, a wrong one 0."""
    full = {}
    for d in dataset.train_docs:
        for span in (d.a_span, d.b_span):
            t = list(d.tokens)
            t[span[0] : span[1]] = [MASK] * (span[1] - span[0])
            full[tuple(t)] = d.tokens

    class Reader(torch.nn.Module):
        def __init__(self, offset: int) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(1, 1)
            self.attn.causal = True
            self.offset = offset

        def forward(self, toks, attention_mask=None, position_ids=None):
            assert not self.attn.causal
            out = torch.zeros(*toks.shape, dataset.d_vocab)
            for r, row in enumerate(toks.tolist()):
                orig = next(
                    v
                    for k, v in full.items()
                    if all(a == b or a == MASK for a, b in zip(k, row, strict=False))
                    and len(k) == len(row)
                )
                for t, tok in enumerate(row):
                    if tok == MASK:
                        out[r, t, (orig[t] + self.offset) % dataset.d_vocab] = 1.0
            return out

    docs = dataset.train_docs
    small = replace(dataset, train_docs=docs[:6])
    right = infill_exact_match(Reader(0), small, MASKED_DECODING)
    wrong = infill_exact_match(Reader(1), small, MASKED_DECODING)
    for s in right:
        for d in ("same", "reverse"):
            assert right[s][d]["rate"] == 1.0 and wrong[s][d]["rate"] == 0.0, (s, d, right, wrong)


def test_each_objective_is_evaluated_in_its_own_mode(tmp_path, tiny_config, dataset, model):
    """metrics.json names the mode; BICO gets causal decoding beside its own mode, MLM-U
    in-document infill and no causal decoding (its head reads the masked position), the causal
    baseline neither; every run says whether it learned its objective."""
    want = {
        "causal": ("causal decoding", False, False),
        "bico": ("bidirectional greedy decoding", True, True),
        "mlm_u": ("left-to-right masked decoding", False, True),
    }
    for objective, (mode, causal, infill) in want.items():
        cfg = replace(tiny_config, train=replace(tiny_config.train, objective=objective))
        out = tmp_path / objective
        out.mkdir()
        m = evaluate_run(out, model=model, dataset=dataset, config=cfg)
        assert m["mode"] == mode, (objective, m["mode"])
        assert ("causal" in m) == causal and ("infill" in m) == infill, (objective, sorted(m))
        saved = np.load(out / "eval_logprobs.npz")
        assert ("causal_exact_match" in saved) == causal, sorted(saved)
        assert m["learned"]["met"] is False, m["learned"]  # an untrained model learned nothing
        assert json.loads((out / "metrics.json").read_text())["mode"] == mode
    assert get_objective("mlm_u").mode == MASKED_DECODING and not get_objective("mlm_u").causal_head
    assert is_causal(model)


def test_report_lists_causal_decoding_beside_the_own_mode(tmp_path, fakes, quick_bootstrap):
    """A run whose eval_logprobs.npz holds causal-decoding hits beside its own mode gets a
    causal-decoding row in the report's exact-match table; a run without them shows '-'."""
    from interp.report import behaviour_section

    study = fakes.study(tmp_path, "tiny", objectives=["causal", "bico"], seeds=[0])
    for run in study.runs:
        fakes.evaluation(run)
    bico = study.runs[1].path
    a = dict(np.load(bico / "eval_logprobs.npz"))
    a["causal_exact_match"] = (a["direction"] == "reverse") & (a["subset"] == "n2d")
    np.savez(bico / "eval_logprobs.npz", **a)
    text = "\n".join(behaviour_section(study))
    rows = [ln for ln in text.splitlines() if "causal decoding |" in ln]
    assert rows, text
    n2d = next(ln for ln in rows if ln.startswith("| n2d reverse (train"))
    d2n = next(ln for ln in rows if ln.startswith("| d2n reverse (train"))
    assert n2d.split("|")[2].strip() == "-", n2d  # the causal run has no second row
    assert n2d.split("|")[3].strip().startswith("100.0%"), n2d
    assert d2n.split("|")[3].strip().startswith("0.0%"), d2n


def test_comparison_figure_shows_forward_beside_reverse_and_causal_decoding(tmp_path):
    """The comparison's first panel has trained-order bars beside reversed ones, and causal-
    decoding bars with BICO's value beside its own mode (nothing for the causal baseline)."""
    from matplotlib.container import BarContainer

    from interp.plots.comparison import plot_comparison

    def run(name, causal):
        d = tmp_path / name
        d.mkdir()
        em = {s: {"same": {"train": 0.97}, "reverse": {"train": 0.0}} for s in ("n2d", "d2n")}
        m = {"exact_match": em}
        if causal:
            m["causal"] = {"exact_match": {s: {"reverse": {"train": 0.6}} for s in ("n2d", "d2n")}}
        (d / "metrics.json").write_text(json.dumps(m))
        return d

    fig = plot_comparison({"causal": [run("c", False)], "bico": [run("b", True)]})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["n2d same", "d2n same"], labels
    assert "n2d reversed, causal decoding" in labels, labels
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = {c.get_label(): [p.get_height() for p in c] for c in bars}
    causal = heights["n2d reversed, causal decoding"]
    assert np.isnan(causal[0]) and causal[1] == pytest.approx(0.6), heights
    assert heights["n2d same"] == [pytest.approx(0.97)] * 2, heights
