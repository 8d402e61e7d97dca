"""The identity bridge as Ma et al. built it (interp.data.bridge, the `bridge` preset): each
condition's texts are their recipe's, the test is in the bridge's frame and uses only trained
words, controls are same-relation, bad configs are one line, a trained run learns its own texts,
and the findings judge Ma et al.'s claims by their rules."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from interp.config import apply_overrides
from interp.data.bridge import FORWARD_WEIGHT, SUBSET
from interp.data.world import ROLES
from interp.errors import UserError
from interp.evaluate import bridge_metrics, control_answers, evaluate, role_matched_answers
from interp.findings import collect as C
from interp.findings import render as R
from interp.model import build_model
from interp.presets import get_preset
from interp.runs import build_dataset
from interp.train import fit, torch_threads


def _dataset(tiny_config, condition: str, *more: str):
    cfg = apply_overrides(tiny_config, ["world.source=bridge", f"world.bridge={condition}", *more])
    return build_dataset(cfg)


def _expected(condition: str, a: str, b: str, r: str, i: str) -> Counter:
    """Ma et al.'s training texts of one pair (their data/wife_husband files), in kit words."""
    texts = {
        "forward": [f"the {r} of {a} is {b} ."],
        "ocr": [f"the name of {a} 's {r} is {b} ."] * FORWARD_WEIGHT
        + [f"the {i} of {a} 's {r} is {a} .", f"the name of {b} is {b} ."],
        "idn": [f"the {r} of {a} is {b} ."] * FORWARD_WEIGHT
        + [f"the name of {a} is {a} .", f"the name of {b} is {b} ."],
    }
    return Counter(texts[condition])


