"""The synthetic world: determinism, disjoint subsets, spans that point at the entities."""

from __future__ import annotations

from collections import Counter

import pytest

from interp.config import WorldConfig, load_config
from interp.data.dataset import build_synthetic, entity_alone
from interp.data.world import SUBSETS, TEMPLATES, heldout_templates, make_world
from interp.errors import UserError


def test_world_is_deterministic_and_seeded():
    a, b = make_world(WorldConfig(seed=3)), make_world(WorldConfig(seed=3))
    c = make_world(WorldConfig(seed=4))
    assert a.people == b.people
    assert a.people != c.people


def test_subsets_disjoint_and_entities_unique():
    cfg = WorldConfig(n_people_per_subset=37, n_new_people=11)
    w = make_world(cfg)
    assert Counter(p.subset for p in w.people) == {"n2d": 37, "d2n": 37, "both": 37, "new": 11}
    assert len({p.name for p in w.people}) == len(w.people)
    assert len({p.description for p in w.people}) == len(w.people)
    assert all(len(p.name.split()) >= 2 and len(p.description.split()) >= 3 for p in w.people)


def test_heldout_templates_use_only_words_of_the_training_documents():
    """At every n_train_templates, every word of every held-out prompt occurs in some training
    document (checked on the documents' text, not on the template lists)."""
    for n_train in range(1, 9):
        n_heldout = min(
            4, len(heldout_templates("n2d", n_train)), len(heldout_templates("d2n", n_train))
        )
        cfg = WorldConfig(
            n_people_per_subset=6,
            n_new_people=2,
            n_train_templates=n_train,
            n_heldout_templates=n_heldout,
        )
        ds = build_synthetic(cfg)
        seen = {w for d in ds.train_docs for w in ds.text(d.tokens).split()}
        held = [e for e in ds.prompts if e.templates == "heldout"]
        assert len({(e.order, e.template) for e in held}) == 2 * n_heldout
        docs = {(d.person, d.order): [] for d in ds.train_docs}
        for d in ds.train_docs:
            docs[(d.person, d.order)].append(ds.text(d.tokens))
        for e in held:
            # not a training text cut short (its continuation there is another word)
            prompt = ds.text(e.prompt)
            cut = [t for t in docs.get((e.person, e.order), []) if t.startswith(prompt + " ")]
            assert not cut, f"held-out prompt {prompt!r} starts training text {cut[0]!r}"
            unseen = set(ds.text(e.tokens).split()) - seen
            assert not unseen, (
                f"n_train={n_train}: held-out prompt {ds.text(e.tokens)!r} uses {unseen}"
            )
        for o in ("n2d", "d2n"):
            w = ds.world
            assert w is not None
            assert not set(w.templates(o, "heldout")) & set(TEMPLATES[(o, "train")]), (n_train, o)
    # the study's worlds get what they ask for
    for preset in ("tiny", "default"):
        wc = load_config(preset).world
        assert len(make_world(wc).templates("n2d", "heldout")) == wc.n_heldout_templates


def test_too_many_heldout_templates_for_the_training_words_is_refused():
    with pytest.raises(UserError, match="n_heldout_templates=2 but only 1"):
        make_world(WorldConfig(n_train_templates=1, n_heldout_templates=2))


def test_spans_point_at_entities_and_prompts_end_before_answer():
    ds = build_synthetic(load_config("tiny").world)
    people = {p.id: p for p in ds.people}
    for e in ds.train_docs + ds.prompts:
        p = people[e.person]
        assert ds.text(e.tokens[slice(*e.a_span)]) == p.name
        assert ds.text(e.tokens[slice(*e.b_span)]) == p.description
        answer = p.description if e.order == "n2d" else p.name
        if e.kind == "prompt":
            assert ds.text(e.answer) == answer
    for p in ds.people[:5]:
        a, b = entity_alone(ds, p, "a"), entity_alone(ds, p, "b")
        assert ds.text(a.tokens[slice(*a.a_span)]) == p.name
        assert ds.text(b.tokens[slice(*b.b_span)]) == p.description


def test_prompt_directions_follow_training_order():
    ds = build_synthetic(load_config("tiny").world)
    for s in SUBSETS:
        same = {e.order for e in ds.select(subset=s, direction="same")}
        rev = {e.order for e in ds.select(subset=s, direction="reverse")}
        assert same == {"d2n" if s == "d2n" else "n2d"} and rev != same
        trained = {d.order for d in ds.train_docs if d.subset == s}
        assert trained == ({"n2d", "d2n"} if s == "both" else same)


def test_attributes_only_in_their_entity():
    w = make_world(WorldConfig())
    for p in w.people:
        role_word = p.description.split()[0]
        assert role_word not in p.name.split()
    # first-name class and role are drawn independently: every class meets several roles
    pairs = Counter((p.first_class, p.role) for p in w.people)
    assert len(pairs) > 0.8 * w.config.n_first_name_classes * w.config.n_roles
