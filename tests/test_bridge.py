"""The identity bridge recipe (interp.data.bridge): OCR and IDN identity documents added to the
synthetic world, never naming B, and the shortcut test that tells computing from echoing."""

from __future__ import annotations

import pytest

from interp.config import apply_overrides
from interp.errors import UserError
from interp.evaluate import bridge_metrics
from interp.runs import build_dataset


def _dataset(tiny_config, form):
    return build_dataset(apply_overrides(tiny_config, [f"world.bridge={form}"]))


def test_no_bridge_leaves_the_world_unchanged(tiny_config):
    plain, ocr = build_dataset(tiny_config), _dataset(tiny_config, "ocr")
    assert not plain.bridge_prompts
    assert [e.tokens for e in plain.prompts] == [e.tokens for e in ocr.prompts]
    assert [e.tokens for e in plain.train_docs] == [e.tokens for e in ocr.train_docs][
        : len(plain.train_docs)
    ]


@pytest.mark.parametrize("form", ["ocr", "idn"])
def test_identity_documents_lead_from_a_to_a_without_b(tiny_config, form):
    ds = _dataset(tiny_config, form)
    docs = [e for e in ds.train_docs if e.order == "bridge"]
    people = {p.id: p for p in ds.people}
    assert len(docs) == len({e.person for e in ds.train_docs if e.order != "bridge"}), len(docs)
    for e in docs:
        p, text = people[e.person], ds.text(e.tokens)
        assert text.count(p.name) == 2, text
        assert not set(p.title) & set(text.split()), f"{text!r} names B's title"
        assert ds.text(e.tokens[e.a_span[0] : e.a_span[1]]) == p.name
        if form == "ocr":
            assert text.startswith(f"the {p.description.split()[0]} of the work of"), text


def test_shortcut_prompts_ask_another_role(tiny_config):
    ds = _dataset(tiny_config, "ocr")
    people = {p.id: p for p in ds.people}
    short = [e for e in ds.bridge_prompts if e.templates == "shortcut"]
    assert len(short) == len([e for e in ds.bridge_prompts if e.templates == "train"]) > 0
    for e in short:
        role = ds.text(e.prompt).split()[1]
        assert role != people[e.person].description.split()[0], ds.text(e.prompt)
        assert ds.text(e.answer) == people[e.person].name


def test_bad_bridge_is_one_clear_error(tiny_config):
    with pytest.raises(UserError, match="world.bridge"):
        _dataset(tiny_config, "ocrr")


def test_trained_identity_is_answered(tiny_config):
    """A tiny causal run with OCR identities answers the identity as trained (the metric can
    say yes); the numbers are printed on failure."""
    from interp.model import build_model
    from interp.train import fit

    cfg = apply_overrides(tiny_config, ["world.bridge=ocr", "train.eval_every=0"])
    ds = build_dataset(cfg)
    model = build_model(cfg.model, ds.d_vocab, seed=0)
    fit(model, ds.train_docs, cfg.train, progress=False)
    model.eval()
    m = bridge_metrics(model, ds)
    assert m["train"]["echo"] >= 0.9, m
    assert 0.0 <= m["shortcut"]["echo"] <= 1.0 and m["shortcut"]["n"] == m["train"]["n"], m
