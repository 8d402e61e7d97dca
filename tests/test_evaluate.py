"""Exact-match scoring and per-run item draws: what counts as a right answer, and what seeds
the controls."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from interp.config import WorldConfig, load_config
from interp.data.dataset import FactDataset, build_synthetic
from interp.data.example import Example
from interp.data.tokenizer import BOS, encode, word_tokenizer
from interp.data.world import Person
from interp.evaluate import (
    ROLE_MATCHED_RULE,
    control_answers,
    evaluate,
    is_exact_match,
    match_rule,
    role_matched_answers,
)
from interp.presets import make_plan
from interp.stats import run_seed


def test_word_rule_rejects_a_last_name_that_extends_the_right_one():
    # the default world has last names `hawe` and `haweyu`: the character rule confuses them
    assert is_exact_match("nira haweyu .", "nira hawe", "prefix")
    assert not is_exact_match("nira haweyu .", "nira hawe", "word")
    assert is_exact_match(" Nira Hawe . <eos>", "nira hawe", "word")
    assert not is_exact_match("nira", "nira hawe", "word")
    with pytest.raises(ValueError):
        is_exact_match("a", "a", "fuzzy")


def test_match_rule_is_word_on_the_synthetic_world_and_prefix_on_the_paper_data():
    ds = build_synthetic(WorldConfig(n_people_per_subset=4, n_new_people=2))
    assert match_rule(ds) == "word"
    paper_like = FactDataset(
        tokenizer=Tokenizer.from_str(ds.tokenizer.to_str()), train_docs=[], prompts=[]
    )
    assert match_rule(paper_like) == "prefix"  # no `world`: the paper's character rule


def test_default_world_has_names_only_the_word_rule_tells_apart():
    """The reason for the word rule, measured: some last name is a prefix of another."""
    from interp.data.world import make_world

    w = make_world(load_config("default").world)
    pairs = [(a, b) for a in w.last_names for b in w.last_names if a != b and b.startswith(a)]
    assert pairs, "no prefix-sharing last names in the default world"
    a, b = pairs[0]
    assert is_exact_match(f"x {b}", f"x {a}", "prefix") and not is_exact_match(
        f"x {b}", f"x {a}", "word"
    )


def test_study_runs_differ_in_world_and_item_seed():
    plan = make_plan("tiny", objectives=["causal"], seeds=[0, 1, 2], instruments=["probing"])
    cfgs = [r.config for r in plan.runs()]
    assert [c.world.seed for c in cfgs] == [0, 1, 2] == [c.train.seed for c in cfgs]
    seeds = {run_seed(c) for c in cfgs}
    assert len(seeds) == 3, seeds
    # an explicit world.seed override shares one world again (a deliberate choice)
    shared = make_plan("tiny", overrides=["world.seed=7"], objectives=["causal"], seeds=[0, 1])
    assert {c.world.seed for c in (r.config for r in shared.runs())} == {7}
    # objectives on one (world, seed) pair draw the same items: they stay paired
    both = make_plan("tiny", objectives=["causal", "bico"], seeds=[0], instruments=["probing"])
    assert len({run_seed(c) for c in (r.config for r in both.runs())}) == 1
    assert run_seed(cfgs[0], 1) != run_seed(cfgs[1], 0)


def test_control_draws_follow_the_seed():
    ds = build_synthetic(load_config("tiny").world)
    rev = ds.select(direction="reverse")
    a, b = control_answers(ds, rev, seed=1), control_answers(ds, rev, seed=2)
    assert a == control_answers(ds, rev, seed=1)
    same = sum(x == y for x, y in zip(a, b, strict=True))
    assert same < 0.6 * len(a), f"{same}/{len(a)} controls identical under different seeds"


# ---------------------------------------------------------------------------------------------
# The role-matched control (interp.evaluate.role_matched_answers)


def _hand_made(roles: list[int], classes: list[int]) -> FactDataset:
    """People 0..n-1 in `n2d` and n..2n-1 in `d2n` (roles and first-name classes as given, the
    same for both subsets), each asked reversed on 2 templates: prompt "<bos> q<t> p<i>", answer
    "a<i>" (one token, unique to the person)."""
    n = len(roles)
    words = [f"q{t}" for t in range(2)] + [f"{c}{i}" for c in "pa" for i in range(2 * n)]
    tok = word_tokenizer(words)
    people, prompts = [], []
    for i in range(2 * n):
        subset = "n2d" if i < n else "d2n"
        people.append(Person(i, subset, f"f{i}", "l", roles[i % n], ("t",), classes[i % n]))
        for t in range(2):
            ids = (BOS, *encode(tok, f"q{t} p{i} a{i}"))
            prompts.append(
                Example(ids, len(ids) - 1, (2, 3), (-1, -1), i, subset, "prompt", "d2n",
                        "reverse", "train", t)
            )  # fmt: skip
    return FactDataset(tokenizer=tok, train_docs=[], prompts=prompts, people=people)


def _reference_random_controls(ds: FactDataset, seed: int) -> list[tuple[int, ...]]:
    """The random same-subset control by its documented rule, written out: one generator
    seeded with the run seed, one draw per prompt in order, among the other people's answers
    on the same subset, direction, template kind and template."""
    rng = random.Random(seed)
    out = []
    for e in ds.prompts:
        key = (e.subset, e.direction, e.templates, e.template)
        pool = [
            o.answer
            for o in ds.prompts
            if (o.subset, o.direction, o.templates, o.template) == key
            and o.person != e.person
            and o.answer != e.answer
        ]
        out.append(rng.choice(pool))
    return out


def test_role_matched_control_is_same_role_and_the_random_control_is_unchanged():
    """Every role-matched control answer belongs to another person of the same subset and role
    (on D2N also the same first-name class); a person with no such other gets none; and the
    random control draws exactly what its rule drew before the role-matched column existed."""
    roles = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3]  # role 3: one person, no same-role other
    classes = [0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0]
    ds = _hand_made(roles, classes)
    owner = {e.answer: e.person for e in ds.prompts}
    people = {p.id: p for p in ds.people}
    for seed in (0, 1, 7):
        got = role_matched_answers(ds, ds.prompts, seed=seed)
        assert got is not None
        for e, a in zip(ds.prompts, got, strict=True):
            p = people[e.person]
            same = [
                q
                for q in ds.people
                if q.id != p.id and q.subset == p.subset and q.role == p.role
                and (p.subset != "d2n" or q.first_class == p.first_class)
            ]  # fmt: skip
            if not same:
                assert a is None, (e.person, a)
                continue
            assert a is not None and owner[a] != e.person, (e.person, a)
            q = people[owner[a]]
            assert q.subset == p.subset and q.role == p.role, (p, q)
            if p.subset == "d2n":
                assert q.first_class == p.first_class, (p, q)
        old = control_answers(ds, ds.prompts, seed=seed)
        assert old == _reference_random_controls(ds, seed), seed
    # the random control's draws are the same whether or not the role-matched one is drawn
    assert control_answers(ds, ds.prompts, seed=3) == _reference_random_controls(ds, 3)
    # the role-matched draws follow the seed, and differ from the random control's
    a, b = role_matched_answers(ds, ds.prompts, 1), role_matched_answers(ds, ds.prompts, 2)
    assert a == role_matched_answers(ds, ds.prompts, 1) and a != b
    # a world whose people carry no role (the retrieval world, the paper's data): no column
    bare = FactDataset(tokenizer=ds.tokenizer, train_docs=[], prompts=ds.prompts)
    assert role_matched_answers(bare, bare.prompts, 0) is None


class _Knows(torch.nn.Module):
    """A stand-in model that knows every fact: after the token "p<i>" it puts +`margin` logits
    on "a<i>" (the person's own answer), 0 on every other token."""

    def __init__(self, tok, n: int, margin: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(margin))
        self.map = {tok.token_to_id(f"p{i}"): tok.token_to_id(f"a{i}") for i in range(n)}
        self.d_vocab = tok.get_vocab_size(with_added_tokens=True)

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, self.d_vocab)
        for p, a in self.map.items():
            logits[..., a] += self.scale * (tokens == p)
        return logits


