"""Result files are strict JSON: an undefined number is `null` (with the reason beside it), never
Python's bare `NaN`, which every other JSON reader rejects."""

from __future__ import annotations

import json
import math

import numpy as np

from interp.analysis.selective import SCORES, SETS, format_summary
from interp.analysis.selective_metrics import set_metrics
from interp.files import write_json
from interp.results import Result


def _strict_load(text: str):
    def refuse(token: str):
        raise ValueError(f"non-JSON constant {token} in the file")

    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_null_for_nan_and_infinity(tmp_path):
    obj = {
        "nan": float("nan"),
        "inf": [float("inf"), 1.5, -float("inf")],
        "nested": {"np_nan": np.float64("nan"), "np_float": np.float32(0.25), "n": np.int64(3)},
        "tuple": (float("nan"), "text", None, True),
    }
    write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    got = _strict_load(text)  # Python's own reader accepts NaN; this one refuses it, like jq
    assert got == {
        "nan": None,
        "inf": [None, 1.5, None],
        "nested": {"np_nan": None, "np_float": 0.25, "n": 3},
        "tuple": [None, "text", None, True],
    }, text


def test_undefined_auroc_is_null_with_its_reason(tmp_path):
    """Every forward answer right: forward AUROC is undefined, saved as null, and the result
    says why; the table still prints from the file read back."""
    rng = np.random.default_rng(0)
    n = 40
    direction = np.array(["same"] * 20 + ["reverse"] * 20)
    correct = np.concatenate([np.ones(20, bool), rng.random(20) < 0.3])
    correct[20], correct[21] = True, False  # both classes in reverse and mixed
    masks = {"mixed": np.ones(n, bool), "forward": direction == "same"}
    masks["reverse"] = direction == "reverse"
    scores = {s: rng.normal(size=n) for s in SCORES}
    summary, undefined, _ = set_metrics(scores, correct, masks)
    assert math.isnan(summary["auroc_likelihood_forward"])
    assert not math.isnan(summary["auroc_likelihood_reverse"]), summary
    assert "all 20 forward answers are correct" in undefined["auroc_likelihood_forward"], undefined
    result = {
        "summary": {**summary, "alpha": 0.5},
        "scores": list(SCORES),
        "controls": [],
        "undefined": undefined,
    }
    write_json(tmp_path / "selective.json", result)
    back = _strict_load((tmp_path / "selective.json").read_text())
    assert back["summary"]["auroc_likelihood_forward"] is None
    assert back["undefined"]["auroc_likelihood_forward"].startswith("all 20 forward")
    table = format_summary(Result("selective", back, {}))
    assert "nan: all 20 forward answers are correct" in table, table
    assert len(table.splitlines()) == 2 + len(SCORES) + 2, table
    assert set(SETS) == set(masks)
