"""The paper's Exp. 1 data: JSONL I/O, parsing, exact token boundaries, and evaluation on it."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter, defaultdict

import numpy as np
import pytest
from conftest import PAPER_DATA

from interp.config import apply_overrides, from_dict, load_config
from interp.controls import control_answers
from interp.data.dataset import build_synthetic
from interp.data.jsonl import Record, read_jsonl, to_records, write_dataset, write_jsonl
from interp.data.paper import build_paper_dataset, canonical_descriptions
from interp.data.paper_files import (
    DEFAULT_DATA_VERSION,
    RANDOMIZED,
    SUBSET_FILES,
    TEST_FILES,
    TRAIN_FILE,
    PaperFolder,
    load_names,
    load_paper_lines,
    load_templates,
    load_training_lines,
    resolve_data_dir,
)
from interp.data.tokenizer import EOS, encode
from interp.errors import UserError

needs_data = pytest.mark.skipif(
    not (PAPER_DATA / f"{TRAIN_FILE}.jsonl").is_file(), reason=f"paper data not at {PAPER_DATA}"
)


@pytest.fixture(scope="module")
def paper_ds():
    return build_paper_dataset(
        from_dict({"world": {"source": "paper", "data_dir": str(PAPER_DATA)}}).world
    )


def _heldout(ds, stem):
    """The held-out prompts of test file `stem`, in file order (prompts follow TEST_FILES order)."""
    start = 0
    for s in TEST_FILES:
        n = len(read_jsonl(PAPER_DATA / f"{s}.jsonl"))
        if s == stem:
            return ds.prompts[start : start + n]
        start += n
    raise KeyError(stem)


# ---- JSONL reader and writer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"prompt": "a", "completion": " b"}\n{"prompt": "a", "completion": \n',
         r"bad\.jsonl:2: not valid JSON"),
        ('{"prompt": "a"}\n', r"bad\.jsonl:1: missing key.*completion"),
        ('["a", "b"]\n', r"bad\.jsonl:1: a line must be a JSON object"),
        ("\n\n", "is empty"),
        (None, "not found"),
    ],
)  # fmt: skip
def test_jsonl_rejects_bad_files(tmp_path, content, needle):
    bad = tmp_path / "bad.jsonl"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(UserError, match=needle):
        read_jsonl(bad)


def test_jsonl_write_read_roundtrip(tmp_path):
    recs = [Record('Q: "quoted" é?', " answer\twith tab"), Record("x", " y")]
    write_jsonl(tmp_path / "r.jsonl", recs)
    assert read_jsonl(tmp_path / "r.jsonl") == recs


def test_synthetic_world_roundtrips_through_jsonl(tmp_path, tiny_config):
    """A synthetic world written in the paper's format reads back to the same tokens, cut right."""
    ds = build_synthetic(tiny_config.world)
    paths = write_dataset(ds, tmp_path)
    names = {p.stem for p in paths}
    assert {
        "all_prompts_train",
        "p2d_prompts_train",
        "d2p_prompts_train",
        "both_prompts_train",
        "p2d_reverse_prompts_test",
        "d2p_reverse_prompts_test",
        "both_prompts_test",
        "p2d_reverse_prompts_test_train_templates",
    } <= names, names
    docs = read_jsonl(tmp_path / "all_prompts_train.jsonl")
    assert len(docs) == len(ds.train_docs)
    for r, e in zip(docs, ds.train_docs, strict=True):
        assert r.completion.startswith(" ")
        # The cut sits before the second entity: the completion starts with its first token.
        second = max(e.a_span, e.b_span)
        assert e.prompt_len == second[0], (r, e.prompt_len, e.a_span, e.b_span)
        ids = encode(ds.tokenizer, r.prompt) + encode(ds.tokenizer, r.completion)
        assert tuple([1, *ids, EOS]) == e.tokens, (r, ds.text(e.tokens))
    n_prompts = 0
    for name, recs in to_records(ds).items():
        back = read_jsonl(tmp_path / f"{name}.jsonl")
        assert back == recs
        if "test" in name:
            n_prompts += len(back)
            for r in back:
                assert r.completion.startswith(" ") and r.prompt and r.completion.strip()
    assert n_prompts == len(ds.prompts)
    # A prompt reads back as prompt / " " + answer, token for token.
    e = ds.select(subset="n2d", direction="reverse", templates="heldout")[0]
    r = read_jsonl(tmp_path / "p2d_reverse_prompts_test.jsonl")[0]
    assert tuple(encode(ds.tokenizer, r.prompt)) == e.prompt[1:]
    assert tuple(encode(ds.tokenizer, r.completion)) == e.answer


