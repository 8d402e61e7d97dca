"""Exact-match scoring and per-run item draws: what counts as a right answer, and what seeds
the controls."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from interp.config import WorldConfig, load_config
from interp.data.dataset import FactDataset, build_synthetic
from interp.evaluate import control_answers, is_exact_match, match_rule
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
