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
    sites = dict(g["sites"])
    assert set(sites) == {"entity_last", "entity_all", "entity_each", "final"}, set(sites)
    assert sites["entity_last"]["label"] == "A2" and set(sites.pop("entity_each")) == {"A1", "A2"}
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
            if site != "final":  # the same site's wrong-source control, in the summary too
                c = g["control"]["sites"][site][a]["max"]["value"]
                assert r.summary[f"forward_control_{site}_{a}_max"] == c, (site, a, c)
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


def test_the_whole_entity_restores_everything_at_block_0_and_each_token_alone_does_not(tiny_run):
    """The swapped prompts differ only in the entity's tokens, so patching the clean block-0
    input at every one of them at once gives the clean run: each person's restored fraction is
    1 (the span patch, `patch_positions`). Each token alone restores less (0.51 on A's last token
    in the default study). The same patch from a third person (the same-site control) gives
    that person's run, not the clean one."""
    opts = patching.PatchingOptions(
        max_prompts=8, corruptions=("swap",), subsets=("n2d",), noise_samples=1
    )
    r = patching.run_analysis(tiny_run, opts, write=False, progress=False)
    g = r["groups"]["n2d"]["forward"]["swap"]
    whole = r.arrays["n2d/forward/swap/sites/entity_all"][:, ACTS.index("resid_pre"), 0]
    np.testing.assert_allclose(whole, 1.0, atol=1e-4)
    each = [
        r.arrays[f"n2d/forward/swap/sites/entity_each/{x}"][:, 0, 0].mean() for x in ("A1", "A2")
    ]
    assert max(each) < 0.95, each
    control = g["control"]["sites"]["entity_all"]["resid_pre"]["mean"][0]
    assert control < 0.9, control


def test_patch_positions_at_one_position_is_that_cell(tiny_run):
    """`patch_positions` (TransformerLens hooks, any set of positions) with one marked position
    per prompt equals `patch_cells` (the kit's batched engine) at that cell."""
    import torch

    from interp.analysis import activation_patching as E

    model, ds = tiny_run.model, tiny_run.dataset
    prompts = [e for e in ds.select(subset="n2d", direction="same", templates="train")][:6]
    toks, lengths = patching._tokens(prompts, torch.device("cpu"))
    corrupted = toks.flip(0)  # another person's prompt of the same template as the source
    names = E.hook_names(model.cfg.n_layers)
    cache = E.cache_activations(model, toks, names)
    final, right = lengths - 1, patching._first(prompts, torch.device("cpu"))

    def metric(logits, run):  # row i of `logits` is a patched run of prompt run[i]
        return logits[torch.arange(len(run)), final[run], right[run]]

    cells = E.patch_cells(model, corrupted, cache, names, metric, lengths=lengths)  # run hook pos
    pos = torch.tensor([patching.entity_span(e)[1] - 1 for e in prompts])
    where = torch.zeros_like(toks, dtype=torch.bool)
    where[torch.arange(len(prompts)), pos] = True
    one = E.patch_positions(model, corrupted, cache, names, where, metric)  # run hook
    want = cells[torch.arange(len(prompts)), :, pos]
    assert float((one - want).abs().max()) < 1e-4, (one - want).abs().max()
