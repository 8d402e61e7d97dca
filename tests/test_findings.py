"""The README's findings are produced by the code: the committed findings, report and README
match the current code and the default study, and the generator states what the numbers show
(including a failed prediction) on saved results with known contents (no training)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from interp import findings as F
from interp.errors import UserError
from interp.results import Result, write_result
from interp.study import make_plan

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "figures" / "findings.json"
RERUN = "regenerate them with `make study` (the default study) and commit figures/ and README.md"


# ---------------------------------------------------------------------------------------------
# The committed files were made by this code


def _committed() -> dict:
    assert COMMITTED.is_file(), f"{COMMITTED} is missing: {RERUN}"
    return json.loads(COMMITTED.read_text())


@pytest.mark.provenance  # in `make check`, not `make test`: any code change needs a new study
def test_committed_findings_were_made_by_the_current_code_and_study():
    prov = _committed()["provenance"]
    code, study = F.code_sha256(), F.study_sha256(make_plan("default"))
    assert prov["code_sha256"] == code, (
        f"figures/findings.json was made by code {prov['code_sha256'][:12]}, the code is now "
        f"{code[:12]}: {RERUN}"
    )
    assert prov["study_sha256"] == study, (
        f"figures/findings.json was made for study configs {prov['study_sha256'][:12]}, the "
        f"default study is now {study[:12]}: {RERUN}"
    )


def test_committed_report_is_the_one_the_findings_came_from():
    line = F.provenance_line(_committed()["provenance"])
    report = (REPO / "figures" / "report.md").read_text()
    assert line in report, (
        f"figures/report.md lacks the findings' provenance line {line!r}: {RERUN}"
    )


def test_readme_findings_are_the_rendering_of_the_committed_findings():
    readme = (REPO / "README.md").read_text()
    block = F.readme_block(_committed())
    assert block in readme, (
        "README.md's findings differ from the rendering of figures/findings.json through "
        f"interp/findings_template.md: run `python -m interp.findings figures/findings.json "
        f"README.md` (or {RERUN})"
    )


# ---------------------------------------------------------------------------------------------
# The generator, on saved results with known contents


def _fake_run(path: Path, objective: str, seed: int, rev_shift: float, rev_hit: float) -> Path:
    """config.json, eval_logprobs.npz (12 people per subset, 2 templates; forward and Both
    log-prob difference +2, reversed `rev_shift` + noise; reversed exact match `rev_hit`) and an
    update result with a forward change of 5 nats over a control of 1, reverse 0 vs 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for si, s in enumerate(("n2d", "d2n", "both")):
        for d in ("same", "reverse"):
            for k in ("train",):  # one template kind keeps the bootstraps few
                for person in range(12):
                    for _ in range(2):
                        fwd = d == "same" or s == "both"
                        c = rng.normal(-5, 1)
                        diff = 2.0 if fwd else rev_shift
                        hit = rng.random() < (0.95 if fwd else rev_hit)
                        rows.append(
                            (s, d, k, 100 * si + person, c, c - diff + rng.normal(0, 1), hit)
                        )
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"world": {"seed": seed}, "train": {"seed": seed, "objective": objective}})
    )
    s, d, k, p, c, r, h = zip(*rows, strict=True)
    np.savez(
        path / "eval_logprobs.npz",
        subset=np.array(s), direction=np.array(d), templates=np.array(k), person=np.array(p),
        correct_logprob=np.array(c), random_logprob=np.array(r), exact_match=np.array(h),
    )  # fmt: skip
    summary = {
        "delta_logp_forward_mean": 5.0 + rng.normal(0, 0.3),
        "delta_logp_forward_control_mean": 1.0 + rng.normal(0, 0.3),
        "delta_logp_reverse_mean": rng.normal(0, 0.3),
        "delta_logp_reverse_control_mean": rng.normal(0, 0.3),
        "delta_logp_forward_p": 1e-4 * (seed + 1),
    }
    write_result(path, Result("update", {"options": {}, "summary": summary}, {}))
    return path


def _verdicts(f: dict) -> dict[str, str]:
    return {p["claim"][:60]: p["verdict"] for p in f["predictions"]}


def test_findings_state_the_curse_and_a_failed_prediction(tmp_path):
    plan = make_plan("tiny")
    curse = [_fake_run(tmp_path / f"c{i}", "causal", i, 0.0, 0.0) for i in range(3)]
    f = F.collect({"causal": curse}, plan)
    json.dumps(f, allow_nan=False)  # strict JSON
    v = [p["verdict"] for p in f["predictions"]]
    # n2d/d2n not answered reversed, no log-prob preference, Both positive, update forward only;
    # patching (2) and the mitigations (entity vs causal, entity vs token) are not in this study
    assert v == ["held"] * 7 + ["not measured"] * 4, json.dumps(f["predictions"], indent=1)
    rev = f["behaviour"]["causal"]["reversed"]["n2d_train"]
    assert rev["null"] and "covers 0" in rev["claim"] and "exclude effects beyond" in rev["claim"]
    assert rev["bound"] == pytest.approx(max(abs(rev["low"]), abs(rev["high"])))
    em = f["behaviour"]["causal"]["exact_match"]["n2d_reverse_train"]
    assert em["estimate"] == 0 and em["low"] == 0 and 0 < em["high"] < 0.1, em
    upd = f["instruments"]["update"]["causal"]["delta_logp_forward_mean"]
    assert upd["n_runs"] == 3 and upd["low"] < upd["estimate"] < upd["high"], upd
    p = f["instruments"]["update"]["causal"]["delta_logp_forward_p"]
    assert "estimate" not in p and p["per_run"] == pytest.approx([1e-4, 2e-4, 3e-4]), p

    # a model that does prefer the right name reversed: that prediction fails, and says so
    leaky = [_fake_run(tmp_path / f"l{i}", "causal", i, 1.5, 0.0) for i in range(3)]
    g = F.collect({"causal": leaky}, plan)
    p = [x for x in g["predictions"] if x["claim"].startswith("Reversed N2D")][0]
    assert p["verdict"] == "failed" and "above log p(random) by +1." in p["evidence"], p
    table = F.render(g, "{{predictions}}")
    assert "| **failed** |" in table, table
    cells = [line.count("|") - line.count("\\|") for line in table.splitlines()]
    assert set(cells) == {4}, table  # 3 cells per row: a '|' in a claim is escaped


