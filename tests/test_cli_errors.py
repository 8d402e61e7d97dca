"""Bad input: one clear line naming the problem and the fix, exit status 2, no traceback,
and nothing written or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


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
        # every number finite, in range and fitting in memory, before anything is written
        (["train.lr=nan"], "train.lr must be a finite number"),
        (["train.lr=inf"], "train.lr must be a finite number"),
        (["train.lr=5"], "train.lr must be in (0, 1]"),
        (["train.weight_decay=nan"], "train.weight_decay must be a finite number"),
        (["train.checkpoint_every=-1"], "train.checkpoint_every must be in [0,"),
        (["train.eval_every=-5"], "train.eval_every must be in [0,"),
        (["train.steps=1000000000000"], "train.steps must be in [1,"),
        (["world.n_first_name_classes=0"], "world.n_first_name_classes must be in [1,"),
        (["world.n_new_people=-3"], "world.n_new_people must be in [0,"),
        # the biography and retrieval worlds are range-checked too (no division by zero, no hang)
        (
            ["world.source=biography", "world.n_first_name_classes=0"],
            "world.n_first_name_classes must be in [1,",
        ),
        (["world.source=retrieval", "world.title_length=1000000"], "title_length tokens, 1 to 26"),
        (["world.n_title_words=0", "world.title_length=-1"], "world.n_title_words must be"),
        (["world.title_length=-1"], "world.title_length must be in [1, 8]"),
        (["train.seed=" + "1" + "0" * 30], "train.seed must be in [0,"),
        (["world.seed=-1"], "world.seed must be in [0,"),
        (["model.d_model=60000", "model.n_heads=4"], "training this model needs about"),
        (["model.n_ctx=60000"], "training this model needs about"),
    ],
)
def test_bad_config_values(refused, tmp_path, overrides, needle):
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--out", str(out), "--no-progress"]
    for o in overrides:
        argv += ["--set", o]
    refused(argv, needle)
    assert not out.exists(), "a failed run must write nothing"
    assert not list(tmp_path.iterdir()), f"stray files: {list(tmp_path.iterdir())}"


def test_bad_config_file(refused, tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"model": {"d_model": true}}')
    refused(["train", "--config", str(bad), "--out", str(tmp_path / "r")], "model.d_model")
    bad.write_text("{not json")
    refused(["train", "--config", str(bad), "--out", str(tmp_path / "r")], "not valid JSON")
    assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_not_overwritten(refused, tiny_run_copy):
    before = {p: p.stat().st_mtime_ns for p in tiny_run_copy.rglob("*")}
    refused(["train", "--preset", "tiny", "--out", str(tiny_run_copy)], "--resume")
    after = {p: p.stat().st_mtime_ns for p in tiny_run_copy.rglob("*")}
    assert before == after


def test_truncated_and_mismatched_checkpoints(refused, tiny_run_copy):
    weights = tiny_run_copy / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    refused(["evaluate", str(tiny_run_copy)], "truncated or corrupt")
    assert weights.read_bytes() == good[: len(good) // 2], "evaluate must not rewrite weights"
    weights.write_bytes(good)
    cfg = json.loads((tiny_run_copy / "config.json").read_text())
    cfg["model"]["d_mlp"] = 128
    (tiny_run_copy / "config.json").write_text(json.dumps(cfg))
    metrics = (tiny_run_copy / "metrics.json").read_bytes()
    refused(["evaluate", str(tiny_run_copy)], "does not match the run's config")
    assert (tiny_run_copy / "metrics.json").read_bytes() == metrics


def test_missing_run_dir(refused, tmp_path):
    refused(["evaluate", str(tmp_path / "nope")], "not found")


def test_resume_of_nothing(refused, tmp_path):
    refused(["train", "--out", str(tmp_path / "r"), "--resume"], "nothing to resume")
    assert not Path(tmp_path / "r").exists()