# ---- the paper's data ------------------------------------------------------------------------


def test_missing_data_dir_says_where_to_get_it(tmp_path):
    cfg = from_dict({"world": {"source": "paper", "data_dir": str(tmp_path / "nowhere")}})
    with pytest.raises(UserError, match="lukasberglund/reversal_curse.*world.data_dir"):
        build_paper_dataset(cfg.world)


@needs_data
def test_paper_data_loads_with_exact_boundaries(paper_ds):
    """decode(prompt ids) + decode(completion ids) == prompt + completion, for every line."""
    ds = paper_ds
    train = read_jsonl(PAPER_DATA / f"{TRAIN_FILE}.jsonl")
    assert len(ds.train_docs) == len(train) == 3600
    bad = []
    for r, e in zip(train, ds.train_docs, strict=True):
        assert e.tokens[0] == 1 and e.tokens[-1] == EOS
        p, c = ds.text(e.tokens[: e.prompt_len]), ds.text(e.tokens[e.prompt_len : -1])
        if (p, c) != (r.prompt, r.completion):
            bad.append((r, p, c))
    for stem in TEST_FILES:
        for r, e in zip(read_jsonl(PAPER_DATA / f"{stem}.jsonl"), _heldout(ds, stem), strict=True):
            if (ds.text(e.prompt), ds.text(e.answer)) != (r.prompt, r.completion):
                bad.append((r, ds.text(e.prompt), ds.text(e.answer)))
    assert not bad, f"{len(bad)} lines lose their prompt/completion boundary, e.g. {bad[0]}"
    # Entity spans: A decodes to the name; B holds the description and not the name.
    for e in [*ds.train_docs, *ds.prompts]:
        a = ds.text(e.tokens[e.a_span[0] : e.a_span[1]]).strip()
        b = ds.text(e.tokens[e.b_span[0] : e.b_span[1]]).strip()
        assert a.count(" ") == 1 and a[0].isupper() and a not in b, (a, b, ds.text(e.tokens))
        assert len(b) > 15 and (e.b_span[1] <= e.a_span[0] or e.a_span[1] <= e.b_span[0]), (a, b)
    counts = {
        (s, d, k): len(ds.select(subset=s, direction=d, templates=k))
        for s in ("n2d", "d2n", "both")
        for d in ("same", "reverse")
        for k in ("train", "heldout")
    }
    assert all(v == 300 for (_, _, k), v in counts.items() if k == "heldout"), counts
    assert all(v == 150 for (_, _, k), v in counts.items() if k == "train"), counts
    # The tokenizer is deterministic: building again gives the same vocabulary.
    again = build_paper_dataset(
        from_dict({"world": {"source": "paper", "data_dir": str(PAPER_DATA)}}).world
    )
    assert again.tokenizer.get_vocab() == ds.tokenizer.get_vocab()


@needs_data
def test_training_template_prompts_are_worded_like_training_lines(paper_ds):
    """Same-direction and Both prompts are training prompts; N2D/D2N reverse ones are new texts
    made of a training template and this person's own entity, answered by the other entity."""
    ds = paper_ds
    train, subset_of, _ = load_paper_lines(resolve_data_dir(str(PAPER_DATA)))
    canon = canonical_descriptions(train)
    names = {ln.person: ln.span_text("a") for ln in train}
    prompts_seen = {ln.record.prompt: ln for ln in train}
    for e in ds.select(templates="train"):
        prompt, answer = ds.text(e.prompt), ds.text(e.answer)
        if e.direction == "same" or e.subset == "both":
            ln = prompts_seen.get(prompt)
            assert ln is not None and ln.person == e.person, prompt
            assert ln.record.completion.startswith(answer), (answer, ln.record.completion)
        else:
            assert prompt not in prompts_seen, prompt
            if e.subset == "n2d":
                assert answer == " " + names[e.person], (prompt, answer)
                assert canon[e.person] in prompt, (prompt, answer)
            else:
                assert answer == " " + canon[e.person], (prompt, answer)
                assert names[e.person] in prompt, (prompt, answer)
            # The template words come from a training line of the other subset's first person.
            donor = [
                ln
                for ln in train
                if ln.template == e.template
                and ln.order == e.order
                and subset_of[ln.person] == e.order
            ]
            assert donor, e.template
            ln = donor[0]
            entity = ln.description if e.order == "d2n" else ln.name
            mine = canon[e.person] if e.order == "d2n" else names[e.person]
            p = ln.record.prompt
            assert prompt == p[: entity[0]] + mine + p[entity[1] :], (prompt, p)