def test_role_matched_test_can_fail_the_null():
    """The instrument can say yes: a model that knows each answer (correct +3 logits above every
    other token, same-role answers included) gives a positive role-matched difference of about
    3 nats, significant, in both subsets; the random control's column is beside it."""
    roles, classes = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2], [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    ds = _hand_made(roles, classes)
    metrics, arrays = evaluate(_Knows(ds.tokenizer, 2 * len(roles), 3.0), ds, seed=5)
    for s in ("n2d", "d2n"):
        m = metrics["logprob_test_role_matched"][s]["reverse"]["train"]
        r = metrics["logprob_test"][s]["reverse"]["train"]
        assert m["mean_diff"] == pytest.approx(3.0, abs=1e-4) and m["n"] >= 6, (s, m)
        assert r["mean_diff"] == pytest.approx(3.0, abs=1e-4), (s, r)
    assert np.isfinite(arrays["role_matched_logprob"][: 2 * len(roles)]).all()
    assert metrics["role_matched_rule"] == ROLE_MATCHED_RULE
    # a model that knows nothing: no difference against either control
    metrics, _ = evaluate(_Knows(ds.tokenizer, 2 * len(roles), 0.0), ds, seed=5)
    m = metrics["logprob_test_role_matched"]["n2d"]["reverse"]["train"]
    assert m["mean_diff"] == pytest.approx(0.0, abs=1e-5), m