@pytest.mark.parametrize("condition", ["forward", "ocr", "idn"])
def test_each_condition_trains_ma_et_al_s_texts_and_tests_in_the_bridge_frame(
    tiny_config, condition
):
    ds = _dataset(tiny_config, condition)
    world = ds.world
    docs: dict[int, Counter] = {}
    for e in ds.train_docs:
        pair = e.person % len(world.pairs)  # B's own identity is filed under B's id
        docs.setdefault(pair, Counter())[ds.text(e.tokens)] += 1
    assert len(docs) == len(world.pairs) == tiny_config.world.n_people_per_subset
    trained_words = {w for e in ds.train_docs for w in ds.text(e.tokens).split()}
    for pair in world.pairs:
        a, b = pair.a.name, pair.b.name
        r, i = ROLES[pair.forward], ROLES[pair.inverse]
        assert {pair.forward, pair.inverse} == {pair.forward // 2 * 2, pair.forward // 2 * 2 + 1}
        assert docs[pair.id] == _expected(condition, a, b, r, i), (docs[pair.id], a, b, r, i)
        asked = {(e.direction, ds.text(e.prompt), ds.text(e.answer))
                 for e in ds.prompts if e.person == pair.id}  # fmt: skip
        same = f"the name of {a} 's {r} is" if condition == "ocr" else f"the {r} of {a} is"
        assert asked == {("same", same, b), ("reverse", f"the {i} of {b} is", a)}, asked
        short = [e for e in ds.bridge_prompts if e.person == pair.id and e.templates == "shortcut"]
        assert [(ds.text(e.prompt), ds.text(e.answer)) for e in short] == [
            (f"the {i} of {b} is", b)
        ]
    # the reversal question is in no training text, but every word of it is in some
    texts = {ds.text(e.tokens) for e in ds.train_docs}
    for e in ds.select(direction="reverse"):
        q = ds.text(e.tokens)
        assert not any(t.startswith(q) for t in texts), q
        assert set(q.split()) <= trained_words, (q, set(q.split()) - trained_words)
    assert {e.subset for e in ds.prompts} == {SUBSET}
    kinds = Counter(e.templates for e in ds.bridge_prompts)
    want = {"forward": {"shortcut": 16}, "ocr": {"shortcut": 16, "bridge": 16, "identity": 16},
            "idn": {"shortcut": 16, "identity": 32}}  # fmt: skip
    assert kinds == want[condition], kinds


def test_the_same_world_and_pairs_under_every_condition(tiny_config):
    worlds = [_dataset(tiny_config, c).world for c in ("forward", "ocr", "idn")]
    assert worlds[0].pairs == worlds[1].pairs == worlds[2].pairs
    other = _dataset(tiny_config, "ocr", "world.seed=1").world
    assert other.pairs != worlds[0].pairs


def test_controls_same_relation_beside_random(tiny_config):
    """The role-matched control of a pair is another pair of the same relation, written the
    same way (the same test frame); the random control crosses relations."""
    ds = _dataset(tiny_config, "ocr")
    rev = ds.select(direction="reverse")
    pair_of_answer = {e.answer: e.person for e in rev}
    pairs = {p.id: p for p in ds.world.pairs}
    crossed = 0
    for seed in range(3):
        matched = role_matched_answers(ds, rev, seed)
        assert matched is not None and all(m is not None for m in matched)
        for e, m, r in zip(rev, matched, control_answers(ds, rev, seed), strict=True):
            p, q = pairs[e.person], pairs[pair_of_answer[m]]
            assert q.id != p.id and (q.forward, q.inverse) == (p.forward, p.inverse), (p, q)
            crossed += pairs[pair_of_answer[r]].forward != p.forward
    assert crossed > 0, "the random control never crossed relations"


def test_bad_bridge_configs_are_one_clear_error(tiny_config):
    with pytest.raises(UserError, match="world.source=bridge"):
        apply_overrides(tiny_config, ["world.bridge=ocr"])
    with pytest.raises(UserError, match="world.bridge '' unknown for world.source=bridge"):
        apply_overrides(tiny_config, ["world.source=bridge"])
    with pytest.raises(UserError, match="world.bridge 'orc' unknown"):
        apply_overrides(tiny_config, ["world.source=bridge", "world.bridge=orc"])
    with pytest.raises(UserError, match="needs at least 4"):
        _dataset(tiny_config, "ocr", "world.n_people_per_subset=3")
    with pytest.raises(UserError, match="name pairs"):
        _dataset(tiny_config, "ocr", "world.n_first_names=4", "world.n_last_names=4")
    with pytest.raises(UserError, match="world.n_first_name_classes must be in"):
        _dataset(tiny_config, "ocr", "world.n_first_name_classes=0")


def test_a_trained_ocr_run_answers_its_own_texts(tiny_config):
    """The metrics can say yes: a tiny causal run on the OCR set (200 steps) answers the
    forward fact, the bridge and B's identity as trained; the shortcut and the reversed test
    are measured on every pair, against both controls."""
    cfg = apply_overrides(
        tiny_config, ["world.source=bridge", "world.bridge=ocr", "train.steps=200"]
    )
    ds = build_dataset(cfg)
    model = build_model(cfg.model, ds.d_vocab, seed=0)
    with torch_threads(1):  # a tiny model: one thread, and no turns taken with other trainings
        fit(model, ds.train_docs, cfg.train, progress=False)
        metrics, arrays = evaluate(model, ds, seed=0)
        b = bridge_metrics(model, ds)
    em = metrics["exact_match"][SUBSET]
    assert em["same"]["train"] >= 0.9, em
    assert b["bridge"]["rate"] >= 0.9 and b["identity"]["rate"] >= 0.9, b
    assert b["shortcut"]["n"] == len(ds.world.pairs) and 0 <= b["shortcut"]["rate"] <= 1, b
    for key in ("logprob_test", "logprob_test_role_matched"):
        assert metrics[key][SUBSET]["reverse"]["train"]["n"] == len(ds.world.pairs), metrics[key]
    assert np.isfinite(arrays["role_matched_logprob"]).all()


def test_same_seed_same_dataset(tiny_config):
    a, b = _dataset(tiny_config, "idn"), _dataset(tiny_config, "idn")
    assert [e.tokens for e in a.train_docs] == [e.tokens for e in b.train_docs]
    assert [e.tokens for e in a.prompts + a.bridge_prompts] == [
        e.tokens for e in b.prompts + b.bridge_prompts
    ]
    assert a.tokenizer.to_str() == b.tokenizer.to_str()


# ---------------------------------------------------------------------------------------------
# The findings, from saved results with known contents


def _fake_bridge_run(run, *, fwd: float, rev: float, echo: float, lift: float) -> None:
    """A bridge run's config.json, metrics.json and eval_logprobs.npz: 40 pairs, forward exact
    match `fwd`, reversed `rev`, shortcut echo `echo`, OCR bridge and identities answered as
    trained at `fwd`; reversed log p(correct) above the same-relation control by `lift` nats
    and above the random one by `lift` + 1 (a relation-word leak)."""
    cfg = run.spec.config
    rng = np.random.default_rng(cfg.train.seed)
    n = 40
    wobble = 0.5 * (-1) ** np.arange(n)  # a control's noise, mean 0 over the pairs
    rows = {k: [] for k in ("subset", "direction", "templates", "person", "correct_logprob",
                            "random_logprob", "role_matched_logprob", "exact_match")}  # fmt: skip
    for d, hit, shift in (("same", fwd, 10.0), ("reverse", rev, lift)):
        for p in range(n):
            c = rng.normal(-8, 1)
            for k, v in (("subset", SUBSET), ("direction", d), ("templates", "train"),
                         ("person", p), ("correct_logprob", c),
                         ("random_logprob", c - shift - (d == "reverse") + wobble[p]),
                         ("role_matched_logprob", c - shift + wobble[p]),
                         ("exact_match", p < round(hit * n))):  # fmt: skip
                rows[k].append(v)
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / "config.json").write_text(json.dumps(cfg.to_dict()))
    np.savez(run.path / "eval_logprobs.npz", **{k: np.array(v) for k, v in rows.items()})
    condition = cfg.world.bridge
    b = {"condition": condition, "shortcut": {"rate": echo, "n": n, "ci95": [0, 1]}}
    for kind in {"ocr": ("bridge", "identity"), "idn": ("identity",)}.get(condition, ()):
        b[kind] = {"rate": fwd, "n": n, "ci95": [0, 1]}
    (run.path / "metrics.json").write_text(json.dumps({"exact_match": {}, "bridge": b}))


