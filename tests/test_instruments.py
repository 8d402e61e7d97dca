"""One shape for every instrument: Options dataclasses that are the CLI, validated in one place;
the same run_analysis signature; one registry; the study's cache compares the full options."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import pytest

from interp.analysis import INSTRUMENTS, get_instrument
from interp.analysis.options import Options, flag
from interp.cli import ALIASES, COMMANDS, command_parser, main
from interp.errors import UserError


def _subparser(name: str):
    return command_parser(ALIASES.get(name, name))


def test_every_instrument_is_a_command():
    for ins in INSTRUMENTS.values():
        names = [ins.name, *ins.aliases]
        assert any(n in COMMANDS for n in names), f"no `interp` command runs {ins.name}"


@pytest.mark.parametrize("name", list(INSTRUMENTS))
def test_every_option_field_is_a_flag_with_its_help(name):
    ins = INSTRUMENTS[name]
    cls = ins.options_type
    assert issubclass(cls, Options) and dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} must be frozen"  # type: ignore[attr-defined]
    for command in [n for n in (name, *ins.aliases) if n in COMMANDS or n in ALIASES]:
        actions = {a.dest: a for a in _subparser(command)._actions}
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help line"
            a = actions.get(f.name)
            assert a is not None, f"`interp {command}` has no flag for {cls.__name__}.{f.name}"
            assert flag(f.name) in a.option_strings, (f.name, a.option_strings)
            assert a.help and a.help.startswith(f.metadata["help"]), (f.name, a.help)
            assert a.default == f.default, (f.name, a.default, f.default)


@pytest.mark.parametrize("name", list(INSTRUMENTS))
def test_same_run_analysis_signature(name):
    sig = inspect.signature(INSTRUMENTS[name].module.run_analysis)
    params = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
    assert params == [
        ("run", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("options", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        ("write", inspect.Parameter.KEYWORD_ONLY, True),
        ("progress", inspect.Parameter.KEYWORD_ONLY, True),
    ], params
    mod = INSTRUMENTS[name].module
    assert mod.NAME == name and callable(mod.format_summary)


def _float_fields():
    for name, ins in INSTRUMENTS.items():
        cls = ins.options_type
        hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for field_name, t in hints.items():
            if t.startswith("float"):
                yield name, field_name


@pytest.mark.parametrize(("name", "field_name"), list(_float_fields()))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_options_are_refused(name, field_name, bad):
    with pytest.raises(UserError, match=f"{flag(field_name)} must be a finite number"):
        INSTRUMENTS[name].options({field_name: bad})


@pytest.mark.parametrize(("name", "field_name"), list(_float_fields()))
def test_huge_finite_options_are_refused(name, field_name):
    """1e308 is finite, and overflows float32 arithmetic deep in torch (update --lr 1e308 was a
    RuntimeError): every float option has an upper bound."""
    with pytest.raises(UserError, match=f"{flag(field_name)} must be <="):
        INSTRUMENTS[name].options({field_name: 1e308})


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["probe", "RUN", "--C", "nan"], "--C must be a finite number"),
        (["probing", "RUN", "--C", "0"], "--C must be > 0"),
        (["update", "RUN", "--lr", "inf"], "--lr must be a finite number"),
        (["patch", "RUN", "--noise-scale", "nan"], "--noise-scale must be a finite number"),
        (["selective", "RUN", "--lr", "nan"], "--lr must be a finite number"),
        (["lens", "RUN", "--tuned-heldout-frac", "1.5"], "--tuned-heldout-frac must be <= 1"),
        (["dynamics", "RUN", "--seed", "-1"], "--seed must be >= 0"),
        (["update", "RUN", "--lr", "1e308"], "--lr must be <= 10"),
        (["lens", "RUN", "--tuned-steps", "1000000000000"], "--tuned-steps must be <="),
        (["lens", "RUN", "--device", "tpu"], "--device 'tpu' unknown"),
        (["probe", "RUN", "--device", "tpu"], "--device 'tpu' unknown"),
    ],
)
def test_bad_instrument_options_fail_in_one_line(capsys, tmp_path, argv, needle):
    """Refused before the run is read (RUN need not exist) and before anything is written."""
    argv = [a if a != "RUN" else str(tmp_path / "run") for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"exit status {rc}, stderr: {err}"
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not any(tmp_path.iterdir())


def test_registry_names_and_aliases():
    assert list(INSTRUMENTS) == [
        "behaviour", "lens", "patching", "probing", "update", "dynamics", "selective", "storage",
        "qk",
    ]  # fmt: skip
    assert get_instrument("evaluate").name == "behaviour"
    assert get_instrument("patch").name == "patching"
    assert get_instrument("probe").name == "probing"
    with pytest.raises(UserError, match="unknown instrument"):
        get_instrument("telepathy")
    with pytest.raises(UserError, match="unknown option"):
        INSTRUMENTS["probing"].options({"fold": 3})


def test_options_round_trip_through_json():
    for ins in INSTRUMENTS.values():
        opts = ins.options().resolved()
        again = ins.options(json.loads(json.dumps(opts.to_json())))
        assert again == opts, (ins.name, opts, again)


def test_study_cache_never_reuses_a_non_default_analysis(tiny_run_dir, tmp_path):
    """The cache-poisoning bug: a result made with other options (`interp probe RUN --folds 2`, a
    notebook call) used to be reused by the study, because only the options the plan overrides
    were compared. The full options must match."""
    import shutil

    from interp.analysis.probing import ProbingOptions, run_analysis
    from interp.config import apply_overrides, load_config
    from interp.results import read_result
    from interp.runs import load_run
    from interp.study import execute_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run_dir)
    shutil.rmtree(run_dir / "analysis", ignore_errors=True)
    cfg = apply_overrides(load_config("tiny"), ["train.objective=causal", "train.seed=0"])
    run_analysis(load_run(run_dir), ProbingOptions(folds=2), progress=False)
    assert read_result(run_dir, "probing").options["folds"] == 2
    probing = INSTRUMENTS["probing"]
    assert probing.cached(run_dir, ProbingOptions(folds=2))
    assert not probing.cached(run_dir, ProbingOptions())

    status = execute_run(cfg.to_dict(), str(run_dir), {"probing": {}})
    assert status["analyses"] == ["probing"], f"the folds=2 result was reused: {status}"
    saved = read_result(run_dir, "probing")
    assert saved.options == ProbingOptions().to_json(), saved.options
    head = {k: saved.summary.value(k) for k in probing.headlines}
    assert len(head) == 12 and None not in head.values(), head
    assert saved.arrays["accuracy"].shape[:4] == (3, 3, 2, 3), saved.arrays["accuracy"].shape
    again = execute_run(cfg.to_dict(), str(run_dir), {"probing": {}})
    assert again["analyses"] == [], f"the study's own result was not reused: {again}"

    # A plot returns the Figure (a notebook shows it) and writes nothing unless given a path.
    from matplotlib.figure import Figure

    from interp.plots import figure_paths
    from interp.plots.probing import plot_probing

    before = sorted(p for p in tmp_path.rglob("*"))
    fig = plot_probing([run_dir])
    assert isinstance(fig, Figure) and fig.axes, fig
    assert sorted(p for p in tmp_path.rglob("*")) == before, "a plot without a path wrote files"
    assert plot_probing([run_dir], tmp_path / "fig" / "probing") is not None
    assert all(p.stat().st_size > 10_000 for p in figure_paths(tmp_path / "fig" / "probing"))


@pytest.mark.parametrize("name", list(INSTRUMENTS))
def test_every_instrument_has_a_typed_summary_with_ranges(name):
    """`result.summary` is a frozen dataclass per instrument; every number it declares (nested
    sections flattened) carries a one-line help and a range, and its flat key is unique."""
    from interp.results import Section, Summary
    from interp.stats import Range

    cls = INSTRUMENTS[name].summary_type
    assert issubclass(cls, Summary) and cls is not Summary
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} must be frozen"  # type: ignore[attr-defined]
    declared = cls.declared()
    keys = [d.key for d in declared]
    assert declared and len(keys) == len(set(keys)), keys
    for d in declared:
        assert d.help and isinstance(d.range, Range), d
        assert not d.pvalue or (d.range.low, d.range.high) == (0, 1), d
    for f in dataclasses.fields(cls):
        if f.name == "raw":
            continue
        sub = f.metadata.get("section")
        assert (sub is not None and issubclass(sub, Section)) or str(f.type) == "float | None", f
        assert f.metadata.get("help") and f"{f.name}: {f.metadata['help']}" in cls.__doc__


def test_summary_reads_numbers_by_name_and_by_cell():
    from interp.analysis.lens import LensSummary, RankByDirection
    from interp.results import Result

    raw = {
        "final_pos_rank_last_layer_all_same": 1.0,
        "final_pos_rank_last_layer_n2d_reverse": 40.5,
        "kl_logit_layer0": 2.0,
        "kl_logit_layer1": 1.0,
        "kl_logit_heldout_mean": math.nan,  # undefined: None, as the file on disk holds it
    }
    s = Result("lens", {"summary": raw, "options": {}}, {}, summary_type=LensSummary).summary
    assert type(s) is LensSummary
    assert s.final_pos_rank_last_layer_all == RankByDirection(same=1.0) and s.chance_rank is None
    assert s.kl_logit_heldout_mean is None and s["kl_logit_heldout_mean"] is None
    assert s.value("final_pos_rank_last_layer_all_same") == 1.0
    assert s.rank_last_layer() == {("n2d", "reverse"): 40.5}
    assert s.kl_by_layer() == (2.0, 1.0) and s.kl_by_layer("tuned") == ()
    assert s.prefixed("kl_logit_layer") == {"0": 2.0, "1": 1.0}
    assert dict(s) == {**raw, "kl_logit_heldout_mean": None} and len(s) == len(raw)
    assert s == LensSummary.from_dict(dict(s))
    # the declared numbers write back to exactly their keys (an absent one stays absent)
    assert s.flat() == {"final_pos_rank_last_layer_all_same": 1.0}
