"""The study presets of issue 15: the identity-bridge presets train the causal baseline with
the bridge documents in the default study's worlds and seeds, and run only the comparative
instruments; the objectives preset trains every objective to matched forward accuracy."""

from __future__ import annotations

import pytest

from interp.study import make_plan


@pytest.mark.parametrize("form", ["ocr", "idn"])
def test_bridge_presets_train_the_baseline_with_the_bridge(form):
    plan = make_plan(f"bridge_{form}")
    cfgs = plan.configs()
    assert [c.world.bridge for c in cfgs] == [form] * 3, [c.world.bridge for c in cfgs]
    assert {c.train.objective for c in cfgs} == {"causal"}
    assert [c.world.seed for c in cfgs] == [c.train.seed for c in cfgs] == [0, 1, 2]
    assert plan.instruments_for("causal", 0) == ("probing", "update"), plan.instruments_for(
        "causal"
    )
    base = make_plan("default").configs()[0]
    assert cfgs[0].model == base.model and cfgs[0].train == base.train, "not the default baseline"


def test_cli_overrides_still_win_over_a_preset(tmp_path):
    plan = make_plan("bridge_ocr", overrides=["world.bridge=idn"])
    assert {c.world.bridge for c in plan.configs()} == {"idn"}


def test_retrieval_preset_trains_the_retrieval_world_behaviour_only():
    plan = make_plan("retrieval")
    cfgs = plan.configs()
    assert {c.world.source for c in cfgs} == {"retrieval"}
    assert {c.train.objective for c in cfgs} == {"causal", "reverse_token", "bico", "mlm_u"}
    assert all(plan.instruments_for(o, 0) == () for o in plan.objectives), plan.scope


def test_objectives_preset_has_every_objective_with_matched_budgets():
    from interp.study import MATCHED_STEPS, OBJECTIVE_ORDER

    plan = make_plan("objectives")
    steps = {c.train.objective: c.train.steps for c in plan.configs()}
    assert set(steps) == set(OBJECTIVE_ORDER), steps
    assert "reverse_token" in steps and "reverse_entity" in steps
    base = make_plan("default").configs()[0].train.steps
    for o, n in steps.items():
        assert n == MATCHED_STEPS.get(o, base), (o, n)
    assert plan.instruments_for("mlm_u", 0) == ("probing", "update")
