"""The biography world (interp.data.biography): spans, augmentation options, mixed training."""

from __future__ import annotations

import pytest

from interp.config import load_config
from interp.data.biography import ATTRIBUTES, BIO_TEMPLATES, PRONOUN
from interp.data.biography_dataset import build_biography
from interp.data.world import ROLES
from interp.errors import UserError

BASE = ["world.source=biography", "world.n_people_per_subset=12", "model.n_ctx=48"]


def dataset(*overrides: str):  # type: ignore[no-untyped-def]
    return build_biography(load_config("tiny", overrides=[*BASE, *overrides]).world)


def value_text(ds, person, label: str) -> str:  # type: ignore[no-untyped-def]
    if label == "name":
        return person.name
    if label == "role":
        return ROLES[person.role]
    return person.value(ds.world, label)


@pytest.mark.parametrize("opts", [(), ("world.bio_multiplicity=3", "world.bio_permute=1")])
def test_spans_are_correct_for_every_attribute(opts: tuple[str, ...]) -> None:
    ds = dataset("world.bio_fullname=1", *opts)
    people = {p.id: p for p in ds.people}
    checked: dict[str, int] = {}
    for e in [*ds.train_docs, *ds.prompts]:
        for label, s, t in e.spans:
            got = ds.text(e.tokens[s:t])
            want = value_text(ds, people[e.person], label)
            assert got == want, f"span {label} of {ds.text(e.tokens)!r} reads {got!r}, not {want!r}"
            checked[label] = checked.get(label, 0) + 1
        if e.kind == "prompt":  # the answer is the last span
            assert e.spans[-1][1] == e.prompt_len and e.spans[-1][2] == len(e.tokens)
    assert set(checked) == {"name", "work", "city", "year", "employer", "role"}, checked
    docs = [e for e in ds.train_docs if e.order == "bio"]
    for e in docs:  # every biography holds each attribute once
        assert sorted(label for label, _, _ in e.spans if label != "name") == sorted(ATTRIBUTES)


def test_multiplicity_gives_distinct_biographies() -> None:
    one, three = dataset(), dataset("world.bio_multiplicity=3")
    for ds, m in ((one, 1), (three, 3)):
        for p in ds.people:
            texts = [
                ds.text(e.tokens) for e in ds.train_docs if e.person == p.id and e.order == "bio"
            ]
            assert len(texts) == m and len(set(texts)) == m, (p.id, texts)
    # the first biography is the same: an option adds biographies, it does not redraw the first
    first = {e.person: e.tokens for e in three.train_docs if e.order == "bio" and e.template == 0}
    assert all(first[e.person] == e.tokens for e in one.train_docs if e.order == "bio")


def _sentence_order(ds, e) -> list[str]:  # type: ignore[no-untyped-def]
    return [label for label, _, _ in sorted(e.spans, key=lambda s: s[1]) if label != "name"]


def test_permute_changes_only_the_sentence_order() -> None:
    fixed, perm = (
        dataset("world.bio_multiplicity=4"),
        dataset("world.bio_multiplicity=4", "world.bio_permute=1"),
    )
    orders_fixed = {tuple(_sentence_order(fixed, e)) for e in fixed.train_docs if e.order == "bio"}
    orders_perm = {tuple(_sentence_order(perm, e)) for e in perm.train_docs if e.order == "bio"}
    assert orders_fixed == {ATTRIBUTES}, orders_fixed
    assert len(orders_perm) > 5, f"permuted biographies use only {len(orders_perm)} orders"
    # the same sentences, reordered: the multiset of words of each biography is unchanged
    a = [sorted(fixed.text(e.tokens).split()) for e in fixed.train_docs if e.order == "bio"]
    b = [sorted(perm.text(e.tokens).split()) for e in perm.train_docs if e.order == "bio"]
    assert a == b


def test_fullname_repeats_the_name_in_every_sentence() -> None:
    plain, full = dataset(), dataset("world.bio_fullname=1")
    n = len(ATTRIBUTES)
    for e in (e for e in plain.train_docs if e.order == "bio"):
        assert sum(label == "name" for label, _, _ in e.spans) == 1
        assert plain.text(e.tokens).split().count(PRONOUN) == n - 1
    for e in (e for e in full.train_docs if e.order == "bio"):
        assert sum(label == "name" for label, _, _ in e.spans) == n
        assert PRONOUN not in full.text(e.tokens).split()


def test_mixed_training_questions_half_the_people() -> None:
    ds = dataset()
    subset = {p.id: p.subset for p in ds.people}
    qa_docs = [e for e in ds.train_docs if e.order != "bio"]
    assert qa_docs and {subset[e.person] for e in qa_docs} == {"qa_train"}
    assert {e.subset for e in ds.prompts} == {"qa_train", "qa_test"}
    # forward questions ask each label from the name; the inverse asks the name from the work
    inv = [e for e in ds.prompts if e.direction == "reverse"]
    assert len(inv) == len(ds.people) and all(e.spans[-1][0] == "name" for e in inv)
    assert all(e.prompt_len == e.b_span[1] + 1 for e in inv)  # "who is the <work> ? <name>"


def test_same_config_same_world_and_templates_from_their_pools() -> None:
    a, b = dataset("world.bio_multiplicity=2"), dataset("world.bio_multiplicity=2")
    assert [e.tokens for e in a.train_docs] == [e.tokens for e in b.train_docs]
    assert all(len(v) == len(BIO_TEMPLATES["work"]) for v in BIO_TEMPLATES.values())


def test_bad_biography_options_are_refused() -> None:
    for bad in ("world.bio_multiplicity=0", "world.bio_permute=2", "world.n_attribute_values=1"):
        with pytest.raises(UserError, match=bad.split("=")[0]):
            load_config("tiny", overrides=[*BASE, bad])
