"""The presets: one registry of frozen declarations, every preset's plan valid before anything
runs, instruments opt-in and refused on a world they cannot read, overrides in a stated order,
and the run directories of a preset with axes named as before (so their cache is reused)."""

from __future__ import annotations

import dataclasses

import pytest

from interp.analysis import INSTRUMENTS
from interp.analysis.probing import ProbingOptions
from interp.errors import UserError
from interp.plan import Axis, Plan, Use
from interp.presets import PRESETS, get_preset, make_plan


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_plans_valid_runs_with_unique_names(name):
    plan = make_plan(name)
    runs = plan.runs()
    names = [r.name for r in runs]
    assert runs and len(set(names)) == len(names), names
    for r in runs:
        assert set(r.options) <= set(plan.instruments), r.options
        for i in r.options:
            assert r.config.world.source in INSTRUMENTS[i].sources, (name, i, r.config.world)
    assert get_preset(name).help, f"{name} has no one-line help"


def test_instruments_are_opt_in_and_scoped():
    plan = make_plan("default")
    by = {(r.config.train.objective, r.config.train.seed): set(r.options) for r in plan.runs()}
    assert by[("causal", 0)] == {"lens", "patching", "probing", "update", "dynamics", "selective"}
    assert by[("causal", 1)] == by[("causal", 0)] - {"dynamics"}
    assert by[("reverse_token", 2)] == {"probing", "update"}, by
    retrieval = make_plan("retrieval").runs()
    assert all(set(r.options) == {"qk"} for r in retrieval), "retrieval: behaviour and QK only"


def test_an_instrument_on_a_world_it_cannot_read_is_refused_before_anything_runs():
    with pytest.raises(UserError, match="reads the synthetic or paper world"):
        make_plan("retrieval", instruments=["probing"])
    with pytest.raises(UserError, match="unknown instrument"):
        make_plan("default", instruments=["telepathy"])
    with pytest.raises(UserError, match="unknown study preset"):
        make_plan("nope")


def test_overrides_apply_in_order_preset_axis_objective_command_line():
    plan = make_plan("storage_scale", overrides=["train.steps=7"])
    assert {r.config.train.steps for r in plan.runs()} == {7}, "--set must win over the axis"
    scaled = {r.labels["scale"]: r.config for r in make_plan("storage_scale").runs()}
    assert scaled["d64_s4000"].train.checkpoint_every == 1000  # the axis wins over the preset
    assert scaled["d256_s800"].model.d_model == 256
    configs = {r.config.train.objective: r.config for r in make_plan("retrieval").runs()}
    trains = {o: c.train for o, c in configs.items()}
    assert configs["mlm_u"].model.query_layers == 2, "MLM-U trains on the encoder-decoder"
    assert configs["causal"].model.query_layers == 0, configs["causal"].model
    assert trains["mlm_u"].steps == trains["causal"].steps == 10_000, trains
    wd = make_plan("retrieval", overrides=["train.weight_decay=0.05"]).runs()
    assert {r.config.train.weight_decay for r in wd} == {0.05}, "--set wins over the objective"
    bridge = make_plan("bridge", overrides=["world.bridge=idn"])
    assert {r.config.world.bridge for r in bridge.runs()} == {"idn"}, "--set wins over the axis"
    by = {(r.labels["size"], r.labels["condition"]): r.config for r in make_plan("bridge").runs()}
    assert by[("d128", "ocr")].model.d_model == 128 and by[("d64", "idn")].world.bridge == "idn"


def test_axis_labels_prefix_run_names_and_group_replicates():
    runs = make_plan("storage").runs()
    names = sorted(r.name.rsplit("_", 1)[0] for r in runs)
    assert names[0] == "augmented_causal_s0", names
    assert {r.group for r in runs} == {
        f"{lvl}/{o}"
        for lvl in ("plain", "augmented")
        for o in ("causal", "reverse_entity", "mlm_u_hybrid")
    }
    assert {r.group for r in make_plan("default").runs()} == {
        "causal",
        "reverse_entity",
        "reverse_token",
    }


def test_a_plan_of_a_new_preset_needs_no_other_file():
    """A preset is a value: a new one plans, scopes and names its runs with nothing registered
    elsewhere (the registry picks up a module of interp/presets by itself)."""
    p = dataclasses.replace(
        get_preset("tiny"),
        name="mine",
        instruments={"probing": Use(ProbingOptions(folds=2), on=("causal",))},
        axes=(
            Axis("wd", (("wd0", ("train.weight_decay=0",)), ("wd1", ("train.weight_decay=0.1",)))),
        ),
    )
    plan = Plan(p, ("causal", "reverse_entity"), (0,), p.instruments)
    runs = plan.runs()
    assert [r.name.split("_s0_")[0] for r in runs] == [
        "wd0_causal", "wd0_reverse_entity", "wd1_causal", "wd1_reverse_entity"
    ]  # fmt: skip
    assert [r.options for r in runs][1] == {} and runs[0].options["probing"].folds == 2
