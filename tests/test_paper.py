"""The paper's Exp. 1 data: JSONL I/O, parsing, exact token boundaries, and evaluation on it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import PAPER_DATA

from interp.config import apply_overrides, from_dict, load_config
from interp.data.dataset import build_synthetic
from interp.data.jsonl import Record, read_jsonl, to_records, write_dataset, write_jsonl
from interp.data.paper import (
    RANDOMIZED,
    TEST_FILES,
    TRAIN_FILE,
    build_paper_dataset,
    canonical_descriptions,
    load_paper_lines,
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


def test_jsonl_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "a", "completion": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError, match=r"missing\.jsonl:1: missing key.*completion"):
        read_jsonl(missing)
    notobj = tmp_path / "list.jsonl"
    notobj.write_text('["a", "b"]\n')
    with pytest.raises(UserError, match=r"list\.jsonl:1: a line must be a JSON object"):
        read_jsonl(notobj)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="is empty"):
        read_jsonl(empty)
    with pytest.raises(UserError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")


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
def test_malformed_paper_file_names_file_and_line(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(PAPER_DATA, data)
    path = data / "d2p_prompts_test.jsonl"
    path.chmod(0o644)
    lines = path.read_text().splitlines()
    lines[6] = lines[6][:-5]  # truncate line 7
    path.write_text("\n".join(lines) + "\n")
    cfg = from_dict({"world": {"source": "paper", "data_dir": str(data)}})
    with pytest.raises(UserError, match=r"d2p_prompts_test\.jsonl:7: not valid JSON"):
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
    from interp.plots.paper import plot_paper_exp1, table1

    t = table1([out])
    assert t["n2d.reverse.heldout"]["exact_match"] == [em["n2d"]["reverse"]["heldout"]], t
    assert t["d2n.same.heldout"]["paper"] == 96.7 and t["n2d.same.train"]["paper"] is None
    paths = plot_paper_exp1([out], tmp_path / "fig" / "paper_exp1")
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
