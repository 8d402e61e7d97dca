"""Bad input: one clear line naming the problem and the fix, exit status 2, no traceback,
and nothing written or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interp.cli import main


def _fails(capsys, argv: list[str], needle: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"exit status {rc} for {argv}, stderr: {err}"
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, f"expected one line, got: {err!r}"
    assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.colour=1"], "unknown config key 'model.colour'"),
        (["nonsense=1"], "unknown config key 'nonsense'"),
        (["train.steps=abc"], "train.steps must be int"),
        (["train.lr=fast"], "train.lr must be float"),
        (["model.d_model=30"], "not divisible by model.n_heads"),
        (["model.n_ctx=8"], "model.n_ctx (8) is shorter than the longest document"),
        (["train.objective=telepathy"], "train.objective 'telepathy' unknown"),
    ],
)
def test_bad_config_values(capsys, tmp_path, overrides, needle):
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--out", str(out), "--no-progress"]
    for o in overrides:
        argv += ["--set", o]
    _fails(capsys, argv, needle)
    assert not out.exists(), "a failed run must write nothing"
    assert not list(tmp_path.iterdir()), f"stray files: {list(tmp_path.iterdir())}"


def test_bad_config_file(capsys, tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"model": {"d_model": true}}')
    _fails(capsys, ["train", "--config", str(bad), "--out", str(tmp_path / "r")], "model.d_model")
    bad.write_text("{not json")
    _fails(capsys, ["train", "--config", str(bad), "--out", str(tmp_path / "r")], "not valid JSON")
    assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_not_overwritten(capsys, tiny_run_copy):
    before = {p: p.stat().st_mtime_ns for p in tiny_run_copy.rglob("*")}
    _fails(capsys, ["train", "--preset", "tiny", "--out", str(tiny_run_copy)], "--resume")
    after = {p: p.stat().st_mtime_ns for p in tiny_run_copy.rglob("*")}
    assert before == after


def test_truncated_and_mismatched_checkpoints(capsys, tiny_run_copy):
    weights = tiny_run_copy / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    _fails(capsys, ["evaluate", str(tiny_run_copy)], "truncated or corrupt")
    assert weights.read_bytes() == good[: len(good) // 2], "evaluate must not rewrite weights"
    weights.write_bytes(good)
    cfg = json.loads((tiny_run_copy / "config.json").read_text())
    cfg["model"]["d_mlp"] = 128
    (tiny_run_copy / "config.json").write_text(json.dumps(cfg))
    metrics = (tiny_run_copy / "metrics.json").read_bytes()
    _fails(capsys, ["evaluate", str(tiny_run_copy)], "does not match the run's config")
    assert (tiny_run_copy / "metrics.json").read_bytes() == metrics


def test_missing_run_dir(capsys, tmp_path):
    _fails(capsys, ["evaluate", str(tmp_path / "nope")], "not found")


def test_resume_of_nothing(capsys, tmp_path):
    _fails(capsys, ["train", "--out", str(tmp_path / "r"), "--resume"], "nothing to resume")
    assert not Path(tmp_path / "r").exists()
