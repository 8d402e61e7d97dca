"""The report's behaviour section on saved results with known contents (no training): rates
stay in [0, 100]%, the reversed test is listed per run and combined by Fisher, and a null
comes with its bound."""

from __future__ import annotations

import re

from interp.report import behaviour_section


def _study(tmp_path, fakes, seeds, rev_shift: float, rev_hit: float):
    study = fakes.study(tmp_path, "tiny", objectives=["causal"], seeds=seeds)
    for run in study.runs:
        fakes.evaluation(
            run, rev_shift=rev_shift, rev_hit=rev_hit, fwd_hit=0.9, kinds=("train", "heldout")
        )
    return study


def test_behaviour_section_bounds_rates_lists_runs_and_states_nulls(
    tmp_path, fakes, quick_bootstrap
):
    text = "\n".join(behaviour_section(_study(tmp_path, fakes, [0, 1, 2], 0.0, 0.02)))
    pcts = [float(x) for x in re.findall(r"(-?\d+\.\d)%", text)]
    pcts += [float(x) for m in re.findall(r"% \[(-?[\d.]+), (-?[\d.]+)\]", text) for x in m]
    assert pcts and all(0.0 <= x <= 100.0 for x in pcts), [x for x in pcts if not 0 <= x <= 100]
    for i in range(3):
        assert text.count(f"world {i}, seed {i}") == 6, text  # 3 subsets x 2 kinds, per run
    assert text.count("Fisher") >= 6 and "Holm" in text
    # reversed n2d has no effect: the null is stated as a bound relative to the forward effect
    assert re.search(
        r"excludes effects beyond \+-\d\.\d+ nats, \d+% of the forward effect", text
    ), text
    assert "nan" not in text and "inf" not in text


def test_behaviour_section_reports_a_real_reversed_effect_without_a_null(
    tmp_path, fakes, quick_bootstrap
):
    text = "\n".join(behaviour_section(_study(tmp_path, fakes, [0, 1], 1.5, 0.5)))
    n2d = [line for line in text.splitlines() if line.startswith("| **n2d (train)**")]
    assert n2d and "| effect (Holm p" in n2d[0], n2d
    est = float(re.search(r"\| ([+-][\d.]+) \[", n2d[0]).group(1))
    assert 1.0 < est < 2.0, n2d[0]


def test_behaviour_section_puts_the_role_matched_test_beside_the_random_one(
    tmp_path, fakes, quick_bootstrap
):
    """Runs with a role-matched control get its tables too (their own Holm family); a leak
    that beats the random control (+1.5) but not the same-role one (0) shows in both."""
    study = fakes.study(tmp_path, "tiny", objectives=["causal"], seeds=[0, 1])
    for run in study.runs:
        fakes.evaluation(run, rev_shift=1.5, rev_hit=0.0, matched=0.0)
    text = "\n".join(behaviour_section(study))
    heads = [line for line in text.splitlines() if line.startswith("### causal: reversed")]
    assert len(heads) == 2 and "same role" in heads[1], heads
    random_part, matched_part = text.split(heads[1])
    rows = [line for line in matched_part.splitlines() if line.startswith("| **n2d (train)**")]
    assert rows and "| no effect (Holm p" in rows[0], rows
    rows = [line for line in random_part.splitlines() if line.startswith("| **n2d (train)**")]
    assert rows and "| effect (Holm p" in rows[0], rows
    family = "Holm-corrected over the declared family (the reversed test of each"
    assert text.count(family) == 2, text