def test_render_quotes_only_what_the_findings_hold(tmp_path):
    plan = make_plan("tiny")
    f = F.collect({"causal": [_fake_run(tmp_path / "c0", "causal", 0, 0.0, 0.0)]}, plan)
    text = F.render(f, "N2D reversed {{behaviour.causal.exact_match.n2d_reverse_train}}.")
    assert re.fullmatch(r"N2D reversed 0\.0% \[0\.0, \d+\.\d\] \(1 run, 12 people\)\.", text), text
    with pytest.raises(UserError, match="behaviour.bico.exact_match"):
        F.render(f, "{{behaviour.bico.exact_match.n2d_reverse_train}}")
    lenient = F.render(f, "{{behaviour.bico.exact_match.n2d_reverse_train}}", strict=False)
    assert lenient.startswith("n/a (not in this study"), lenient


def test_the_default_template_names_only_findings_the_default_study_makes():
    """Every placeholder of the README template names a behaviour cell the study evaluates or a
    headline an instrument declares, on an objective the default study trains."""
    from interp.analysis import INSTRUMENTS

    plan = make_plan("default")
    paths = re.findall(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}", F.TEMPLATE.read_text())
    assert paths
    bad = []
    for p in paths:
        head, *rest = p.split(".")
        if head == "instruments":
            name, obj, key = rest
            ok = name in plan.instruments_for(obj) and key in INSTRUMENTS[name].headlines
            ok = ok and obj in plan.objectives
        elif head == "behaviour":
            ok = rest[0] in plan.objectives and rest[1] in ("exact_match", "reversed")
        else:
            ok = p == "predictions" or head == "provenance"
        if not ok:
            bad.append(p)
    assert not bad, f"template placeholders the default study cannot fill: {bad}"


def test_hashes_move_with_the_code_and_the_study(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "plots" / "p.py").write_text("y = 1\n")
    h = F.code_sha256(tmp_path)
    (tmp_path / "plots" / "p.py").write_text("y = 2\n")
    assert F.code_sha256(tmp_path) == h, "a plot module changes no number"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert F.code_sha256(tmp_path) != h
    base = F.study_sha256(make_plan("default"))
    assert F.study_sha256(make_plan("default")) == base
    assert F.study_sha256(make_plan("default", overrides=["train.steps=7"])) != base
    assert F.study_sha256(make_plan("default", seeds=[0, 1])) != base


def test_update_readme_rewrites_only_between_the_markers(tmp_path, monkeypatch):
    plan = make_plan("tiny")
    f = F.collect({"causal": [_fake_run(tmp_path / "c0", "causal", 0, 0.0, 0.0)]}, plan)
    # the real template needs the default study; render a one-line template instead
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(f))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{F.BEGIN}\nold\n{F.END}\n\ntail\n")
    tmpl = tmp_path / "t.md"
    tmpl.write_text("em {{behaviour.causal.exact_match.n2d_same_train}}\n")
    monkeypatch.setattr(F, "TEMPLATE", tmpl)
    assert F.main([str(path), str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{F.END}\n\ntail\n"), text
    assert re.search(r"em \d+\.\d% \[", text) and "old" not in text, text
    assert F.main([str(path), str(readme)]) == 0  # idempotent
    assert readme.read_text() == text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert F.main([str(path), str(bare)]) == 2 and bare.read_text() == "no markers\n"


def test_write_report_records_the_findings_and_their_provenance(tmp_path, monkeypatch):
    from interp import report
    from interp.report import write_report

    monkeypatch.setattr(report, "draw_figures", lambda *a, **k: {})  # the runs are fakes
    plan = make_plan("tiny", objectives=["causal"])
    runs = [_fake_run(tmp_path / "study" / "runs" / f"c{i}", "causal", i, 0.0, 0.0) for i in (0, 1)]
    out = tmp_path / "study"
    write_report(out, runs, plan, figures_dir=tmp_path / "figures")
    f = json.loads((out / "findings.json").read_text())
    assert f["provenance"]["code_sha256"] == F.code_sha256()
    assert f["provenance"]["study_sha256"] == F.study_sha256(plan)
    assert F.provenance_line(f["provenance"]) in (out / "report.md").read_text()
    for name in ("findings.json", "findings.md", "report.md"):
        assert (tmp_path / "figures" / name).read_bytes() == (out / name).read_bytes(), name
    assert "n/a (not in this study" in (out / "findings.md").read_text()  # no lens in this one


def test_verdicts_separate_failed_from_inconclusive():
    assert [F._positive(0.1, 0.5), F._positive(-0.5, -0.1), F._positive(-0.1, 0.5)] == [
        "held",
        "failed",
        "inconclusive",
    ]
    lo, mid, hi = ({"low": a, "high": b} for a, b in ((0.0, 0.2), (0.1, 0.4), (0.5, 0.9)))
    assert [F._above(hi, lo), F._above(lo, hi), F._above(mid, lo)] == [
        "held",
        "failed",
        "inconclusive",
    ]
