"""Kitouni et al.'s key-value retrieval task (interp.data.retrieval), as published: unique tokens
per entity, every pair stored as "k k : v v", the queries of half the pairs trained, the other
half's queries held out for the test."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from interp.config import apply_overrides
from interp.errors import UserError
from interp.runs import build_dataset


@pytest.fixture(scope="module")
def retrieval_config(tiny_config):
    return apply_overrides(tiny_config, ["world.source=retrieval", "train.eval_every=0"])


@pytest.fixture(scope="module")
def ds(retrieval_config):
    return build_dataset(retrieval_config)


def test_every_entity_has_tokens_of_its_own(ds, retrieval_config):
    stored = [d for d in ds.train_docs if re.fullmatch(r"k\d{4}a", ds.text(d.tokens[1:2]))]
    n = 2 * retrieval_config.world.n_people_per_subset
    assert len(stored) == n, (len(stored), n)
    owners: Counter[int] = Counter()
    for d in stored:
        for span in (d.a_span, d.b_span):
            assert span[1] - span[0] == retrieval_config.world.title_length, span
            owners.update(d.tokens[span[0] : span[1]])
    assert max(owners.values()) == 1, "a token is shared between entities"


def test_queries_of_half_the_pairs_are_trained_and_the_others_held_out(ds, retrieval_config):
    texts = [ds.text(d.tokens) for d in ds.train_docs]
    for e in ds.prompts:
        prompt, answer = ds.text(e.prompt), ds.text(e.answer)
        want = "value of k" if e.direction == "same" else "key of v"
        assert prompt.startswith(want) and prompt.endswith(":"), prompt
        assert answer.startswith("v" if e.direction == "same" else "k"), answer
        asked = any(t.startswith(f"{prompt} {answer}") for t in texts)
        assert asked == (e.subset == "both"), (e.subset, prompt, answer)
    n = 2 * retrieval_config.world.n_people_per_subset  # two queries per pair
    assert Counter(e.subset for e in ds.prompts) == {"n2d": n, "both": n}


def test_entity_length_out_of_range_is_one_clear_error(retrieval_config):
    with pytest.raises(UserError, match="title_length"):
        apply_overrides(retrieval_config, ["world.title_length=0"])


def test_causal_model_answers_trained_queries_not_held_out_backward_ones(retrieval_config, ds):
    """Next-token training: the trained queries are learned, the held-out backward ones (a
    key asked from its value, stored only key first) are not: the reversal curse."""
    from interp.evaluate import evaluate
    from interp.model import build_model
    from interp.train import fit

    model = build_model(retrieval_config.model, ds.d_vocab, seed=0)
    fit(model, ds.train_docs, retrieval_config.train, progress=False)
    model.eval()
    em = evaluate(model, ds)[0]["exact_match"]
    assert em["both"]["same"]["train"] >= 0.9 and em["both"]["reverse"]["train"] >= 0.9, em
    assert em["n2d"]["reverse"]["train"] <= 0.05, em


def test_building_a_model_of_this_world_warns_of_nothing(retrieval_config, ds):
    """TransformerLens probes an attached tokenizer with "a", a word this world lacks: that
    probe must not reach the user as an unknown-word warning on every run."""
    import warnings

    from interp.model import build_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(retrieval_config.model, ds.d_vocab, seed=0, tokenizer=ds.tokenizer)
    assert not [str(w.message) for w in caught if "vocabulary" in str(w.message)], caught
