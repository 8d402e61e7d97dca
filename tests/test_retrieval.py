"""The key-value retrieval world (interp.data.retrieval, Kitouni et al. 2024's task): random
keys and values in the fact world's three subsets, asked forward and backward."""

from __future__ import annotations

import pytest

from interp.config import apply_overrides
from interp.errors import UserError
from interp.runs import build_dataset


@pytest.fixture(scope="module")
def retrieval_config(tiny_config):
    return apply_overrides(tiny_config, ["world.source=retrieval", "train.eval_every=0"])


def test_pairs_are_distinct_and_asked_both_ways(retrieval_config):
    ds = build_dataset(retrieval_config)
    keys = {ds.text(e.tokens[e.a_span[0] : e.a_span[1]]) for e in ds.train_docs}
    values = {ds.text(e.tokens[e.b_span[0] : e.b_span[1]]) for e in ds.train_docs}
    n = 3 * retrieval_config.world.n_people_per_subset
    assert len(keys) == len(values) == n, (len(keys), len(values), n)
    assert all(k.startswith("k") for k in keys) and all(v.startswith("v") for v in values)
    for e in ds.select(subset="n2d", direction="reverse"):
        prompt, answer = ds.text(e.prompt), ds.text(e.answer)
        assert prompt.startswith("v") and prompt.endswith("=") and answer.startswith("k"), prompt
        assert not any(d.person == e.person and d.order == "d2n" for d in ds.train_docs)


def test_too_few_keys_is_one_clear_error(retrieval_config):
    with pytest.raises(UserError, match="n_title_words"):
        apply_overrides(retrieval_config, ["world.n_title_words=2", "world.title_length=1"])


def test_causal_model_retrieves_forward_not_backward(retrieval_config):
    """Next-token training on the retrieval world: forward retrieval learned, backward (n2d
    pairs, never seen value first) not: the reversal curse on random tokens."""
    from interp.evaluate import evaluate
    from interp.model import build_model
    from interp.train import fit

    ds = build_dataset(retrieval_config)
    model = build_model(retrieval_config.model, ds.d_vocab, seed=0)
    fit(model, ds.train_docs, retrieval_config.train, progress=False)
    model.eval()
    em = evaluate(model, ds)[0]["exact_match"]
    assert em["n2d"]["same"]["train"] >= 0.9, em
    assert em["n2d"]["reverse"]["train"] <= 0.1, em