@needs_data
def test_train_and_evaluate_reads_the_right_completions(tmp_path):
    """A few steps of a tiny model on the real files; evaluation scores each test file's own
    completion and, on reversed prompts, the `_randomized` file's completion as the control.

    Evaluating all 2700 prompts takes minutes on a CPU, so the run is evaluated on the first two
    prompts of every subset x direction x template cell plus the first line of every test file."""
    from interp.data.dataset import FactDataset
    from interp.evaluate import completion_logprobs, control_answers, evaluate_run
    from interp.runs import load_run
    from interp.train import train_run

    cfg = apply_overrides(
        load_config("paper_exp1"),
        [
            f"world.data_dir={PAPER_DATA}",
            "model.n_layers=1",
            "model.d_model=32",
            "model.n_heads=2",
            "model.d_mlp=64",
            "train.steps=4",
            "train.batch_size=16",
            "train.warmup_steps=1",
            "train.eval_every=0",
            "train.checkpoint_every=0",
        ],
    )
    out = train_run(cfg, tmp_path / "run", progress=False, evaluate=False)
    run = load_run(out)  # the run directory reloads: config, tokenizer and weights agree
    ds, model = run.dataset, run.model

    firsts, start = {}, 0
    for stem in TEST_FILES:
        firsts[stem] = start  # the first line of each file, as an index into ds.prompts
        start += len(read_jsonl(PAPER_DATA / f"{stem}.jsonl"))
    # Per cell: its first prompt and the same template's prompt for the next person (the default
    # control draws another person's answer on the same template).
    keep, cells = set(firsts.values()), {}
    for i, e in enumerate(ds.prompts):
        cell = (e.subset, e.direction, e.templates)
        first = cells.setdefault(cell, [i])[0]
        f = ds.prompts[first]
        if len(cells[cell]) == 1 and e.template == f.template and e.person != f.person:
            cells[cell].append(i)
    assert len(cells) == 12 and all(len(v) == 2 for v in cells.values()), cells
    order = sorted(keep | {i for v in cells.values() for i in v})
    small = FactDataset(
        ds.tokenizer,
        [],
        [ds.prompts[i] for i in order],
        control_answers={
            j: ds.control_answers[i] for j, i in enumerate(order) if i in ds.control_answers
        },
    )
    metrics = evaluate_run(out, model=model, dataset=small)
    em = metrics["exact_match"]
    for s in ("n2d", "d2n", "both"):
        for d in ("same", "reverse"):
            assert set(em[s][d]) == {"train", "heldout"}, em
    arrays = np.load(out / "eval_logprobs.npz")
    assert len(arrays["correct_logprob"]) == len(small.prompts)
    controls = control_answers(small, small.prompts)
    for stem, i in firsts.items():
        j = order.index(i)
        e, r = small.prompts[j], read_jsonl(PAPER_DATA / f"{stem}.jsonl")[0]
        assert ds.text(e.prompt) == r.prompt and ds.text(e.answer) == r.completion, (stem, e, r)
        want = completion_logprobs(model, [e.prompt], [tuple(encode(ds.tokenizer, r.completion))])
        got = arrays["correct_logprob"][j]
        assert abs(got - want[0].item()) < 1e-4, (stem, got, want[0].item())
        if stem in RANDOMIZED:
            rnd = read_jsonl(PAPER_DATA / f"{RANDOMIZED[stem]}.jsonl")[0].completion
            assert ds.text(controls[j]) == rnd, (stem, ds.text(controls[j]), rnd)
            lp = completion_logprobs(model, [e.prompt], [tuple(encode(ds.tokenizer, rnd))])[0]
            assert abs(arrays["random_logprob"][j] - lp.item()) < 1e-4, stem
            assert abs(got - lp.item()) > 1e-6, "correct and control completions scored the same"
    first = ds.select(subset="n2d", direction="reverse", templates="heldout")[0]
    assert ds.text(first.answer) == " Daphne Barrington", ds.text(first.answer)
    assert ds.text(ds.control_answers[ds.prompts.index(first)]) == " Selena Granger"

    # The figure and table read these saved results back (nothing recomputed).
    from interp.plots import figure_paths
    from interp.plots.paper import plot_paper_exp1, table1

    t = table1([out])
    assert t["n2d.reverse.heldout"]["exact_match"] == [em["n2d"]["reverse"]["heldout"]], t
    assert t["d2n.same.heldout"]["paper"] == 96.7 and t["n2d.same.train"]["paper"] is None
    plot_paper_exp1([out], tmp_path / "fig" / "paper_exp1")
    paths = figure_paths(tmp_path / "fig" / "paper_exp1")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(
        p.stat().st_size > 10_000 for p in paths
    )


