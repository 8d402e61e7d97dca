"""Training dynamics over the tiny run's checkpoints: behaviour rises, the last checkpoint agrees
with the run's own evaluation, and the figure is drawn from the saved result."""

from __future__ import annotations

import json

import numpy as np


def test_dynamics_on_tiny_run(tiny_run_copy, tmp_path, capsys, check_summary):
    from interp.cli import main
    from interp.plots import figure_paths
    from interp.plots.dynamics import plot_dynamics

    assert main(["dynamics", str(tiny_run_copy), "--folds", "4", "--no-progress"]) == 0
    assert "EM same" in capsys.readouterr().out
    res = json.loads((tiny_run_copy / "analysis" / "dynamics.json").read_text())
    arrays = np.load(tiny_run_copy / "analysis" / "dynamics.npz")
    assert res["steps"] == [0, 100, 200, 300, 400], res["steps"]
    em = arrays["exact_match"]  # [step, subset, direction]
    same = em[:, :, 0].mean(1)
    assert same[0] < 0.1 and same[-1] > 0.9 and same[-1] > same[0] + 0.8, (
        f"same-direction exact match should rise from ~0 at init to ~1: {same.round(2)}"
    )
    # The last checkpoint is the final model: exact match equals the run's own evaluation.
    metrics = json.loads((tiny_run_copy / "metrics.json").read_text())["exact_match"]
    for i, s in enumerate(res["axes"]["subset"]):
        for j, d in enumerate(res["axes"]["direction"]):
            assert em[-1, i, j] == metrics[s][d]["train"], (s, d, em[-1, i, j], metrics[s][d])
    # The lens agrees with behaviour: the trained model's output ranks the answer first.
    rank = arrays["lens_final_rank"]  # [step, subset, direction, target]
    assert rank[-1, :, 0, 0].max() == 1 and rank[0, :, 0, 0].min() > 10, rank[[0, -1], :, 0, 0]
    probe = arrays["probe"]  # [step, probe direction, subset, layer]
    assert probe.shape == (5, 2, 3, 3) and ((probe >= 0) & (probe <= 1)).all()
    sm = res["summary"]
    assert all(isinstance(v, float) and np.isfinite(v) for v in sm.values()), sm
    assert sm["em_n2d_same_final"] == 1.0 and "control_randlabel_a_to_b_n2d_best_final" in sm
    typed = check_summary(tiny_run_copy, "dynamics")
    assert typed.exact_match()[("n2d", "same")] == 1.0 and typed.last_step == 400.0, typed
    assert len(typed.probe_cells("control_randlabel")) == 6 and len(typed.lens_final_rank()) == 6
    plot_dynamics([tiny_run_copy, tiny_run_copy], tmp_path / "dynamics")
    paths = figure_paths(tmp_path / "dynamics")
    assert all(p.stat().st_size > 10_000 for p in paths), [p.stat().st_size for p in paths]


def test_dynamics_needs_checkpoints(tiny_run_copy, capsys):
    import shutil

    from interp.cli import main

    shutil.rmtree(tiny_run_copy / "checkpoints")
    assert main(["dynamics", str(tiny_run_copy), "--no-progress"]) == 2
    assert "no checkpoints" in capsys.readouterr().err
