"""Patching that reports what it found: the restored fraction per activation and layer at the
entity's last token and at the final position, with within-run intervals over people."""

from __future__ import annotations

import numpy as np

from interp.analysis import patching
from interp.analysis.activation_patching import ACTS


def test_sites_report_restoration_at_the_entity_and_the_final_position(tiny_run, tmp_path):
    opts = patching.PatchingOptions(
        max_prompts=8, corruptions=("swap",), subsets=("n2d",), noise_samples=1
    )
    r = patching.run_analysis(tiny_run, opts, write=False, progress=False)
    g = r["groups"]["n2d"]["forward"]["swap"]
    assert g["meaningful"], g["clean_minus_corrupt"]
    n_layers = tiny_run.config.model.n_layers
    sites = g["sites"]
    assert set(sites) == {"entity_last", "final"} and sites["entity_last"]["label"] == "A2"
    for site, by_act in sites.items():
        per_person = r.arrays[f"n2d/forward/swap/sites/{site}"]  # person act layer
        assert per_person.shape == (by_act["n_people"], len(ACTS), n_layers)
        for i, a in enumerate(ACTS):
            m, lo, hi = (np.array(by_act[a][k]) for k in ("mean", "low", "high"))
            np.testing.assert_allclose(m, per_person[:, i].mean(0), atol=1e-9)
            assert np.all(lo <= m + 1e-9) and np.all(m <= hi + 1e-9), (site, a, lo, m, hi)
            best = by_act[a]["max"]
            assert best["value"] == m.max() and best["layer"] == int(m.argmax()), best
            key = f"forward_{site}_{a}_max"
            assert r.summary[key] == best["value"], (key, r.summary.get(key))
    # The final token is the same in the clean and the corrupted prompt, so patching its
    # block-0 input changes nothing; A's last token differs, so patching it there restores.
    final0 = sites["final"]["resid_pre"]["mean"][0]
    entity0 = sites["entity_last"]["resid_pre"]["mean"][0]
    assert abs(final0) < 1e-6 and entity0 > 0.2, (final0, entity0)
    headlines = {d.key for d in patching.PatchingSummary.headlines()}
    assert headlines >= {f"forward_final_{a}_max" for a in ACTS}, headlines
    text = patching.format_summary(r)
    assert "restored at entity_last (A2" in text and "restored at final" in text, text
    from interp.plots import figure_paths
    from interp.plots.patching_sites import plot_patching_sites
    from interp.results import write_result

    plot_patching_sites([r], tmp_path / "sites")  # a result not written: drawn as it is
    write_result(tmp_path, r)
    plot_patching_sites([tmp_path], tmp_path / "sites")
    assert all(p.stat().st_size > 10_000 for p in figure_paths(tmp_path / "sites"))


def test_severed_path_agrees_with_the_engine_and_blocks_at_the_last_layer(tiny_run):
    """ROME's severed path: with nothing frozen it is the engine's resid_pre patch at A's last
    token (computed by other code); at the last block, A's position no longer reaches the final
    position, so freezing its MLP or attention there changes nothing; in block 0 it does."""
    opts = patching.PatchingOptions(
        max_prompts=8, corruptions=("swap",), subsets=("n2d",), noise_samples=1
    )
    r = patching.run_analysis(tiny_run, opts, write=False, progress=False)
    g = r["groups"]["n2d"]["forward"]["swap"]
    sev = r.arrays["n2d/forward/swap/severed"]  # person sever layer
    engine = r.arrays["n2d/forward/swap/sites/entity_last"][:, ACTS.index("resid_pre")]
    np.testing.assert_allclose(sev[:, patching.SEVER.index("none")], engine, atol=1e-4)
    last = sev[:, :, -1]
    np.testing.assert_allclose(last, last[:, :1].repeat(len(patching.SEVER), 1), atol=1e-4)
    first = sev[:, :, 0].mean(0)
    assert abs(first[1] - first[0]) > 1e-3 or abs(first[2] - first[0]) > 1e-3, first
    for v in patching.SEVER:
        assert r.summary[f"forward_severed_{v}_max"] == g["severed"][v]["max"]["value"]
    assert "severed path" in patching.format_summary(r)