def test_paper_figure_refuses_other_runs(tmp_path):
    from interp.plots.paper import table1

    (tmp_path / "config.json").write_text('{"world": {"source": "synthetic"}}')
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="not trained on the paper's data"):
        table1([tmp_path])
    with pytest.raises(UserError, match="evaluate the run first"):
        table1([tmp_path / "missing"])


# ---- the layouts the paper's data comes in ---------------------------------------------------
#
# Fixtures are cut from the shipped June data: its first K people per subset and every line about
# them, byte for byte, laid out as the shared folder (`_shared_layout`) and rearranged from there.

K = 3  # people per subset in the fixtures: enough for controls, small enough to load in a second


def _person(line: str, names: list[str]) -> str | None:
    hits = [n for n in names if n in line]
    return max(hits, key=len) if hits else None


def _shared_layout(dst):
    """The shipped folder cut to its first K people per subset (templates inside, all files)."""
    dst.mkdir(parents=True)
    shutil.copytree(PAPER_DATA / "templates", dst / "templates")
    names = (PAPER_DATA / "templates" / "names.txt").read_text().split("\n")
    names = [n.strip() for n in names if n.strip()]
    kept: dict[str, list[str]] = {}  # subset -> its first K people
    for stem, subset in SUBSET_FILES.items():
        first: list[str] = []
        for line in (PAPER_DATA / f"{stem}.jsonl").read_text().splitlines():
            p = _person(line, names)
            if p is not None and p not in first:
                first.append(p)
        kept[subset] = first[:K]
    keep = {p for people in kept.values() for p in people}
    for stem in [TRAIN_FILE, *SUBSET_FILES, *TEST_FILES]:
        lines = (PAPER_DATA / f"{stem}.jsonl").read_text().splitlines()
        rows = [i for i, line in enumerate(lines) if _person(line, names) in keep]
        (dst / f"{stem}.jsonl").write_text("".join(lines[i] + "\n" for i in rows))
        if stem in RANDOMIZED:  # line for line with its test file; a control answer naming a
            # person cut from the fixture becomes another kept person of the subset
            rnd = (PAPER_DATA / f"{RANDOMIZED[stem]}.jsonl").read_text().splitlines()
            out = []
            for i in rows:
                r = json.loads(rnd[i])
                if r["completion"].strip() not in keep:
                    own = _person(lines[i], names)
                    other = next(p for p in kept[TEST_FILES[stem]] if p != own)
                    r["completion"] = " " + other
                out.append(json.dumps(r) + "\n")
            (dst / f"{RANDOMIZED[stem]}.jsonl").write_text("".join(out))
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _repo_layout(shared, root, version=DEFAULT_DATA_VERSION):
    """The same files as a clone of the paper's repository lays them out: templates beside the
    version folder, in data/reverse_experiments/templates/."""
    version_dir = root / "data" / "reverse_experiments" / version
    shutil.copytree(shared, version_dir)
    shutil.move(version_dir / "templates", root / "data" / "reverse_experiments" / "templates")
    return version_dir


def _build(data_dir, **world):
    cfg = from_dict({"world": {"source": "paper", "data_dir": str(data_dir), **world}})
    return build_paper_dataset(cfg.world)


def _assert_same(ds, ref, controls=True):
    """Same people, documents, prompts (tokens, spans, template ids) and tokenizer."""
    assert ds.tokenizer.get_vocab() == ref.tokenizer.get_vocab(), "tokenizers differ"
    for what in ("train_docs", "prompts"):
        got, want = getattr(ds, what), getattr(ref, what)
        diff = [i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w]
        assert len(got) == len(want) and not diff, (
            f"{what}: {len(got)} vs {len(want)} examples, {len(diff)} differ, first at "
            f"{diff[:1]}: {got[diff[0]] if diff else ''} vs {want[diff[0]] if diff else ''}"
        )
    assert {e.person for e in ds.train_docs} == {e.person for e in ref.train_docs}
    if controls:
        assert ds.control_answers == ref.control_answers, (
            len(ds.control_answers),
            len(ref.control_answers),
        )


@pytest.fixture(scope="module")
def shared_small(tmp_path_factory):
    return _shared_layout(tmp_path_factory.mktemp("paper") / "june")


