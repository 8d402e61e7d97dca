"""The report's behaviour section on saved results with known contents (no training): rates
stay in [0, 100]%, the reversed test is listed per run and combined by Fisher, and a null
comes with its bound."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from interp.report import behaviour_section


def _fake_run(path: Path, world: int, seed: int, rev_shift: float, hit_rate: float) -> Path:
    """A run directory with config.json and eval_logprobs.npz: 12 people per subset, 2
    templates, forward log-prob difference +2, reversed difference `rev_shift` (+ noise)."""
    rng = np.random.default_rng(100 * world + seed)
    rows = []
    for si, s in enumerate(("n2d", "d2n", "both")):
        for d in ("same", "reverse"):
            for k in ("train", "heldout"):
                for person in range(12):
                    for _ in range(2):
                        shift = 2.0 if (d == "same" or s == "both") else rev_shift
                        c = rng.normal(-5, 1)
                        hit = rng.random() < (hit_rate if d == "reverse" else 0.9)
                        rows.append(
                            (s, d, k, 100 * si + person, c, c - shift + rng.normal(0, 1), hit)
                        )
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"world": {"seed": world}, "train": {"seed": seed, "objective": "causal"}})
    )
    s, d, k, p, c, r, h = zip(*rows, strict=True)
    np.savez(
        path / "eval_logprobs.npz",
        subset=np.array(s), direction=np.array(d), templates=np.array(k), person=np.array(p),
        correct_logprob=np.array(c), random_logprob=np.array(r), exact_match=np.array(h),
    )  # fmt: skip
    return path


def test_behaviour_section_bounds_rates_lists_runs_and_states_nulls(tmp_path):
    runs = [_fake_run(tmp_path / f"r{i}", i, i, 0.0, 0.02) for i in range(3)]
    text = "\n".join(behaviour_section({"causal": runs}))
    pcts = [float(x) for x in re.findall(r"(-?\d+\.\d)%", text)]
    pcts += [float(x) for m in re.findall(r"% \[(-?[\d.]+), (-?[\d.]+)\]", text) for x in m]
    assert pcts and all(0.0 <= x <= 100.0 for x in pcts), [x for x in pcts if not 0 <= x <= 100]
    for i in range(3):
        assert text.count(f"world {i}, seed {i}") == 6, text  # 3 subsets x 2 kinds, per run
    assert text.count("Fisher") >= 6 and "Holm" in text
    # reversed n2d has no effect: the null is stated as a bound relative to the forward effect
    assert re.search(r"excludes effects beyond \+-0\.\d+ nats, \d+% of the forward effect", text), (
        text
    )
    assert "nan" not in text and "inf" not in text


def test_behaviour_section_reports_a_real_reversed_effect_without_a_null(tmp_path):
    runs = [_fake_run(tmp_path / f"r{i}", i, i, 1.5, 0.5) for i in range(2)]
    text = "\n".join(behaviour_section({"causal": runs}))
    n2d = [line for line in text.splitlines() if line.startswith("| **n2d (train)**")]
    assert n2d and "covers 0" not in n2d[0], n2d
    est = float(re.search(r"\| ([+-][\d.]+) \[", n2d[0]).group(1))
    assert 1.0 < est < 2.0, n2d[0]