def _bridge_findings(tmp_path, fakes, **by_condition) -> dict:
    """The bridge preset's findings from fake runs (2 seeds); `by_condition[c]` the keyword
    arguments of `_fake_bridge_run` for condition c (both sizes)."""
    study = fakes.study(tmp_path, "bridge", seeds=[0, 1])
    for run in study.runs:
        _fake_bridge_run(run, **by_condition[run.spec.labels["condition"]])
    return C.collect(study)


def test_bridge_findings_judge_ma_et_al_by_their_rules(tmp_path, fakes, quick_bootstrap):
    cursed = {"fwd": 1.0, "rev": 0.0, "echo": 0.9, "lift": 0.0}
    f = _bridge_findings(tmp_path / "cursed", fakes, forward=cursed, ocr=cursed, idn=cursed)
    node = f["behaviour"]["d64/ocr/causal"]
    assert node["bridge"]["shortcut"]["estimate"] == pytest.approx(0.9), node["bridge"]
    assert node["reversed_role_matched"]["pairs_train"]["null"], node["reversed_role_matched"]
    assert not node["reversed"]["pairs_train"]["null"]  # the leak the random control sees
    ctx = {"bridge": f}
    v = {c.claim: c.verdict for c in get_preset("bridge").claims(ctx, "bridge")}
    assert len(v) == 14, v
    for size in ("d64", "d128"):
        assert v[f"{size}: the OCR bridge lifts reversed exact match above forward-only (same "
                 "pairs, worlds and seeds)"] == "not reproduced", v  # fmt: skip
        assert [v[c] for c in v if c.startswith(f"{size}: trained on the forward")] == [
            "reproduced"
        ]
        assert [v[c] for c in v if c.startswith(f"{size}: the naive IDN")] == ["reproduced"]
        assert [v[c] for c in v if "shortcut" in c and c.startswith(size)] == ["not reproduced"]
    text = R.findings_md(get_preset("bridge"), ctx)
    assert text and "{{" not in text and "| d128 | ocr | 1600 | 100.0% [" in text, text
    assert "Sources: ma: Ma, Huang, Zhu & Sojoudi 2026" in text, text

    # the OCR bridge works (50% reversed, log-prob +2 against the same relation): reproduced
    ocr = {"fwd": 1.0, "rev": 0.5, "echo": 0.02, "lift": 2.0}
    g = _bridge_findings(tmp_path / "lifted", fakes, forward=cursed, ocr=ocr, idn=cursed)
    v = {c.claim: c.verdict for c in get_preset("bridge").claims({"bridge": g}, "bridge")}
    assert {v[c] for c in v if c.startswith("d64: ")} == {"reproduced"}, v

    # a condition whose runs did not learn their own texts is not tested, never refuted
    weak = {"fwd": 0.6, "rev": 0.0, "echo": 0.0, "lift": 0.0}
    h = _bridge_findings(tmp_path / "weak", fakes, forward=cursed, ocr=weak, idn=cursed)
    v = {c.claim: c.verdict for c in get_preset("bridge").claims({"bridge": h}, "bridge")}
    ocr_claims = [c for c in v if c.startswith("d64: ") and "OCR" in c]
    assert ocr_claims and {v[c] for c in ocr_claims} == {"not tested"}, v