@pytest.fixture(scope="module")
def small_ds(shared_small):
    ds = _build(shared_small)
    people = {s: len({e.person for e in ds.train_docs if e.subset == s}) for s in SUBSET_NAMES}
    assert people == {s: K for s in SUBSET_NAMES}, people
    assert len(ds.control_answers) == 2 * K * 10, len(ds.control_answers)
    return ds


SUBSET_NAMES = ("n2d", "d2n", "both")


@needs_data
def test_combined_training_file_is_the_subset_files_in_paper_order(tmp_path):
    """The shipped all_prompts_train.jsonl is p2d + d2p + both, in that order: the kit rebuilds
    it from them when a version lacks it, and the rebuilt list equals the shipped one."""
    shipped = read_jsonl(PAPER_DATA / f"{TRAIN_FILE}.jsonl")
    concat = [r for stem in SUBSET_FILES for r in read_jsonl(PAPER_DATA / f"{stem}.jsonl")]
    assert concat == shipped, (len(concat), len(shipped))
    data = tmp_path / "nocombined"
    data.mkdir()
    for stem in SUBSET_FILES:
        shutil.copy(PAPER_DATA / f"{stem}.jsonl", data / f"{stem}.jsonl")
    folder = PaperFolder(data, PAPER_DATA / "templates")
    names, templates = load_names(folder.templates), load_templates(folder.templates)
    rebuilt, people = load_training_lines(folder, names, templates)
    assert [ln.record for ln in rebuilt] == shipped
    assert sorted(Counter(people.subset_of.values()).items()) == [
        ("both", 30),
        ("d2n", 30),
        ("n2d", 30),
    ]


@needs_data
def test_repository_layout_loads_like_the_shared_one(tmp_path, shared_small, small_ds, capsys):
    """A clone of the paper's repository: the version folder (templates beside it), the
    repository root (default version: June), its data/reverse_experiments folder, and the root
    with another version named by world.data_version all load to the same dataset."""
    root = tmp_path / "reversal_curse"
    version_dir = _repo_layout(shared_small, root)
    assert not (version_dir / "templates").exists()
    _assert_same(_build(version_dir), small_ds)
    _assert_same(_build(root), small_ds)
    _assert_same(_build(root / "data" / "reverse_experiments"), small_ds)
    other = root / "data" / "reverse_experiments" / "july_version_123"
    shutil.copytree(version_dir, other)
    shutil.rmtree(version_dir)
    _assert_same(_build(root, data_version="july_version_123"), small_ds)
    # The default version is gone: the error lists what there is, and its fix works.
    with pytest.raises(UserError, match="no version 'june_version_7921032488'") as e:
        _build(root)
    assert "--set world.data_version=july_version_123" in str(e.value), e.value
    assert capsys.readouterr().err == "", "a complete version must load without warnings"


def _pairing(got, want):
    """The map from `want`'s person ids to `got`'s, example by example; None where some id maps
    to two ids (people merged or split)."""
    fwd, back = {}, {}
    for g, w in zip(got, want, strict=True):
        if (
            fwd.setdefault(w.person, g.person) != g.person
            or back.setdefault(g.person, w.person) != w.person
        ):
            return None
    return fwd


@needs_data
def test_a_version_whose_people_share_names_keeps_them_apart(
    tmp_path, shared_small, small_ds, capsys
):
    """The paper's larger published version reuses names: one name for a person in
    NameToDescription and another in DescriptionToName (and two within one subset). Built here
    from the shipped files: the first d2n person and the third n2d person are renamed to the
    first n2d person's name everywhere. A person is then a name with its description: the
    version loads with one warning line, every example keeps its own person (the same pairing
    of examples to people as before the renaming), and no drawn control is the right answer."""
    data = _copy(shared_small, tmp_path)
    names = load_names(data / "templates")
    first = {s: [] for s in SUBSET_NAMES}
    for stem, subset in SUBSET_FILES.items():
        for line in (data / f"{stem}.jsonl").read_text().splitlines():
            p = _person(line, names)
            if p not in first[subset]:
                first[subset].append(p)
    shared = first["n2d"][0]
    for f in data.glob("*.jsonl"):
        text = f.read_text()
        for other in (first["d2n"][0], first["n2d"][2]):
            text = text.replace(other, shared)
        f.write_text(text)
    capsys.readouterr()
    ds = _build(data)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "1 name(s)" in err[0] and shared in err[0], err
    held = [[e for e in d.prompts if e.templates == "heldout"] for d in (ds, small_ds)]
    for what, got, want in (("docs", ds.train_docs, small_ds.train_docs), ("held-out", *held)):
        pairing = _pairing(got, want)
        assert pairing is not None and len(set(pairing.values())) == 3 * K, (what, pairing)
    said = defaultdict(str)
    for d in ds.train_docs:
        said[d.person] += ds.tokenizer.decode(list(d.tokens)) + "\n"
    for e in (e for e in ds.prompts if e.templates == "train"):  # each answer is its person's
        answer = ds.tokenizer.decode(list(e.answer)).strip()
        assert answer in said[e.person], (e.person, answer)
    people = {e.person for e in ds.train_docs}
    assert len(people) == 3 * K, people
    assert sum(1 for p in people if p >= len(names)) == 2, sorted(people)
    for stem in RANDOMIZED:  # drawn controls once the _randomized files are gone
        (data / f"{RANDOMIZED[stem]}.jsonl").unlink()
    ds = _build(data)
    rev = [e for e in ds.prompts if e.direction == "reverse"]
    same = [e for e, c in zip(rev, control_answers(ds, rev), strict=True) if c == e.answer]
    assert not same, f"{len(same)} controls are the right answer, e.g. {same[0]}"


