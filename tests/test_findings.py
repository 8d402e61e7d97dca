"""The findings are produced by the code: the committed findings files, report and README match
the current code and the studies; and on saved results with known contents (no training) the
findings state what the numbers show, a failed prediction included, judge every paper's claim by
its rule, and render only what the findings hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from interp.errors import UserError
from interp.findings import collect as C
from interp.findings import provenance as P
from interp.findings import render as R
from interp.findings.verdicts import VOCABULARY, verdict
from interp.presets import PRESETS, get_preset, make_plan

REPO = Path(__file__).resolve().parent.parent
FIGURES = REPO / "figures"
RERUN = "regenerate them with `make study` (the default study) and commit figures/ and README.md"


def _committed(name: str = "default") -> dict:
    path = get_preset(name).figures_dir(FIGURES) / "findings.json"
    assert path.is_file(), f"{path} is missing: {RERUN}"
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# The committed files were made by this code


@pytest.mark.provenance  # in `make check`, not `make test`: a change of how a number is computed
def test_committed_findings_were_made_by_the_current_code_and_study():
    prov = _committed()["provenance"]
    code, study = P.code_sha256(), P.study_sha256(make_plan("default"))
    assert prov["code_sha256"] == code, (
        f"figures/findings.json was made by code {prov['code_sha256'][:12]}, the code that "
        f"computes numbers is now {code[:12]}: {RERUN}"
    )
    assert prov["study_sha256"] == study, (
        f"figures/findings.json was made for study configs {prov['study_sha256'][:12]}, the "
        f"default study is now {study[:12]}: {RERUN}"
    )


def test_committed_report_is_the_one_the_findings_came_from():
    line = P.provenance_line(_committed()["provenance"])
    report = (FIGURES / "report.md").read_text()
    assert line in report, f"figures/report.md lacks the findings' provenance line: {RERUN}"


def test_committed_findings_texts_and_readme_are_the_renderings_of_the_findings():
    """Every committed findings.md, and the README's block, is what `python -m interp.findings
    figures README.md` writes from the committed findings.json files; every file the README
    links to exists."""
    ctx = R.load_context(FIGURES)
    assert "default" in ctx, f"figures/findings.json is missing: {RERUN}"
    for name in ctx:
        p = get_preset(name)
        want = R.findings_md(p, ctx)
        if want is None:
            continue
        md = p.figures_dir(FIGURES) / "findings.md"
        have = md.read_text()
        links = re.findall(r"\]\(([^)#]+)\)", have)
        missing = [x for x in links if not x.startswith("http") and not (md.parent / x).exists()]
        assert not missing, f"{md} links to files that do not exist: {missing}"
        assert have == want, (
            f"{p.figures_dir(FIGURES) / 'findings.md'} is not the rendering of its findings.json "
            f"through interp/presets/{name}.md: run `python -m interp.findings figures README.md`"
        )
    readme = (REPO / "README.md").read_text()
    block = R.readme_block(FIGURES, REPO / "README.md", ctx)
    assert "{{" not in block, block[block.index("{{") - 200 : block.index("{{") + 100]
    assert block in readme, (
        "README.md's findings block differs from the rendering of the committed findings: run "
        "`python -m interp.findings figures README.md`"
    )
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    missing = [x for x in links if not x.startswith("http") and not (REPO / x).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    assert len(readme.splitlines()) <= 350, f"README.md has {len(readme.splitlines())} lines"
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    unnamed = [
        p.relative_to(REPO).as_posix()
        for p in sorted((REPO / "interp").rglob("*.py"))
        if "__pycache__" not in p.parts
        and p.stem not in ("__init__", "__main__")
        and p.stem not in layout
    ]
    assert not unnamed, f"README.md's Layout does not name these modules: {unnamed}"


# ---------------------------------------------------------------------------------------------
# Collecting and judging, on saved results with known contents


def _study(
    tmp: Path, fakes, rev_shift: float, preset: str = "tiny", matched: float | None = 0.0
) -> C.Study:
    study = fakes.study(tmp, preset, objectives=["causal"], seeds=[0, 1, 2])
    for run in study.runs:
        fakes.evaluation(run, rev_shift=rev_shift, rev_hit=0.0, matched=matched)
        s = run.spec.config.train.seed
        fakes.summary(run, "update", {
            "delta_logp_forward_mean": 5.0 + 0.1 * s, "delta_logp_forward_control_mean": 1.0,
            "delta_logp_reverse_mean": 0.1 * (s - 1), "delta_logp_reverse_control_mean": 0.0,
            "delta_logp_forward_p": 1e-4 * (s + 1),
        })  # fmt: skip
    return study


def test_findings_state_the_curse_and_a_failed_prediction(tmp_path, fakes, quick_bootstrap):
    f = C.collect(_study(tmp_path / "curse", fakes, 0.0))
    json.dumps(f, allow_nan=False)  # strict JSON
    claims = get_preset("tiny").claims({"tiny": f}, "tiny")
    # n2d/d2n not answered reversed, no log-prob preference (random and role-matched control),
    # Both positive, update forward only; patching (3: A's last token, all of A, the severed
    # path) and the mitigations (entity vs causal, entity vs token) are not in this study
    assert [c.verdict for c in claims] == ["held"] * 9 + ["not measured"] * 5, claims
    for key in ("reversed", "reversed_role_matched"):
        rev = f["behaviour"]["causal"][key]["n2d_train"]
        assert rev["null"] and rev["claim"].startswith("no effect at alpha 0.05"), rev
        assert "exclude effects beyond" in rev["claim"] and "with 80% power" in rev["claim"], rev
        assert rev["bound"] == pytest.approx(max(abs(rev["low"]), abs(rev["high"])))
    # a world without roles (the retrieval world, the paper's data): no role-matched column
    bare = C.collect(_study(tmp_path / "bare", fakes, 0.0, matched=None))
    assert "reversed_role_matched" not in bare["behaviour"]["causal"], bare["behaviour"]
    assert bare["behaviour"]["causal"]["reversed"] == f["behaviour"]["causal"]["reversed"]
    em = f["behaviour"]["causal"]["exact_match"]["n2d_reverse_train"]
    assert em["estimate"] == 0 and em["low"] == 0 and 0 < em["high"] < 0.1, em
    upd = f["instruments"]["update"]["causal"]["delta_logp_forward_mean"]
    assert upd["n_runs"] == 3 and upd["low"] < upd["estimate"] < upd["high"], upd
    p = f["instruments"]["update"]["causal"]["delta_logp_forward_p"]
    assert "estimate" not in p and p["per_run"] == pytest.approx([1e-4, 2e-4, 3e-4]), p
    assert f["steps"]["causal"] == {"per_run": [400] * 3, "text": "400"}, f["steps"]

    # a model that prefers the right name reversed over a random one, not over one of the same
    # role (a role-to-name leak): the random-control prediction fails, the role-matched holds
    g = C.collect(_study(tmp_path / "leak", fakes, 1.5))
    c = [
        c
        for c in get_preset("tiny").claims({"tiny": g}, "tiny")
        if c.claim.startswith("Reversed N2D")
    ]
    assert c[0].verdict == "failed" and "above log p(random) by +1." in c[0].evidence, c
    assert "same role" in c[1].claim and c[1].verdict == "held", c
    # and a memory of the fact beats the same-role control too: both fail
    m = C.collect(_study(tmp_path / "memory", fakes, 1.5, matched=1.5))
    c = [x for x in get_preset("tiny").claims({"tiny": m}, "tiny") if "N2D questions" in x.claim]
    assert [x.verdict for x in c] == ["failed", "failed"], c
    assert "above log p(same-role) by +1." in c[1].evidence, c
    table = R.render("{{tiny:checks}}", {"tiny": g})
    assert "| **failed** |" in table, table
    cells = {line.count("|") - line.count("\\|") for line in table.splitlines() if line}
    assert cells == {4}, table  # 3 cells per row: a '|' in a claim is escaped


def test_render_quotes_only_what_the_findings_hold(tmp_path, fakes, quick_bootstrap):
    study = fakes.study(tmp_path, "tiny", objectives=["causal"], seeds=[0])
    fakes.evaluation(study.runs[0])
    ctx = {"tiny": C.collect(study)}
    text = R.render("N2D reversed {{tiny.behaviour.causal.exact_match.n2d_reverse_train}}.", ctx)
    assert re.fullmatch(r"N2D reversed 0\.0% \[0\.0, \d+\.\d\] \(1 run, 12 people\)\.\n", text), (
        text
    )
    with pytest.raises(UserError, match="behaviour.bico.exact_match"):
        R.render("{{tiny.behaviour.bico.exact_match.n2d_reverse_train}}", ctx)
    lenient = R.render("{{tiny.behaviour.bico.exact_match.n2d_reverse_train}}", ctx, strict=False)
    assert lenient.startswith("n/a (not in this study"), lenient
    assert R.render("{{retrieval:checks}}", ctx).startswith(
        "not run (`make study PRESET=retrieval`)"
    )
    with pytest.raises(UserError, match="nope"):
        R.render("{{nope.x}}", ctx)


def test_every_template_names_only_what_its_study_makes():
    """Every placeholder of a preset's template names a preset, and for its own preset a
    behaviour cell of an objective it trains or a headline an instrument it runs declares."""
    from interp.analysis import INSTRUMENTS

    for name, p in PRESETS.items():
        if p.template is None:
            continue
        plan = make_plan(name)
        bad = []
        for path in re.findall(r"\{\{\s*([A-Za-z0-9_.:]+)\s*\}\}", p.template.read_text()):
            head, sep, rest = path.partition(":") if ":" in path else path.partition(".")
            if head not in PRESETS:
                bad.append(path)
            elif sep == ":":
                kind, _, arg = rest.partition(":")
                preset = get_preset(head)
                ok = kind in ("checks", "provenance") or (kind == "table" and arg in preset.tables)
                bad += [] if ok else [path]
            elif head == name and rest.startswith("instruments."):
                ins, obj, key = rest.split(".")[1:4]
                ok = ins in plan.instruments and key in INSTRUMENTS[ins].headlines
                bad += [] if ok and obj in plan.objectives else [path]
            elif head == name and rest.startswith("behaviour."):
                obj, kind = rest.split(".")[1:3]
                kinds = ("exact_match", "reversed", "reversed_role_matched", "bridge")
                ok = obj in plan.objectives and kind in kinds
                bad += [] if ok else [path]
        assert not bad, f"{name}'s template names what its study cannot make: {bad}"


def test_hashes_move_with_the_code_that_computes_numbers_and_the_study(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "findings").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "plots" / "p.py").write_text("y = 1\n")
    (tmp_path / "findings" / "render.py").write_text("z = 1\n")
    h = P.code_sha256(tmp_path)
    (tmp_path / "plots" / "p.py").write_text("y = 2\n")
    (tmp_path / "findings" / "render.py").write_text("z = 2\n")
    assert P.code_sha256(tmp_path) == h, "drawing and rendering change no number"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert P.code_sha256(tmp_path) != h
    base = P.study_sha256(make_plan("default"))
    assert P.study_sha256(make_plan("default")) == base
    assert P.study_sha256(make_plan("default", overrides=["train.steps=7"])) != base
    assert P.study_sha256(make_plan("default", seeds=[0, 1])) != base
    assert P.study_sha256(make_plan("default", instruments=["probing"])) != base


def test_render_all_rewrites_only_the_readme_block_and_the_findings_texts(
    tmp_path, fakes, quick_bootstrap
):
    study = fakes.study(tmp_path / "runs", "tiny", objectives=["causal"], seeds=[0])
    fakes.evaluation(study.runs[0])
    figures = tmp_path / "figures"
    (figures / "retrieval").mkdir(parents=True)
    f = C.collect(study) | {"preset": "retrieval"}
    (figures / "retrieval" / "findings.json").write_text(json.dumps(f))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{R.BEGIN}\nold\n{R.END}\n\ntail\n")
    monkey = pytest.MonkeyPatch()
    headline = tmp_path / "h.md"
    headline.write_text("{{retrieval.behaviour.causal.exact_match.n2d_same_train}}\n\n{{index}}\n")
    monkey.setattr(R, "HEADLINE", headline)
    try:
        assert R.main([str(figures), str(readme)]) == 0
        text = readme.read_text()
        assert text.startswith("# title\n\n") and text.endswith(f"{R.END}\n\ntail\n"), text
        assert re.search(r"\d+\.\d% \[", text) and "old" not in text, text
        assert "[`retrieval`](figures/retrieval/findings.md)" in text, text
        assert "`default`: " in text and "(not run here: `make study PRESET=default`)" in text
        md = (figures / "retrieval" / "findings.md").read_text()
        assert "| causal | one stack | 400 | - | n/a |" in md, md
        assert R.main([str(figures), str(readme)]) == 0  # idempotent
        assert readme.read_text() == text
        bare = tmp_path / "bare.md"
        bare.write_text("no markers\n")
        assert R.main([str(figures), str(bare)]) == 2 and bare.read_text() == "no markers\n"
        assert R.main([str(figures)]) == 2
    finally:
        monkey.undo()


def test_write_report_records_the_findings_and_their_provenance(
    tmp_path, fakes, monkeypatch, quick_bootstrap
):
    from interp import report

    monkeypatch.setattr(report, "draw_figures", lambda *a, **k: [])  # the runs are fakes
    study = fakes.study(tmp_path / "study", "tiny", objectives=["causal"], seeds=[0, 1])
    for run in study.runs:
        fakes.evaluation(run)
    out = study.plan.report_dir(tmp_path / "study")
    report.write_report(study, out, figures_dir=tmp_path / "figures", log=lambda s: None)
    f = json.loads((out / "findings.json").read_text())
    assert f["provenance"]["code_sha256"] == P.code_sha256()
    assert f["provenance"]["study_sha256"] == P.study_sha256(study.plan)
    assert P.provenance_line(f["provenance"]) in (out / "report.md").read_text()
    for name in ("findings.json", "report.md"):
        assert (tmp_path / "figures" / name).read_bytes() == (out / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------
# The papers' claims, judged by their rules


def _rate_node(*runs: tuple[int, int]) -> dict:
    """An exact-match node as the findings write it, from (hits, people) per run."""
    from interp.findings.collect import estimate_node
    from interp.stats import rate_estimate

    e = rate_estimate([[1.0] * k + [0.0] * (n - k) for k, n in runs])
    return estimate_node(e, e.fmt(pct=True))


def test_every_rule_says_shown_opposite_unclear_or_missing():
    lo, hi = (_rate_node(*[(k, 100)] * 3) for k in (1, 70))
    mid = _rate_node(*[(1, 10)] * 3)  # 10% of 10 people a run: neither shown
    k = {"kind": "hypothesis"}
    assert [verdict("above", hi, lo, **k), verdict("above", lo, hi, **k),
            verdict("above", mid, lo, **k), verdict("above", None, lo, **k)] == [
        "held", "failed", "inconclusive", "not measured"]  # fmt: skip
    assert [verdict("lift", hi, lo), verdict("lift", lo, lo), verdict("lift", mid, lo)] == [
        "reproduced", "not reproduced", "inconclusive"]  # fmt: skip
    assert (
        verdict("no gain", lo, lo) == "reproduced"
        and verdict("no gain", hi, lo) == "not reproduced"
    )
    assert verdict("no loss", lo, lo) == "reproduced" and verdict("no loss", lo, hi) == (
        "not reproduced"
    )
    assert verdict("nats lift", hi, lo) == "reproduced" and verdict("nats no gain", hi, lo) == (
        "not reproduced"
    )
    interval_only = {k: v for k, v in hi.items() if not k.startswith("per_run")}
    assert verdict("lift", interval_only, lo) == "not measured"  # no per-run numbers, no rule
    assert verdict("near", lo, 0.0) == "reproduced" and verdict("near", hi, 0.0) == "not reproduced"
    assert (
        verdict("target", hi, 0.75) == "inconclusive"  # 70% [61, 79]
        and verdict("target", lo, 0.75) == "not reproduced"
    )
    null = {"estimate": 0.3, "null95": 0.35}
    assert (
        verdict("not above null", null) == "reproduced"
        and verdict("above null", null) == "not reproduced"
    )
    assert set(VOCABULARY) >= {"held", "failed", "reproduced", "not reproduced", "not tested"}


def test_a_comparison_is_the_one_rule_run_by_run():
    """A lift is judged by per-run one-sided Welch tests on the people, Fisher-combined (scipy's
    tests give the same p), not by whether two study intervals overlap: here they overlap, yet
    every run shows the lift; runs that do not vary take the test's limit; QK-style nodes (one
    number per run) take the t-test over runs of the paired differences."""
    from scipy import stats as st

    from interp.findings.verdicts import compare

    x, y = _rate_node((22, 100), (30, 100), (14, 100)), _rate_node((10, 100), (17, 100), (3, 100))
    assert x["low"] < y["high"], (x["text"], y["text"])  # the intervals overlap
    items = [[1.0] * k + [0.0] * (100 - k) for k in (22, 30, 14, 10, 17, 3)]
    want = st.combine_pvalues(
        [st.ttest_ind(items[i], items[i + 3], equal_var=False, alternative="greater").pvalue
         for i in range(3)], method="fisher").pvalue  # fmt: skip
    p = compare(x, y)
    assert p is not None and abs(p - want) < 1e-9 and p < 0.05, (p, want)
    assert verdict("lift", x, y) == "reproduced"
    ones, zeros = _rate_node((100, 100), (100, 100)), _rate_node((0, 100), (0, 100))
    assert compare(ones, zeros) == 0.0 and compare(zeros, ones) == 1.0
    assert verdict("no loss", ones, ones) == "reproduced"  # no loss of 10 points, no spread
    # the smallest lift it detects with 80% power, stated beside every comparison
    import numpy as np

    from interp.findings.text import vs
    from interp.findings.verdicts import detectable

    var = sum(np.var(i, ddof=1) / 100 for i in items)
    want_mde = (st.norm.ppf(0.95) + st.norm.ppf(0.8)) * np.sqrt(var) / 3
    assert abs(detectable(x, y) - want_mde) < 1e-12, (detectable(x, y), want_mde)
    assert "detects" in vs(x, y) and detectable(*({"per_run": [0.1]},) * 2) is None
    qk = {"per_run": [0.3, 0.35, 0.28]}, {"per_run": [0.1, 0.12, 0.05]}
    want_qk = st.ttest_rel(qk[0]["per_run"], qk[1]["per_run"], alternative="greater").pvalue
    assert abs(compare(*qk) - want_qk) < 1e-9, (compare(*qk), want_qk)


@pytest.fixture(scope="module")
def papers(tmp_path_factory, fakes, quick_bootstrap):
    """Findings of the comparing presets from fake runs: reverse_entity, BICO and MLM-U answer
    reversed in their own modes (0.6, 0.8, 0.9; BICO by causal decoding 0.1), the rest do not
    (0.0), every run learned its objective; in `unlearned` MLM-U's runs did not learn theirs.
    (The bridge's: tests/test_bridge.py.)"""
    tmp = tmp_path_factory.mktemp("papers")

    def collect(name: str, hits: dict[str, float], unlearned: tuple[str, ...] = ()) -> dict:
        preset = {"unlearned": "retrieval"}.get(name, name)
        study = fakes.study(tmp / name, preset, objectives=list(hits), seeds=[0, 1, 2])
        for run in study.runs:
            o = run.spec.config.train.objective
            fakes.evaluation(run, rev_hit=hits[o], fwd_hit=0.98, people=20,
                             causal=0.1 if o == "bico" else None,
                             learned=o not in unlearned)  # fmt: skip
        return C.collect(study)

    ctx = {
        "objectives": collect("objectives", {"causal": 0.0, "reverse_entity": 0.6,
                                             "reverse_token": 0.0, "bico": 0.8, "mlm_u": 0.9}),
        "retrieval": collect("retrieval", {"causal": 0.0, "reverse_token": 0.0, "mlm": 0.0,
                                           "mlm_u": 0.0}),
    }  # fmt: skip
    ctx["gpu"] = ctx["objectives"]
    unlearned = ctx | {"retrieval": collect("unlearned", {"causal": 0.0, "mlm_u": 0.0},
                                            unlearned=("mlm_u",))}  # fmt: skip
    return ctx, unlearned


def _verdicts(ctx: dict, name: str) -> dict[str, str]:
    p = get_preset(name)
    return {c.claim: c.verdict for c in p.claims(ctx, name)} if p.claims else {}


def test_preset_findings_judge_the_papers_claims(papers):
    ctx, unlearned = papers
    obj = ctx["objectives"]
    mlm = obj["behaviour"]["mlm_u"]["exact_match"]["n2d_reverse_train"]
    assert 0.7 < mlm["estimate"] < 1 and mlm["n_runs"] == 3, mlm
    bico = obj["behaviour"]["bico"]["causal_exact_match"]["n2d_reverse_train"]
    assert bico["estimate"] < 0.3, bico
    assert "causal_exact_match" not in obj["behaviour"]["causal"]
    learned = obj["behaviour"]["mlm_u"]["learned"]
    assert learned["met"] and learned["text"] == "3 of 3 runs", learned
    assert obj["behaviour"]["mlm_u"]["infill"]["n2d_reverse"]["estimate"] == 1.0

    v = _verdicts(ctx, "objectives")
    assert len(v) == 10 and set(v.values()) == {"reproduced"}, v
    assert _verdicts(ctx, "gpu") == v  # the gpu preset: the same predictions, its own runs
    v = _verdicts(ctx, "retrieval")
    assert v["mlm_u answers held-out backward queries (its own mode)"] == "not reproduced", v
    assert v["causal answers held-out backward queries (its own mode)"] == "reproduced", v
    assert v["mlm_u answers held-out forward queries (its own mode)"] == "reproduced", v
    # an objective that did not learn its own objective is not tested, never refuted
    v = _verdicts(unlearned, "retrieval")
    assert v["mlm_u answers held-out backward queries (its own mode)"] == (
        "not tested: the objective was not learned"
    ), v
    assert v["causal answers held-out backward queries (its own mode)"] == "reproduced", v


def test_preset_templates_render_with_their_tables_and_sources(papers):
    ctx, _ = papers
    for name in ("objectives", "gpu", "retrieval"):
        text = R.findings_md(get_preset(name), ctx | {"storage_scale": {}})
        assert text and "{{" not in text, (name, text)
    table = R.findings_md(get_preset("retrieval"), ctx)
    assert table and "| **not reproduced** |" in table and "Sources: kitouni:" in table, table


def _storage_result(objective: str, multiplicity: int, q: float, rq: float, fwd: tuple[int, int],
                    inv: int, n: int = 100) -> dict:  # fmt: skip
    """A storage.json's data: Q-probe `q` on every attribute (null95 0.2), reverse Q `rq`
    (null95 0.35), forward QA (unseen, trained) hits per question of `n`, inverse `inv` of n."""
    from interp.data.biography import LABELS

    sm: dict = {"q_mean_null95": 0.2, "q_mean_control_best": 0.99, "chance_q_mean": 0.16,
                "rq_first_class_best": rq, "rq_first_class_null95": 0.35,
                "rq_first_class_p": 0.01 if rq > 0.35 else 0.5, "chance_rq_first_class": 0.28,
                "pos_role_from_work_best": 0.97, "pos_first_class_from_name_best": 0.7}  # fmt: skip
    for lab in LABELS:
        sm[f"q_{lab}_best"], sm[f"q_{lab}_p"] = q, 0.01
    ext = {lab: {"qa_test": [0, 0, 0, fwd[0], n], "qa_train": [0, 0, 0, fwd[1], n]}
           for lab in LABELS}  # fmt: skip
    ext["inverse"] = {"qa_test": [0, 0, 0, inv, n], "qa_train": [0, 0, 0, inv, n]}
    aug = {"multiplicity": multiplicity, "permute": int(multiplicity > 1),
           "fullname": int(multiplicity > 1)}  # fmt: skip
    return {"objective": objective, "n_people": 2 * n, "augmentation": aug, "summary": sm,
            "extraction": ext}  # fmt: skip


def test_storage_findings_judge_allen_zhu_and_li(quick_bootstrap):
    """Plain memorises (QA-trained 100%, unseen 10%) with the Q-probe at its null; augmented
    lifts the Q-probe to 0.45 and extraction to 60%, both below the 0.8 targets; inverse search
    0% under causal, 9% under reverse_entity."""
    from interp.findings.storage import cell_findings

    runs = {
        ("plain", "causal"): _storage_result("causal", 1, 0.18, 0.30, (10, 100), 0),
        ("augmented", "causal"): _storage_result("causal", 5, 0.45, 0.30, (60, 100), 0),
        ("augmented", "reverse_entity"): _storage_result(
            "reverse_entity", 5, 0.45, 0.5, (75, 100), 9
        ),  # fmt: skip
        ("augmented", "mlm_u_hybrid"): _storage_result("mlm_u_hybrid", 5, 0.40, 0.30, (50, 100), 1),
    }
    cells: dict = {}
    for (level, objective), r in runs.items():
        cells.setdefault(level, {})[objective] = cell_findings([r]) | {"augmentation": level}
    prov = {"code_sha256": "0" * 64, "study_sha256": "1" * 64, "torch": "x"}
    f = {"preset": "storage", "levels": ["plain", "augmented"], "seeds": [0], "scale": [],
         "objectives": ["causal", "reverse_entity", "mlm_u_hybrid"], "cells": cells,
         "timing": {"text": "1.0 min wall"}, "provenance": prov}  # fmt: skip
    q = f["cells"]["augmented"]["causal"]["q_probe"]
    assert q["estimate"] == pytest.approx(0.45) and q["n_items"] == 800, q  # 4 x 200 people
    inv = f["cells"]["augmented"]["causal"]["extract_inverse_unseen"]
    assert inv["estimate"] == 0 and 0.03 < inv["high"] < 0.05, inv  # Wilson bound on 0/100
    checks = get_preset("storage").claims
    assert checks is not None
    assert [c.verdict for c in checks({"storage": f}, "storage")] == [
        "reproduced",  # plain: Q-probe at its null
        "reproduced",  # plain: memorised, not extractable
        "reproduced",  # augmentation lifts the Q-probe
        "reproduced",  # and extraction
        "not reproduced",  # Q-probe target 0.8
        "not reproduced",  # extraction target 0.8
        "reproduced",  # inverse ~0%, plain
        "reproduced",  # inverse ~0%, augmented
        "reproduced",  # reverse Q at its null under causal
        "reproduced",  # reverse_entity lifts inverse search (9/100 vs 0/100)
        "not reproduced",  # mlm_u_hybrid: 1/100 vs 0/100 excludes a lift of 10 points
    ]
    text = R.findings_md(get_preset("storage"), {"storage": f})
    assert text and "Allen-Zhu & Li 2023, Physics of Language Models Part 3.1" in text, text
    assert "| augmented (augmented) | reverse_entity | 1 x 200 |" in text, text
    assert "*Not run: `make study PRESET=storage_scale` makes it.*" in text  # its ladder
    f["cells"]["augmented"]["causal"]["q_probe"]["estimate"] = 0.85
    assert checks({"storage": f}, "storage")[4].verdict == "reproduced"
    del f["cells"]["plain"]
    assert checks({"storage": f}, "storage")[0].verdict == "not measured"


# ---------------------------------------------------------------------------------------------
# The wall time a study took


def test_timing_ledger_adds_work_and_ignores_rerenders(tmp_path):
    d = tmp_path / "objectives"
    kw = {"jobs": 1, "device": "cpu", "runs": 15}
    P.record_timing(d, "a", 100.0, trained=3, analysed=6, **kw)
    P.record_timing(d, "a", 50.0, trained=0, analysed=2, **kw)  # resumed
    P.record_timing(d, "a", 40.0, trained=0, analysed=0, **kw)  # a re-render: not added
    t = P.timing_finding(d, "a")
    assert t is not None and t["wall_seconds"] == 150.0 and len(t["invocations"]) == 2, t
    assert t["text"].startswith(
        "2.5 min wall (3 of 15 runs trained, the rest reused from the run cache; 8 analyses"
    ), t["text"]
    assert P.timing_finding(d, "another study") is None
    P.record_timing(d, "b", 10.0, trained=5, analysed=0, jobs=2, device="cpu", runs=5)
    t = P.timing_finding(d, "b")  # another study starts the ledger afresh
    assert t is not None and t["wall_seconds"] == 10.0 and "(5 runs trained;" in t["text"], t


def test_update_across_objectives_judges_shin_et_al_from_the_own_step():
    """Shin et al.'s prediction read from each objective's own step, per run (fact - control):
    a reverse transfer for MLM-U held and none for next-token training; the pooled ratio in
    the evidence; an objective that did not learn its objective is not tested."""
    from interp.presets.objectives import update_checks

    def runs(fwd: list[float], rev: list[float], ctrl: float = 0.0) -> dict:
        keys = {}
        for tag in ("own", "pair"):
            for d, v in (("forward", fwd), ("reverse", rev)):
                keys[f"{tag}_align_{d}_first_mean"] = {"per_run": v}
                keys[f"{tag}_align_{d}_first_control_mean"] = {"per_run": [ctrl] * len(v)}
        return keys

    def ctx(mlm_u_learned: bool) -> dict:
        return {"objectives": {
            "behaviour": {"causal": {"learned": {"met": True}},
                          "mlm_u": {"learned": {"met": mlm_u_learned}}},
            "instruments": {"update": {"causal": runs([10.0, 12.0, 11.0], [0.1, -0.2, 0.05]),
                                       "mlm_u": runs([10.0, 12.0, 11.0], [5.0, 6.5, 5.5])}},
        }}  # fmt: skip

    v = {c.claim: (c.verdict, c.evidence) for c in update_checks(ctx(True), "objectives")}
    causal = next(x for k, x in v.items() if k.startswith("Next-token training"))
    mlm_u = next(x for k, x in v.items() if k.startswith("mlm_u: its own step"))
    assert causal[0] == "reproduced" and mlm_u[0] == "reproduced", v
    assert "pooled, +51.5% [" in mlm_u[1] and "(n=3 runs)" in mlm_u[1], mlm_u
    v = {c.claim: c.verdict for c in update_checks(ctx(False), "objectives")}
    assert v[next(k for k in v if k.startswith("mlm_u: its own step"))] == (
        "not tested: the objective was not learned"
    ), v


def test_readme_sentence_on_bico_says_what_its_runs_came_to():
    """BICO's README sentence follows its runs: learned, its reversed rate beside next-token
    training's with Lv et al.'s verdict; not learned, 'not tested' and what fell short."""
    import copy

    from interp.presets.objectives import bico_text

    base = json.loads((FIGURES / "objectives" / "findings.json").read_text())
    f = copy.deepcopy(base)
    for o in f["behaviour"]:
        f["behaviour"][o]["learned"] = {"met": True, "text": "3 of 3 runs"}
    f["behaviour"]["bico"]["exact_match"]["n2d_reverse_train"] = {
        "estimate": 0.6, "low": 0.5, "high": 0.7, "text": "60.0% [50.0, 70.0]",
        "per_run": [0.55, 0.6, 0.65], "per_run_sd": [0.5, 0.49, 0.48], "per_run_n": [100] * 3,
    }  # fmt: skip
    f["behaviour"]["causal"]["exact_match"]["n2d_reverse_train"] = {
        "estimate": 0.0, "low": 0.0, "high": 0.013, "text": "0.0% [0.0, 1.3]",
        "per_run": [0.0] * 3, "per_run_sd": [0.0] * 3, "per_run_n": [100] * 3,
    }  # fmt: skip
    text = bico_text({"objectives": f}, "objectives")
    assert "learned its objective (3 of 3 runs)" in text and "60.0% [50.0, 70.0]" in text, text
    assert text.endswith("Lv et al.'s fix, reproduced"), text
    f["behaviour"]["bico"]["learned"] = {"met": False, "text": "2 of 3 runs"}
    f["behaviour"]["bico"]["infill"] = {
        "n2d_reverse": {"estimate": 0.99, "low": 0.98, "high": 1.0},
        "d2n_reverse": {"estimate": 0.9, "low": 0.85, "high": 0.93},
    }
    text = bico_text({"objectives": f}, "objectives")
    assert '"not tested" (it learned its objective in 2 of 3 runs): its infill is still short' in (
        text
    ), text
    assert "D2N, the first entity, 90.0% [85.0, 93.0]" in text, text
    f["behaviour"]["bico"]["infill"]["d2n_reverse"]["estimate"] = 0.97  # the mean over runs
    f["behaviour"]["bico"]["infill"]["d2n_reverse"]["per_run"] = [0.99, 0.99, 0.93]
    assert "its infill is still short" in bico_text({"objectives": f}, "objectives")
    f["behaviour"]["bico"]["infill"]["d2n_reverse"]["per_run"] = [0.97] * 3
    assert "own-mode forward exact match is short" in bico_text({"objectives": f}, "objectives")


def test_index_gives_each_preset_its_wall_time_and_a_gpu_past_30_minutes():
    short = {"timing": {"text": "6.1 min wall (9 runs trained)", "wall_seconds": 366.0}}
    long = {"timing": {"text": "62.0 min wall (21 runs trained)", "wall_seconds": 3720.0}}
    assert R._wall(short) == "; last made in 6.1 min wall (9 runs trained)", R._wall(short)
    assert "over 30 min on 2 cores: run it on one GPU" in R._wall(long), R._wall(long)
    assert R._wall({}) == ""


def test_one_decision_rule_for_the_readme_the_findings_and_the_report(
    tmp_path, fakes, quick_bootstrap
):
    """Issue 26: one rule per claim. Where the 3-run bootstrap interval and the one-sided,
    Holm-corrected test disagree (on these fakes: the interval covers 0, Fisher's test over the
    runs finds the shift), the findings node, the README's verdict and the report's Holm family
    all give the test's one answer, and the claim says why the interval reads otherwise."""
    from interp.analysis.behaviour import cells as behaviour_cells
    from interp.report import reversed_tables

    disagreed = []
    for shift in (0.0, 0.2, 1.0):
        study = fakes.study(tmp_path / f"s{shift}", "tiny", objectives=["causal"], seeds=[0, 1, 2])
        for run in study.runs:
            fakes.evaluation(run, rev_shift=shift, people=24, kinds=("train", "heldout"))
        f = C.collect(study)
        node = f["behaviour"]["causal"]["reversed"]["n2d_train"]
        readme = next(
            c for c in get_preset("tiny").claims({"tiny": f}, "tiny")
            if c.claim.startswith("Reversed N2D") and "random" in c.claim
        )  # fmt: skip
        assert readme.verdict == ("failed" if node["effect"] else "held"), (shift, readme, node)
        assert (node["p_holm"] < 0.05) == node["effect"] and node["family_size"] == 6, node
        results = study.results(study.groups()["causal"], "behaviour")
        lines = "\n".join(reversed_tables(study, "causal", behaviour_cells(results[0]), "random"))
        row = next(x for x in lines.splitlines() if x.startswith("| **n2d (train)**"))
        assert ("| effect (Holm p" in row) == node["effect"], (shift, row, node)
        assert f"n2d (train) p = {node['p_holm']:.3g}" in lines, (shift, node["p_holm"], lines)
        if (node["low"] > 0) != node["effect"]:
            disagreed.append(shift)
            assert "the interval of the mean over runs covers 0" in node["claim"], node["claim"]
    assert disagreed == [0.2], f"the interval and the test disagree at shifts {disagreed}"
