"""Storage probes (interp.analysis.storage): controls that can fail, and the instrument end to end
on a tiny biography-world run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.analysis import storage
from interp.analysis.linear_probe import majority_rate
from interp.analysis.storage import (
    StorageOptions,
    control_task_labels,
    permutation_null,
    run_probe,
)
from interp.errors import UserError

N, D, K = 120, 16, 4


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows with a label written along one direction, plus noise; token types independent of it."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % K
    x = rng.normal(size=(N, D))
    x[:, :K] += 4.0 * np.eye(K)[y]  # the planted linear feature
    types = rng.integers(5, 5 + 40, size=N)  # unrelated to x: nothing to memorise
    return x, y, types, np.arange(N)


def test_control_task_labels_depend_only_on_the_token_type() -> None:
    types = np.array([7, 3, 7, 9, 3, 3, 12, 7])
    labels = control_task_labels(types, n_classes=5, seed=1)
    for t in np.unique(types):
        assert len(set(labels[types == t].tolist())) == 1, (t, labels)
    assert labels.min() >= 0 and labels.max() < 5
    # one label per type, whatever the row order or the other rows
    perm = np.array([3, 0, 6, 1, 7, 2, 5, 4])
    assert (control_task_labels(types[perm], 5, seed=1) == labels[perm]).all()
    many = control_task_labels(np.arange(200), 5, seed=1)
    assert len(set(many.tolist())) == 5, "labels of different types should vary"


def test_permutation_null_is_above_chance_and_below_a_planted_signal() -> None:
    x, y, _, people = planted()
    feats = np.stack([x])  # one layer
    null = permutation_null(feats, y, people, folds=5, C=1.0, n_perm=100, seed=3)
    p95 = float(np.quantile(null, 0.95))
    real = run_probe(torch.tensor(feats), y, np.arange(N), people, K,
                     StorageOptions(permutations=0), seed=3).accuracy.max()  # fmt: skip
    chance = majority_rate(y)
    assert chance < p95 < real, f"chance {chance:.3f}, null p95 {p95:.3f}, planted {real:.3f}"
    assert p95 < chance + 0.2, f"null p95 {p95:.3f} far above chance {chance:.3f}"


def test_probe_finds_a_planted_feature_and_the_control_task_does_not() -> None:
    x, y, types, people = planted()
    res = run_probe(torch.tensor(x[None]), y, types, people, K, StorageOptions(permutations=0), 0)
    acc, ctrl = float(res.accuracy.max()), float(res.control.max())
    assert acc > 0.9, f"planted feature found at {acc:.3f} only"
    assert ctrl < majority_rate(y) + 0.15, f"control task {ctrl:.3f} with nothing to memorise"
    # and a control task *can* succeed: token types written into the features are memorised
    x2 = np.concatenate([x, np.eye(45)[types]], axis=1)
    res2 = run_probe(torch.tensor(x2[None]), y, types, people, K, StorageOptions(permutations=0), 0)
    assert float(res2.control.max()) > 0.5, f"memorisable control only {res2.control.max():.3f}"


def test_nested_cv_chooses_C_from_the_grid_per_outer_fold() -> None:
    x, y, _, people = planted()
    opts = StorageOptions(Cs=(1e-4, 1.0), permutations=0)
    correct, chosen = storage.nested_cv_correct(x, y, people, opts, seed=0)
    assert len(chosen) == opts.folds and set(chosen) <= set(opts.Cs), chosen
    assert correct.mean() > 0.9, correct.mean()


@pytest.fixture(scope="module")
def bio_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from interp.config import load_config
    from interp.train import train_run

    cfg = load_config(
        "tiny",
        overrides=[
            "world.source=biography",
            "world.n_people_per_subset=8",
            "world.bio_multiplicity=2",
            "model.n_ctx=40",
            "train.steps=60",
        ],
    )
    out = tmp_path_factory.mktemp("bio") / "run"
    train_run(cfg, out, progress=False)
    return out


def test_storage_instrument_end_to_end(bio_run: Path) -> None:
    from interp.analysis import read_result
    from interp.runs import load_run

    run = load_run(bio_run)
    opts = StorageOptions(folds=2, inner_folds=2, Cs=(1.0,), permutations=3)
    res = storage.run_analysis(run, opts, progress=False)
    back = read_result(bio_run, "storage")
    assert dict(back.summary) == json.loads(json.dumps(res["summary"]))
    sm = res.summary
    for d in storage.StorageSummary.headlines():
        assert d.key in sm, d.key
    assert sm.q_mean.best == sm["q_mean_best"] and sm.extract_inverse.qa_test is not None
    n_layers = run.config.model.n_layers
    assert len(res["probes"]["q_role"]["accuracy"]) == n_layers + 1
    assert len(res["probes"]["q_role"]["null"]) == 3
    assert res["extraction"]["inverse"]["qa_test"][4] == 8  # every qa_test person asked once
    assert "q_role" in storage.format_summary(res)
    q = res["probes"]["q_role"]  # each person's correctness at the best layer, kept
    assert len(q["correct_best"]) == res["n_people"]
    assert sum(q["correct_best"]) == round(sm["q_role_best"] * res["n_people"]), q["correct_best"]
    again = storage.run_analysis(run, opts, write=False, progress=False)
    assert again.summary == res.summary, "same run, same options: the same numbers"


def test_q_probe_interval_counts_people_not_person_attribute_pairs() -> None:
    """Four attributes read right or wrong together (the same people every time) are one item
    per person: the interval is as wide as 50 people allow, not 200 independent pairs."""
    from interp.data.biography import LABELS
    from interp.findings.storage import cell_findings

    def result(hits: list[int], keep: bool) -> dict:
        probe = {"correct_best": hits} if keep else {}
        summary = {f"q_{lab}_{k}": v for lab in LABELS
                   for k, v in (("best", sum(hits) / len(hits)), ("null95", 0.3), ("p", 0.5),
                                ("control_best", 0.2))}  # fmt: skip
        summary |= {f"chance_q_{lab}": 0.25 for lab in LABELS} | {
            "q_mean_null95": 0.3, "q_mean_control_best": 0.2, "chance_q_mean": 0.25,
            "rq_first_class_best": 0.3, "rq_first_class_null95": 0.3, "rq_first_class_p": 0.5,
            "chance_rq_first_class": 0.25, "pos_role_from_work_best": 0.9,
            "pos_first_class_from_name_best": 0.5}  # fmt: skip
        ext = {q: {s: [0.5, 0.4, 0.6, 25, 50] for s in ("qa_test", "qa_train")}
               for q in (*LABELS, "inverse")}  # fmt: skip
        return {"n_people": 50, "summary": summary, "extraction": ext,
                "probes": {f"q_{lab}": probe for lab in LABELS}}  # fmt: skip

    runs = [[1] * k + [0] * (50 - k) for k in (20, 25, 30)]
    by_person = cell_findings([result(h, True) for h in runs])["q_probe"]
    by_pair = cell_findings([result(h, False) for h in runs])["q_probe"]
    assert by_person["n_items"] == 150 and by_pair["n_items"] == 600, (by_person, by_pair)
    assert by_person["estimate"] == by_pair["estimate"]
    width = {k: n["high"] - n["low"] for k, n in (("person", by_person), ("pair", by_pair))}
    assert width["person"] > width["pair"], width


def test_storage_command_writes_its_probes_and_probing_refuses_the_biography_world(
    bio_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from interp.cli import main

    argv = ["storage", str(bio_run), "--folds", "2", "--inner-folds", "2", "--Cs", "1",
            "--permutations", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((bio_run / "analysis" / "storage.json").read_text())
    assert saved["options"]["folds"] == 2 and "q_role" in saved["probes"]
    capsys.readouterr()
    assert main(["probe", str(bio_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use `interp behaviour` or `interp storage`" in err, err
    assert not (bio_run / "analysis" / "probing.json").exists()


def test_storage_refuses_an_a_is_b_run_in_one_line(tmp_path: Path) -> None:
    from interp.config import load_config
    from interp.data.dataset import build_synthetic

    ds = build_synthetic(load_config("tiny").world)
    with pytest.raises(UserError, match="world.source=biography"):
        storage.check_dataset(ds, StorageOptions())


def test_batched_probes_equal_one_probe_each() -> None:
    from interp.analysis.linear_probe import fit_probe, fit_probe_batch

    x, y, _, _ = planted()
    rng = np.random.default_rng(5)
    Y = np.stack([y, rng.permutation(y), rng.permutation(y)])
    batch = fit_probe_batch(x[:90], Y[:, :90], x[90:], C=0.5)
    single = np.stack([fit_probe(x[:90], row[:90], x[90:], C=0.5) for row in Y])
    assert (batch == single).mean() > 0.97, (
        f"batched and single probes agree on {(batch == single).mean():.2f}"
    )


def test_storage_study_runs_end_to_end_and_writes_figure_and_report(
    tmp_path: Path, quick_bootstrap
) -> None:
    from interp.cli import main

    out = tmp_path / "st"
    assert main(["study", "--preset", "storage_tiny", "--out", str(out), "--device", "cpu"]) == 0
    rep = out / "storage_tiny"  # the preset's report, figures and findings
    report = (rep / "report.md").read_text()
    assert "| plain/causal | augmented/causal |" in report, report  # the groups of runs
    assert "`q_mean_best`" in report and "## storage" in report, report
    for name in ("storage", "storage_pprobe"):
        assert (rep / "figures" / f"{name}.png").is_file()
    runs = sorted((out / "runs").iterdir())
    assert [r.name.split("_")[0] for r in runs] == ["augmented", "plain"]
    assert all((r / "analysis" / "storage.json").is_file() for r in runs)
    f = json.loads((rep / "findings.json").read_text())
    assert set(f["cells"]) == {"plain", "augmented"} and f["timing"]["wall_seconds"] > 0
    for cell in (f["cells"]["plain"]["causal"], f["cells"]["augmented"]["causal"]):
        for key in ("q_probe", "reverse_q", "extract_forward_unseen", "extract_inverse_unseen"):
            node = cell[key]
            assert 0 <= node["low"] <= node["estimate"] <= node["high"] <= 1, (key, node)
    from interp.presets import get_preset

    cells = get_preset("storage").tables["storage"]({"storage_tiny": f}, "storage_tiny")
    assert "| plain (x1) | causal | 1 x 8 |" in cells, cells  # the unseen half
    # the same runs as a scale ladder: one row each, the targets judged from the numbers
    import dataclasses

    from interp.findings.collect import Study
    from interp.findings.storage import collect_storage
    from interp.plan import Axis
    from interp.presets import make_plan

    plan = make_plan("storage_tiny")
    scaled = Study.of(plan, out)
    levels = Axis("level", (("", ()),))  # the runs' own names stay (their labels are ignored)
    for r in scaled.runs:
        r.spec.labels["scale"] = r.spec.labels.pop("level")
    scaled.plan = dataclasses.replace(
        plan, preset=dataclasses.replace(plan.preset, axes=(levels, *plan.preset.axes))
    )
    g = collect_storage(scaled)
    assert [r["scale"] for r in g["scale"]] == ["plain", "augmented"] and not g["cells"], g
    table = get_preset("storage").tables["storage_scale"]({"storage_scale": g}, "storage_scale")
    rows = [ln for ln in table.splitlines() if ln.startswith(("| plain |", "| augmented |"))]
    assert len(rows) == 2 and all(ln.endswith("| no |") for ln in rows), rows


def test_memorisation_floor_is_the_loss_of_a_model_that_knows_the_corpus() -> None:
    import math

    from interp.findings.storage import memorisation_floor

    assert memorisation_floor([(1, 2, 3)]) == 0.0  # one document: every token is certain
    # two documents sharing a prefix: only the diverging token costs log 2 (of 4 predictions)
    assert math.isclose(memorisation_floor([(1, 2, 3), (1, 2, 4)]), math.log(2) / 2)
    # the first token after <bos> of three distinct documents costs log 3, the rest nothing
    assert math.isclose(memorisation_floor([(0, 5, 6), (0, 7, 8), (0, 9, 9)]), math.log(3) / 2)


def test_targets_met_needs_both_forward_targets() -> None:
    from interp.findings.storage import targets_met

    assert targets_met(0.8, 0.8) and targets_met(0.95, 0.9)
    assert not targets_met(0.79, 0.99) and not targets_met(0.99, 0.79)


def test_storage_scale_plan_applies_each_scale_after_the_level() -> None:
    from interp.presets import make_plan
    from interp.presets.storage import SCALES

    cfgs = {r.labels["scale"]: r.config for r in make_plan("storage_scale").runs()}
    assert set(cfgs) == set(SCALES.labels)
    for scale, cfg in cfgs.items():
        d, s = scale.split("_")[:2]
        assert cfg.model.d_model == int(d[1:]) and cfg.train.steps == int(s[1:]), scale
        assert cfg.world.bio_multiplicity == 5 and cfg.world.bio_permute == 1, scale
        people = 400 if scale.endswith("_p400") else 200
        assert 2 * cfg.world.n_people_per_subset == people, scale
    assert len({c.hash() for c in cfgs.values()}) == len(cfgs)


def test_storage_study_refuses_instruments_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    assert main(["study", "--preset", "storage_tiny", "--instruments", "lens", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`lens` reads" in err and "biography" in err, err
    assert not Path("x").exists()


def test_people_ladder_keeps_epochs_and_gives_the_top_rung_enough_names() -> None:
    """Steps in proportion to people (8 per person per subset) on every rung; the 800 rung
    needs 2 x 1600 distinct name pairs and alone gets 80 last names (the others keep 40)."""
    from interp.config import load_config
    from interp.presets import make_plan

    cfgs = {r.labels["scale"]: r.config for r in make_plan("storage_people").runs()}
    assert sorted(cfgs, key=lambda k: int(k.split("_p")[1])) == [
        "d128_p100", "d128_p200", "d128_p400", "d128_p800"
    ], sorted(cfgs)  # fmt: skip
    default_last = load_config("default").world.n_last_names
    for scale, cfg in cfgs.items():
        n = int(scale.split("_p")[1])
        assert cfg.world.n_people_per_subset == n and cfg.train.steps == 8 * n, scale
        assert cfg.model.d_model == 128, scale
        want = 80 if n > 400 else default_last
        assert cfg.world.n_last_names == want, (scale, cfg.world.n_last_names)
        w = cfg.world
        assert w.n_first_names * w.n_last_names >= 4 * n, (scale, w.n_first_names, w.n_last_names)