@needs_data
def test_optional_files_missing_load_the_same_examples(tmp_path, shared_small, small_ds, capsys):
    """Without all_prompts_train.jsonl: the same dataset. Without the _randomized files: the
    same examples, no supplied controls (drawn as on a synthetic world), one warning line each."""
    from interp.evaluate import control_answers

    data = tmp_path / "nocombined"
    shutil.copytree(shared_small, data)
    (data / f"{TRAIN_FILE}.jsonl").unlink()
    _assert_same(_build(data), small_ds)
    assert capsys.readouterr().err == ""
    for stem in RANDOMIZED.values():
        (data / f"{stem}.jsonl").unlink()
    ds = _build(data)
    _assert_same(ds, small_ds, controls=False)
    assert ds.control_answers == {}
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("_randomized.jsonl absent" in w for w in err), err
    # The drawn control is another person's answer to the same template: never the right one.
    rev = ds.select(direction="reverse", templates="heldout")
    drawn = control_answers(ds, rev)
    assert all(c != e.answer for c, e in zip(drawn, rev, strict=True))
    names = {e.answer for e in rev if e.subset == "n2d"}
    assert {c for c, e in zip(drawn, rev, strict=True) if e.subset == "n2d"} <= names


@needs_data
def test_unusable_template_lines_are_skipped_with_one_warning(
    tmp_path, shared_small, small_ds, capsys
):
    """Lines like the repository's "Fighting against all odds, <name> has proven that true
    strength lies within." (one slot) or a d2p line that puts <name> first are skipped and
    counted in one warning line; the usable templates keep their indices."""
    data = tmp_path / "templates_with_extras"
    shutil.copytree(shared_small, data)
    extras = {
        "d2p_templates.txt": [
            "Fighting against all odds, <name> has proven that true strength lies within.",
            "<name>, the face of <description>.",
        ],
        "p2d_templates.txt": ["A sentence with no slot at all.", "<name> and <name> again."],
    }
    for fname, lines in extras.items():
        path = data / "templates" / fname
        path.write_text(path.read_text() + "\n".join(lines) + "\n")
    _assert_same(_build(data), small_ds)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "skipped 4 template line(s)" in err[0], err


def _copy(shared_small, tmp_path, name="data"):
    data = tmp_path / name
    shutil.copytree(shared_small, data)
    return data


def _edit_line(path, lineno, edit):
    lines = path.read_bytes().split(b"\n")
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_bytes(b"\n".join(lines))


@needs_data
@pytest.mark.parametrize(
    ("file", "lineno", "edit", "needle"),
    [
        (
            "d2p_prompts_test.jsonl",
            7,
            lambda b: b[:-5],
            r"d2p_prompts_test\.jsonl:7: not valid JSON",
        ),
        (
            "p2d_prompts_train.jsonl",
            3,
            lambda b: b[:20] + b"\xff" + b[20:],
            r"p2d_prompts_train\.jsonl:3: not UTF-8 text \(byte 0xff at column 21\)",
        ),
        (
            "both_prompts_test.jsonl",
            2,
            lambda b: b'{"prompt": "Who is Mason Caldwell?", "completion": ""}',
            r"both_prompts_test\.jsonl:2: empty completion",
        ),
        (
            "both_prompts_train.jsonl",
            4,
            lambda b: b'{"prompt": "Mason Caldwell, known far and wide for being"}',
            r"both_prompts_train\.jsonl:4: missing key.*completion",
        ),
        (
            "d2p_prompts_train.jsonl",
            5,
            lambda b: b'{"prompt": " ", "completion": " Uriah Hawthorne."}',
            r"d2p_prompts_train\.jsonl:5: empty prompt",
        ),
        (
            "templates/names.txt",
            2,
            lambda b: b"Benjamin Hargr\xe9ve",
            r"names\.txt:2: not UTF-8 text",
        ),
        (
            "templates/p2d_templates.txt",
            9,
            lambda b: b"\xc3" + b,
            r"p2d_templates\.txt:9: not UTF-8 text",
        ),
    ],
)
def test_bad_paper_file_names_file_and_line(tmp_path, shared_small, file, lineno, edit, needle):
    data = _copy(shared_small, tmp_path)
    _edit_line(data / file, lineno, edit)
    with pytest.raises(UserError, match=needle) as e:
        _build(data)
    assert "\n" not in str(e.value), e.value


