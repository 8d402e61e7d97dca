"""Probing: the probe finds a planted linear feature and nothing in noise, folds never share a
person, the random-label control catches leakage, and the pipeline runs on the tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interp.analysis.linear_probe import cross_validated_correct, fit_probe, person_folds
from interp.analysis.probing import (
    CONDITIONS,
    PROBE_DIRECTIONS,
    SITES,
    control_labels,
    entity_activations,
    entity_token_types,
    labels,
    probe_people,
)
from interp.data.dataset import entity_alone
from interp.data.world import SUBSETS


def _planted(n_people: int, d: int, n_classes: int, signal: float, seed: int):
    """Two rows per person; the label shifts the mean along one class direction each."""
    rng = np.random.default_rng(seed)
    people = np.repeat(np.arange(n_people), 2)
    y_person = rng.permutation(np.arange(n_people) % n_classes)
    y = y_person[people]
    means = rng.normal(size=(n_classes, d))
    x = rng.normal(size=(len(y), d)) + signal * means[y]
    return x, y.astype(np.int64), people


def test_probe_reads_planted_feature_and_not_noise():
    x, y, people = _planted(n_people=100, d=32, n_classes=4, signal=1.0, seed=0)
    planted = cross_validated_correct(x, y, people, k=5, seed=0).mean()
    assert planted > 0.9, f"probe missed a planted linear feature: accuracy {planted:.3f}"
    noise = np.random.default_rng(1).normal(size=x.shape)
    null = cross_validated_correct(noise, y, people, k=5, seed=0).mean()
    assert abs(null - 0.25) < 0.1, f"probe on pure noise should be at chance 0.25, got {null:.3f}"


def test_probe_equals_scikit_learn_logistic_regression():
    """Our scipy L-BFGS probe is scikit-learn's StandardScaler + LogisticRegression(C): same
    objective, so the same predictions (up to the solvers' tolerance) on weak and strong signals,
    and identical predictions when both are solved tightly."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    agree, total = 0, 0
    for seed, signal, C in [(0, 0.3, 1.0), (1, 1.0, 1.0), (2, 0.5, 0.1), (3, 0.0, 10.0)]:
        x, y, _ = _planted(n_people=60, d=24, n_classes=5, signal=signal, seed=seed)
        xtr, ytr, xte = x[:80], y[:80], x[80:]
        ours = fit_probe(xtr, ytr, xte, C=C)
        scaler = StandardScaler().fit(xtr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=C, max_iter=5000).fit(scaler.transform(xtr), ytr)
        ref = clf.predict(scaler.transform(xte))
        agree += int((ours == ref).sum())
        total += len(ref)
    assert agree / total >= 0.97, f"ours and scikit-learn agree on {agree}/{total} predictions"
    # Tightly solved, every prediction coincides.
    x, y, _ = _planted(n_people=60, d=24, n_classes=5, signal=0.5, seed=7)
    ours = fit_probe(x[:80], y[:80], x[80:], tol=1e-10, max_iter=20_000)
    scaler = StandardScaler().fit(x[:80])
    clf = LogisticRegression(C=1.0, tol=1e-10, max_iter=20_000).fit(
        scaler.transform(x[:80]), y[:80]
    )
    ref = clf.predict(scaler.transform(x[80:]))
    assert (ours == ref).all(), f"tight solve differs: {ours} vs {ref}"


def test_folds_never_share_a_person_and_test_everyone_once():
    rng = np.random.default_rng(0)
    people = rng.permutation(np.repeat(np.arange(23), 3))  # 3 rows per person, shuffled
    strata = people % 4  # a label constant within a person
    for k in (2, 5, 7):
        for seed in (0, 1):
            for s in (None, strata):
                folds = person_folds(people, k, seed, strata=s)
                assert len(folds) == k
                tested = np.concatenate([test for _, test in folds])
                assert sorted(tested) == list(range(len(people))), "every row tested exactly once"
                for train, test in folds:
                    shared = set(people[train]) & set(people[test])
                    assert not shared, f"k={k} seed={seed}: people {shared} in train and test"
                    assert len(train) + len(test) == len(people)
                if s is not None:  # stratified: each fold's per-class person count within 1
                    counts = np.array(
                        [
                            [len(set(people[test][strata[test] == c])) for c in range(4)]
                            for _, test in folds
                        ]
                    )
                    assert (counts.max(0) - counts.min(0) <= 1).all(), f"unbalanced: {counts}"
    a = person_folds(people, 5, 0)
    b = person_folds(people, 5, 0)
    c = person_folds(people, 5, 1)
    assert all((t1 == t2).all() for (_, t1), (_, t2) in zip(a, b, strict=True)), "not seeded"
    assert any(
        len(t1) != len(t3) or (t1 != t3).any() for (_, t1), (_, t3) in zip(a, c, strict=True)
    ), "the seed changes nothing"


def test_random_label_control_is_at_chance_across_people_and_catches_leakage():
    """Person-specific features + random labels per person: memorisable, not generalisable."""
    rng = np.random.default_rng(0)
    n_people, d = 80, 48
    people = np.repeat(np.arange(n_people), 2)
    identity = rng.normal(size=(n_people, d))
    x = identity[people] + 0.1 * rng.normal(size=(len(people), d))
    y = rng.permutation(np.arange(n_people) % 4)[people].astype(np.int64)
    held_out = cross_validated_correct(x, y, people, k=5, seed=0).mean()
    assert held_out < 0.4, f"random labels, disjoint people: chance is 0.25, got {held_out:.3f}"
    # The same probe with rows (not people) split: a person's twin row is in training.
    leaky_test = np.arange(len(people)) % 2 == 0
    pred = fit_probe(x[~leaky_test], y[~leaky_test], x[leaky_test])
    leaky = (pred == y[leaky_test]).mean()
    assert leaky > 0.8, f"a leaky split should let the control memorise people: {leaky:.3f}"


def test_activations_read_the_entity_context(tiny_run):
    """Positive control: B's own role (the role word is in B's text) is readable at B's last token
    once attention has mixed the context in, and not from that token's embedding alone."""
    people = [p for p in tiny_run.dataset.people if p.subset in SUBSETS]
    pid = np.array([p.id for p in people])
    feats = entity_activations(tiny_run.model, tiny_run.dataset, people, "b")
    n_layers = tiny_run.config.model.n_layers
    assert feats["resid"].shape == (n_layers + 1, len(people), tiny_run.config.model.d_model)
    mlp = feats["mlp_out"].numpy()
    assert np.isnan(mlp[0]).all() and not np.isnan(mlp[1:]).any()
    own_role = labels(people, "a_to_b")
    resid = feats["resid"].double().numpy()
    acc = [
        cross_validated_correct(resid[layer], own_role, pid, 5, 0).mean()
        for layer in range(n_layers + 1)
    ]
    assert acc[-1] > 0.7, f"B's own role should be decodable after the blocks: {acc}"
    assert acc[0] < 0.45, f"the last title word's embedding alone should not give the role: {acc}"


def test_probe_pipeline_on_tiny_run(tiny_run_copy, tmp_path, capsys, check_summary):
    from interp.cli import main
    from interp.plots import figure_paths
    from interp.plots.probing import plot_probing

    assert main(["probe", str(tiny_run_copy), "--folds", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "A -> role" in printed and "rand-label" in printed, printed
    res = json.loads((tiny_run_copy / "analysis" / "probing.json").read_text())
    arrays = np.load(tiny_run_copy / "analysis" / "probing.npz")
    n_layers = 2
    acc = arrays["accuracy"]
    shape = (len(CONDITIONS), len(SITES), len(PROBE_DIRECTIONS), len(SUBSETS), n_layers + 1)
    assert acc.shape == shape, acc.shape
    assert np.isnan(acc[:, 1, :, :, 0]).all() and not np.isnan(acc[:, :, :, :, 1:]).any()
    assert arrays["correct"].shape == (*acc.shape, res["n_people_per_subset"])
    assert res["options"] == {"folds": 4, "C": 1.0, "seed": 0}
    sm = res["summary"]
    assert all(isinstance(v, float) and np.isfinite(v) for v in sm.values()), sm
    for key in (
        "probe_a_to_b_n2d_best",
        "probe_b_to_a_d2n_best",
        "probe_prompt_a_to_b_n2d_best",
        "control_randinit_a_to_b_both_best",
        "control_randlabel_mlp_b_to_a_n2d_best",
        "selectivity_a_to_b_n2d",
        "chance_a_to_b",
        "chance_b_to_a",
    ):
        assert key in sm, f"missing {key}"
    typed = check_summary(tiny_run_copy, "probing")
    assert typed.best()[("a_to_b", "n2d")] == sm["probe_a_to_b_n2d_best"]
    assert (
        typed.best("mlp_out", "control_randlabel")[("b_to_a", "n2d")]
        == sm["control_randlabel_mlp_b_to_a_n2d_best"]
    )
    assert len(typed.selectivity("prompt_final")) == 6 and len(typed.chance()) == 6
    # The control task (a random label per token type) is learnable only by memorising token
    # identity, which recurs across people (shared last names and title words): above the
    # proportional chance of a probe that learned nothing, at the embeddings (layer 0) above all.
    ctrl = acc[CONDITIONS.index("randlabel"), SITES.index("resid"), :, :, 0]
    proportional = np.mean(arrays["chance_proportional"])
    assert np.nanmean(ctrl) > proportional, (np.nanmean(ctrl), proportional)
    with pytest.raises(SystemExit):
        main(["probe", str(tiny_run_copy), "--folds", "x"])
    assert main(["probe", str(tiny_run_copy), "--folds", "1", "--no-progress"]) == 2
    assert "--folds must be >= 2" in capsys.readouterr().err
    plot_probing([tiny_run_copy, tiny_run_copy], tmp_path / "probing")
    paths = figure_paths(tmp_path / "probing")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 10_000 for p in paths), [p.stat().st_size for p in paths]


def test_the_control_task_gives_each_token_type_one_label(tiny_run):
    """Hewitt & Liang's control task: people whose entity ends in the same token get the same
    random label; the label set has the real task's number of classes."""
    people = probe_people(tiny_run.dataset)["n2d"]
    types = entity_token_types(tiny_run.dataset, people, "a")
    y = labels(people, "a_to_b")
    ctrl = control_labels(types, y, seed=0)
    by_type = {}
    for t, c in zip(types.tolist(), ctrl.tolist(), strict=True):
        assert by_type.setdefault(t, c) == c, (t, c, by_type[t])
    assert len(set(types.tolist())) < len(people), "token types must recur for the test to bite"
    assert ctrl.max() <= y.max()
    b = entity_token_types(tiny_run.dataset, people, "b")
    first = entity_alone(tiny_run.dataset, people[0], "b", "the")
    assert tiny_run.dataset.text(first.tokens[1:2]).strip() == "the" and b[0] == first.tokens[-1]