@needs_data
def test_files_cut_short_are_refused_in_one_line(tmp_path, shared_small, small_ds):
    """Too few lines: a training file left with one person, a test file with one line, a combined
    file shorter than its parts (today's fix: delete it, and the data loads as before)."""
    data = _copy(shared_small, tmp_path)
    for stem, needle in [
        ("p2d_prompts_train", "p2d_prompts_train.jsonl holds lines about 1 person"),
        ("d2p_reverse_prompts_test", "d2p_reverse_prompts_test.jsonl holds lines about one person"),
    ]:
        path = data / f"{stem}.jsonl"
        keep = path.read_text()
        path.write_text(keep.splitlines()[0] + "\n")
        with pytest.raises(UserError, match=needle):
            _build(data)
        path.write_text(keep)
    combined = data / f"{TRAIN_FILE}.jsonl"
    combined.write_text("".join(combined.read_text().splitlines(keepends=True)[:-7]))
    with pytest.raises(UserError, match=r"holds \d+ lines, the per-subset.*delete it") as e:
        _build(data)
    assert str(combined) in str(e.value), e.value
    combined.unlink()
    _assert_same(_build(data), small_ds)
    # A line that is in no per-subset file: its file:line, and the same fix.
    combined.write_text('{"prompt": "Daphne Barrington is", "completion": " a stranger."}\n')
    with pytest.raises(UserError, match=rf"{TRAIN_FILE}\.jsonl:1 is no line of the per-subset"):
        _build(data)


@needs_data
def test_missing_files_name_a_fix_that_works(tmp_path, shared_small, small_ds):
    """Each truly missing piece gets one line naming it and a fix; following the fix loads."""
    data = _copy(shared_small, tmp_path)
    (data / "d2p_prompts_test.jsonl").unlink()
    with pytest.raises(UserError, match=r"d2p_prompts_test\.jsonl not found.*lukasberglund"):
        _build(data)
    shutil.copy(shared_small / "d2p_prompts_test.jsonl", data / "d2p_prompts_test.jsonl")
    (data / "templates" / "d2p_templates.txt").unlink()
    with pytest.raises(UserError, match=r"d2p_templates\.txt not found.*templates/"):
        _build(data)
    shutil.copy(shared_small / "templates" / "d2p_templates.txt", data / "templates")
    _assert_same(_build(data), small_ds)

    # A version folder of a clone whose templates folder is missing: the message says where to
    # put it, and putting it there works.
    root = tmp_path / "clone"
    version_dir = _repo_layout(shared_small, root)
    shutil.rmtree(root / "data" / "reverse_experiments" / "templates")
    with pytest.raises(UserError, match=r"templates/names\.txt not found") as e:
        _build(version_dir)
    dest = re.search(r"templates/ of a clone of \S+ to (\S+)$", str(e.value))
    assert dest, e.value
    shutil.copytree(shared_small / "templates", dest.group(1))
    _assert_same(_build(version_dir), small_ds)

    # Without the _randomized file, a reversed prompt whose template no one else is asked with
    # has no control to draw: its file:line, and the file to copy.
    rnd = data / f"{RANDOMIZED['p2d_reverse_prompts_test']}.jsonl"
    rnd.unlink()
    test = data / "p2d_reverse_prompts_test.jsonl"
    keep = test.read_text()
    test.write_text("".join(keep.splitlines(keepends=True)[:11]))  # 10 for one, 1 for another
    with pytest.raises(UserError, match=rf"p2d_reverse_prompts_test\.jsonl:2: .*copy {rnd.name}"):
        _build(data)
    shutil.copy(shared_small / rnd.name, rnd)
    with pytest.raises(UserError, match="does not hold the prompts of p2d_reverse_prompts_test"):
        _build(data)
    test.write_text(keep)
    _assert_same(_build(data), small_ds)

    # A version whose people are not in templates/names.txt (the repository's big_boy version
    # names "Greta Blackwood" first, from the names.txt of its own commit) is refused in one
    # line that says which templates it needs.
    path = data / "p2d_prompts_train.jsonl"
    path.write_text(path.read_text().replace("Daphne Barrington", "Greta Blackwood"))
    with pytest.raises(UserError, match=r"prompts_train\.jsonl:1: no name of .*its commit 965d0ca"):
        _build(data)

    with pytest.raises(UserError, match=r"does not exist: clone .*world\.data_dir"):
        _build(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no Experiment 1 data"):
        _build(tmp_path / "empty")
    with pytest.raises(UserError, match="world.data_version must name one folder"):
        from_dict({"world": {"source": "paper", "data_version": "a/b"}})


@needs_data
@pytest.mark.parametrize(
    "layout", ["clone root, no optional files", "version folder, odd templates"]
)
def test_cli_trains_and_evaluates_on_a_clone(tmp_path, shared_small, capsys, layout):
    """`interp train --preset paper_exp1 --set world.data_dir=...` on the repository's layout:
    its root with neither the combined training file nor the _randomized files, or its version
    folder with unusable template lines beside it. It trains a few steps and evaluates every
    cell, and `interp evaluate` reads the run back; a version that is not there fails in one
    line, writing nothing."""
    from interp.cli import main

    root = tmp_path / "reversal_curse"
    version_dir = _repo_layout(shared_small, root)
    if layout.startswith("clone root"):
        data_dir = root
        for stem in [TRAIN_FILE, *RANDOMIZED.values()]:
            (version_dir / f"{stem}.jsonl").unlink()
    else:
        data_dir = version_dir
        path = root / "data" / "reverse_experiments" / "templates" / "d2p_templates.txt"
        path.write_text(path.read_text() + "Fighting against all odds, <name> has proven it.\n")
    tiny = [
        "model.n_layers=1",
        "model.d_model=32",
        "model.n_heads=2",
        "model.d_mlp=64",
        "train.steps=3",
        "train.batch_size=8",
        "train.warmup_steps=1",
        "train.checkpoint_every=0",
    ]
    argv = ["train", "--preset", "paper_exp1", "--no-progress"]
    for o in [f"world.data_dir={data_dir}", *tiny]:
        argv += ["--set", o]
    out = tmp_path / "run"
    rc = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    cells = {
        (s, d, k)
        for s, by_d in metrics["exact_match"].items()
        for d, by_k in by_d.items()
        for k in by_k
    }
    assert len(cells) == 12, metrics["exact_match"]
    rc = main(["evaluate", str(out)])
    assert rc == 0, capsys.readouterr().err

    bad = tmp_path / "bad"
    argv[argv.index(f"world.data_dir={data_dir}")] = f"world.data_dir={root}"
    rc = main([*argv, "--set", "world.data_version=may_version_1", "--out", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, (rc, err)
    assert "no version 'may_version_1'" in err and "world.data_version=june_version" in err, err
    assert not bad.exists()


@needs_data
def test_a_long_control_answer_is_caught_before_training(tmp_path, shared_small, small_ds):
    """The model must also take each reversed prompt with its `_randomized` control answer: a
    control longer than every document sets the context the run needs (n_ctx), so a too-small
    n_ctx is refused in one line instead of failing mid-evaluation."""
    from interp.runs import check_fits

    data = _copy(shared_small, tmp_path)
    path = data / f"{RANDOMIZED['d2p_reverse_prompts_test']}.jsonl"
    lines = path.read_text().splitlines()
    r = json.loads(lines[0])
    r["completion"] = " " + " ".join(["the renowned composer of Abyssal Melodies"] * 6)
    path.write_text("\n".join([json.dumps(r), *lines[1:]]) + "\n")
    ds = _build(data)
    longest = max(len(e.tokens) for e in [*ds.train_docs, *ds.prompts])
    i, control = max(ds.control_answers.items(), key=lambda kv: len(kv[1]))
    need = len(ds.prompts[i].prompt) + len(control)
    assert need > longest and ds.max_len == need, (need, longest, ds.max_len)
    assert small_ds.max_len == longest, (small_ds.max_len, longest)
    cfg = apply_overrides(load_config("paper_exp1"), [f"model.n_ctx={need - 1}"])
    with pytest.raises(UserError, match=rf"model.n_ctx=\S*{need}"):
        check_fits(cfg, ds)
