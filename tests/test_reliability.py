"""Nothing lost, whatever the user types or kills (issue 18): --overwrite only deletes runs, a
kill at any stage resumes (the final evaluation included), resume is bitwise whatever the
resuming process's thread count, an edited config.json is refused, every number is validated
before anything is written, damaged run folders are repaired or named, odd paths and devices
get one line, and reports, figures and sweep tables are written atomically."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import interp.model as M
import interp.train as T
from interp.cli import main
from interp.config import apply_overrides, load_config
from interp.errors import UserError
from interp.files import DIR_MODE, FILE_MODE, safetensors_bytes, write_json
from interp.model import save_weights
from interp.runs import run_lock
from interp.train import train_run


def _small(*extra: str):
    return apply_overrides(
        load_config("tiny"), ["train.steps=60", "train.checkpoint_every=20", *extra]
    )


def _diff(a: Path, b: Path) -> dict[str, float]:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return {k: float((wa[k] - wb[k]).abs().max()) for k in wa if not torch.equal(wa[k], wb[k])}


def _kill_after(monkeypatch, at_step: int) -> None:
    real = T.save_checkpoint

    def killed(run_dir, step, model, opt):
        real(run_dir, step, model, opt)
        if step == at_step:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(T, "save_checkpoint", killed)


def _killed_run(monkeypatch, out: Path, at_step: int = 40, cfg=None) -> Path:
    with monkeypatch.context() as m:
        _kill_after(m, at_step)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg or _small(), out, progress=False, evaluate=False)
    assert not (out / "model.safetensors").exists()
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """The uninterrupted, evaluated reference run of `_small()` (read-only)."""
    return train_run(_small(), tmp_path_factory.mktemp("ref") / "full", progress=False)


# 1. --overwrite deletes only a run directory


def test_overwrite_refuses_a_folder_that_is_not_a_run(refused, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "config.json").write_text('{"model": {}}')  # a config.json alone is not a run
    argv = ["train", "--preset", "tiny", "--out", str(mine), "--overwrite", "--no-progress"]
    refused(argv, "--overwrite refused")
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_a_run(tmp_path):
    run = train_run(_small("train.steps=20"), tmp_path / "run", progress=False, evaluate=False)
    (run / "stale.txt").write_text("from the old run")
    train_run(
        _small("train.steps=20", "train.seed=1"), run, overwrite=True, progress=False,
        evaluate=False,
    )  # fmt: skip
    assert not (run / "stale.txt").exists()
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 1


# 2. a kill during the final evaluation is recovered, by resume and by the study


def test_kill_during_final_evaluation_is_finished_by_resume_and_study(
    capsys, tmp_path, monkeypatch, full_run
):
    import interp.evaluate

    def killed(*a, **k):
        raise KeyboardInterrupt("simulated kill during evaluation")

    with monkeypatch.context() as m:
        m.setattr(interp.evaluate, "evaluate_run", killed)
        with pytest.raises(KeyboardInterrupt):
            train_run(_small(), tmp_path / "a", progress=False)
    run = tmp_path / "a"
    assert (run / "model.safetensors").is_file() and not (run / "metrics.json").exists()
    shutil.copytree(run, tmp_path / "b")
    capsys.readouterr()
    rc = main(["train", "--out", str(run), "--resume", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (run / "metrics.json").read_text() == (full_run / "metrics.json").read_text()
    from interp.study import execute_run

    status = execute_run(_small().to_dict(), str(tmp_path / "b"), {})
    assert status["trained"], status
    assert (tmp_path / "b" / "metrics.json").read_text() == (full_run / "metrics.json").read_text()


# 3. bitwise resume whatever the resuming process's thread count


def test_resume_uses_the_thread_count_the_run_was_started_with(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = train_run(_small(), tmp_path / "one", progress=False, evaluate=False)
        killed = _killed_run(monkeypatch, tmp_path / "killed")
        assert json.loads((killed / "interp_run.json").read_text())["torch_threads"] == 1
        torch.set_num_threads(2)
        two = train_run(_small(), tmp_path / "two", progress=False, evaluate=False)
        assert _diff(one, two), "1 and 2 threads gave the same bits: the test cannot fail"
        train_run(None, killed, resume=True, progress=False, evaluate=False)
        assert torch.get_num_threads() == 2, "resume must restore the caller's thread count"
    finally:
        torch.set_num_threads(before)
    diffs = _diff(one, killed)
    assert not diffs, f"1-thread run resumed under 2 threads differs from 1-thread run: {diffs}"


# 4. resume after editing config.json is refused


def test_resume_refuses_an_edited_config(refused, tmp_path, monkeypatch):
    run = _killed_run(monkeypatch, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["lr"] = 1e-3
    (run / "config.json").write_text(json.dumps(cfg))
    log = (run / "train_log.jsonl").read_bytes()
    refused(["train", "--out", str(run), "--resume"], "config.json was changed")
    assert (run / "train_log.jsonl").read_bytes() == log
    assert not (run / "model.safetensors").exists()


# 5. every number finite, in range and fitting in memory, before anything is written (the bad
# values themselves are in tests/test_cli_errors.py)


def test_nan_literal_in_a_config_file(refused, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"train": {"lr": NaN}}')
    refused(["train", "--config", str(cfg), "--out", str(tmp_path / "r")], "finite")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b'{"train": {"lr": 0.001}}\xff\xfe', "not UTF-8"), (b"[" * 100_000, "nested too deeply")],
)
def test_config_file_not_utf8_or_deeply_nested(refused, tmp_path, content, needle):
    cfg = tmp_path / "c.json"
    cfg.write_bytes(content)
    refused(["train", "--config", str(cfg), "--out", str(tmp_path / "r")], needle)
    assert not (tmp_path / "r").exists()


# 6. damaged run folders: checked before anything changes, repaired or named


def test_corrupt_optimizer_is_named_before_anything_changes(refused, tmp_path, monkeypatch):
    run = _killed_run(monkeypatch, tmp_path / "run")
    opt = run / "checkpoints" / "step_000040" / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    log = (run / "train_log.jsonl").read_bytes()
    refused(["train", "--out", str(run), "--resume"], "optimizer.safetensors")
    assert (run / "train_log.jsonl").read_bytes() == log, "the log changed before the refusal"


def test_damaged_killed_run_is_repaired_to_the_same_bits(tmp_path, monkeypatch, full_run):
    run = _killed_run(monkeypatch, tmp_path / "run")
    shutil.copytree(run / "checkpoints" / "step_000040", run / "checkpoints" / "step_000040 copy")
    (run / "tokenizer.json").unlink()
    with open(run / "train_log.jsonl", "a") as f:
        f.write('{"step": 50, "lo')  # a kill mid-line
    train_run(None, run, resume=True, progress=False, evaluate=False)
    assert not _diff(full_run, run), _diff(full_run, run)
    assert (run / "tokenizer.json").read_text() == (full_run / "tokenizer.json").read_text()
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60, steps


def test_truncated_final_weights_are_rebuilt(tmp_path, full_run):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    w = run / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    train_run(None, run, resume=True, progress=False)
    assert not _diff(full_run, run), _diff(full_run, run)
    assert (run / "metrics.json").read_text() == (full_run / "metrics.json").read_text()


# 7. odd paths and options


@pytest.mark.parametrize(
    ("out", "needle"),
    [("", "--out is empty"), ("/dev/null/x", "is not a directory"), ("/proc/x", "/proc/x")],
)
def test_odd_out_paths(refused, out, needle):
    argv = ["train", "--preset", "tiny", "--set", "train.steps=2", "--out", out, "--no-progress"]
    refused(argv, needle)
    assert not Path("/proc/x").exists()


def test_out_dot_in_an_empty_folder(tmp_path, monkeypatch):
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    train_run(_small("train.steps=5"), ".", progress=False, evaluate=False)
    assert (here / "model.safetensors").is_file() and (here / "interp_run.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"], list(tmp_path.iterdir())
    train_run(_small("train.steps=5", "train.seed=1"), ".", overwrite=True, progress=False)
    assert json.loads((here / "config.json").read_text())["train"]["seed"] == 1
    assert (here / "metrics.json").is_file() and Path.cwd() == here


def test_study_out_under_proc_and_bad_set_write_nothing(refused, tmp_path):
    refused(["study", "--preset", "tiny", "--out", "/proc/st", "--device", "cpu"], "/proc")
    out = tmp_path / "st"
    argv = ["study", "--preset", "tiny", "--out", str(out), "--set", "train.lr=nan"]
    refused(argv, "train.lr must be a finite number")
    assert not out.exists(), "a refused study must not write its runs/ folder"
    (tmp_path / "f").write_text("a file")  # --figures-dir naming a file: found before any run
    argv = ["study", "--preset", "tiny", "--out", str(out), "--figures-dir", str(tmp_path / "f")]
    refused(argv, "choose another --figures-dir")
    assert not out.exists()
    refused(["study", "--preset", "storage_tiny", "--out", "/proc/st"], "/proc/st")


@pytest.mark.parametrize("command", ["evaluate", "study", "train"])
def test_unknown_device(refused, tmp_path, full_run, command):
    argv = {
        "evaluate": ["evaluate", str(full_run)],
        "study": ["study", "--preset", "tiny", "--out", str(tmp_path / "s")],
        "train": ["train", "--preset", "tiny", "--out", str(tmp_path / "r")],
    }[command]
    refused([*argv, "--device", "tpu"], "--device 'tpu' unknown")
    assert not list(tmp_path.iterdir())


def test_resume_on_another_device_is_allowed(capsys, tmp_path, monkeypatch, full_run):
    run = _killed_run(monkeypatch, tmp_path / "run")
    rc = main(["train", "--out", str(run), "--resume", "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert not _diff(full_run, run)


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"preset": "tiny", "seeds": 3}', '"seeds" must be a non-empty list'),
        ('{"preset": "tiny", "weight_decay": [[0.1]]}', '"weight_decay" must be a non-empty'),
        ('{"preset": 7}', '"preset" must be a preset name'),
        ('{"preset": "tiny", "seeds": [0, 0]}', '"seeds" lists 0 more than once'),
    ],
)
def test_malformed_sweep_grid(refused, tmp_path, grid, needle):
    path = tmp_path / "grid.json"
    path.write_text(grid)
    refused(["sweep", "--grid", str(path), "--out", str(tmp_path / "sw")], needle)
    assert not (tmp_path / "sw").exists()


# 9. reports, figures and sweep tables are written atomically


def _half_then_kill(real):
    """A writer killed half-way: it writes half of what it was given, then the kill arrives."""

    def write(self, data, *a, **k):
        real(self, data[: len(data) // 2], *a, **k)
        raise KeyboardInterrupt("simulated kill mid-write")

    return write


def test_report_killed_mid_write_keeps_the_old_one(
    tmp_path, monkeypatch, full_run, quick_bootstrap
):
    from interp import report
    from interp.findings.collect import Study
    from interp.presets import make_plan

    monkeypatch.setattr(report, "draw_figures", lambda *a, **k: [])  # the report's text only
    plan = make_plan("tiny", objectives=["causal"], seeds=[0], instruments=["probing"])
    study = Study.of(plan, tmp_path / "study")
    shutil.copytree(full_run, study.runs[0].path)
    out = plan.report_dir(tmp_path / "study")
    report.write_report(study, out, log=lambda s: None)
    old = (out / "report.md").read_text()
    real = Path.write_text
    monkeypatch.setattr(
        Path,
        "write_text",
        lambda self, data, *a, **k: (
            _half_then_kill(real)(self, data, *a, **k)
            if self.name.startswith("report.md")
            else real(self, data, *a, **k)
        ),
    )
    with pytest.raises(KeyboardInterrupt):
        report.write_report(Study.of(plan, tmp_path / "study"), out, log=lambda s: None)
    assert (out / "report.md").read_text() == old, "report.md was left half-written"


def test_figure_killed_mid_write_keeps_the_old_one(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from interp.plots import figure_paths, finish

    finish(plt.figure(), tmp_path / "fig")
    png = figure_paths(tmp_path / "fig")[0]
    old = png.read_bytes()
    real = Figure.savefig

    def killed(self, fname, *a, **k):
        real(self, fname, *a, **k)
        Path(fname).write_bytes(Path(fname).read_bytes()[:100])
        raise KeyboardInterrupt("simulated kill mid-write")

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        finish(plt.figure(figsize=(3, 2)), tmp_path / "fig")
    assert png.read_bytes() == old, "fig.png was left half-written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"]


def test_sweep_csv_killed_mid_write_keeps_the_old_one(tmp_path, monkeypatch, full_run):
    import csv

    from interp.sweep import aggregate

    cells = [({"seeds": 0, "weight_decay": 0.1}, {}), ({"seeds": 1, "weight_decay": 0.1}, {})]
    aggregate(cells, [full_run, full_run], tmp_path)
    old = (tmp_path / "sweep.csv").read_text()

    def killed(self, rows):
        raise KeyboardInterrupt("simulated kill mid-write")

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        aggregate(cells, [full_run, full_run], tmp_path)
    assert (tmp_path / "sweep.csv").read_text() == old, "sweep.csv was left half-written"


def test_a_second_writer_on_a_run_directory_gets_one_line(tmp_path):
    """While one process holds RUN (its lock beside it), a train into RUN is refused in one line
    before anything is written; once the holder lets go the lock file is gone and RUN is free."""
    out = tmp_path / "run"
    with run_lock(out):
        assert (tmp_path / ".run.lock").is_file()
        fd = os.open(tmp_path / ".run.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held
        os.close(fd)
        with pytest.raises(UserError, match="being written by another process") as e:
            train_run(load_config("tiny"), out, progress=False)
        assert len(str(e.value).splitlines()) == 1
        assert not out.exists()
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_every_file_written_has_the_same_mode(tmp_path):
    """safetensors makes its files 0600; the atomic writer gives every file the mode a new file
    gets under the process's umask (0644 under 022), weights included."""
    save_weights(torch.nn.Linear(2, 2), tmp_path / "model.safetensors")
    write_json(tmp_path / "x.json", {"a": 1})
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert set(modes.values()) == {FILE_MODE}, {k: oct(v) for k, v in modes.items()}


def test_a_users_folder_named_like_the_kits_temporary_one_is_kept(tmp_path):
    """The run directory is built under a temporary name of its own beside --out: a user's
    folder called `.run.tmp-init` is never deleted, and the run gets mkdir's mode (not 0700)."""
    mine = tmp_path / ".run.tmp-init"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    train_run(_small("train.steps=2"), tmp_path / "run", progress=False, evaluate=False)
    assert (mine / "thesis.tex").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.tmp-init", "run"]
    assert (tmp_path / "run").stat().st_mode & 0o777 == DIR_MODE


def _full_disk(monkeypatch, module, after: int = 0, safetensors_error: bool = False):
    """`module.save_file` fails with a full disk after `after` good calls (the error a write
    on a full file system raises: OSError ENOSPC, or safetensors' own wrapping of it)."""
    real, calls = module.save_file, []

    def save(tensors, path, *a, **k):
        calls.append(path)
        if len(calls) > after:
            Path(path).write_bytes(b"half")  # what a full disk leaves: a partial file
            if safetensors_error:
                raise SafetensorError(
                    "Error while serializing: I/O error: No space left on device (os error 28)"
                )
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(module, "save_file", save)


@pytest.mark.parametrize("where", ["checkpoint", "final weights"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    refused, tmp_path, monkeypatch, full_run, where
):
    """A full disk at a checkpoint (the optimizer state, after the weights) or at the final
    weights: one line naming the disk and the fix, no temporary file or folder left, and after
    space is freed --resume finishes to the uninterrupted run's bits."""
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--set", "train.steps=60", "train.checkpoint_every=20"]
    with monkeypatch.context() as m:
        if where == "checkpoint":
            _full_disk(m, T, after=1)  # the second checkpoint's optimizer state
        else:
            _full_disk(m, M, after=3, safetensors_error=True)
        refused([*argv, "--no-progress", "--out", str(out)], "the disk is full")
    left = [p.name for p in out.rglob("*") if "tmp" in p.name]
    assert not left, left
    assert main(["train", "--no-progress", "--out", str(out), "--resume"]) == 0
    assert not _diff(out, full_run)


def test_safetensors_with_metadata_are_the_same_bytes_in_every_process():
    """The tuned lens is saved with metadata, which the safetensors library writes from a hash
    map (another order in each process); `safetensors_bytes` sorts the header: this process and
    another give the same bytes."""
    tensors = "{'weight': torch.ones(3), 'bias': torch.zeros(2)}"
    meta = "{k: str(i) for i, k in enumerate('abcdefghij')}"
    code = (
        "import hashlib, torch; from interp.files import safetensors_bytes; "
        f"print(hashlib.sha256(safetensors_bytes({tensors}, {meta})).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = hashlib.sha256(
        safetensors_bytes(
            {"weight": torch.ones(3), "bias": torch.zeros(2)},
            {k: str(i) for i, k in enumerate("abcdefghij")},
        )
    ).hexdigest()
    assert other.stdout.strip() == here, (other.stdout, here)


def test_a_lookalike_of_an_old_run_is_never_overwritten(refused, tmp_path, full_run):
    """Copies of a run's config.json, tokenizer.json and versions.json beside a user's own
    file: no marker, so --overwrite refuses and the folder stays as it was."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for f in ("config.json", "tokenizer.json", "versions.json"):
        shutil.copy(full_run / f, notes / f)
    (notes / "thesis.txt").write_text("mine")
    argv = ["train", "--preset", "tiny", "--no-progress", "--out", str(notes), "--overwrite"]
    refused(argv, "--overwrite refused")
    assert sorted(p.name for p in notes.iterdir()) == [
        "config.json", "thesis.txt", "tokenizer.json", "versions.json"
    ]  # fmt: skip


def test_a_damaged_thread_count_in_the_marker_is_refused(refused, tmp_path, monkeypatch):
    out = _killed_run(monkeypatch, tmp_path / "run")
    marker = json.loads((out / "interp_run.json").read_text())
    marker["torch_threads"] = 100_000
    (out / "interp_run.json").write_text(json.dumps(marker))
    log = (out / "train_log.jsonl").read_bytes()
    refused(["train", "--no-progress", "--out", str(out), "--resume"], "100000 torch threads")
    assert (out / "train_log.jsonl").read_bytes() == log


def test_a_slurm_sweep_without_slurm_writes_nothing(refused, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    out = tmp_path / "sw"
    argv = ["sweep", "--preset", "tiny", "--seeds", "0", "--executor", "slurm", "--out", str(out)]
    refused(argv, "this machine has no sbatch")
    assert not out.exists()


@pytest.mark.parametrize(
    ("json_bytes", "npz_bytes", "needle"),
    [
        (b"\xff\xfe{}", None, "is not UTF-8 text"),
        (b"[]", None, "holds no instrument result"),
        (b'{"x": 1}', None, "holds no instrument result"),
        (b'{"summary": {}}', b"PK\x03\x04 cut short", "is truncated or damaged"),
    ],
)
def test_read_result_names_a_damaged_file_in_one_line(tmp_path, json_bytes, npz_bytes, needle):
    from interp.analysis import read_result

    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "probing.json").write_bytes(json_bytes)
    (tmp_path / "analysis" / "probing.npz").write_bytes(npz_bytes or b"")
    with pytest.raises(UserError, match=needle) as e:
        read_result(tmp_path, "probing")
    assert "\n" not in str(e.value) and "probing" in str(e.value), e.value


def test_odd_out_names(refused, tmp_path, monkeypatch):
    """A name over 255 bytes, bytes that are not UTF-8, a symlink loop: one line, nothing
    written; a legal 250-character name trains (the temporary name was longer than the limit);
    `--out .. --overwrite` from inside the run is refused before anything is deleted."""
    monkeypatch.chdir(tmp_path)
    base = ["train", "--preset", "tiny", "--no-progress", "--set", "train.steps=4"]
    refused([*base, "--out", "a" * 256], "over the file system's limit of 255")
    refused([*base, "--out", os.fsdecode(b"run\xff\xfe")], "not UTF-8 text")
    os.symlink("loop1", "loop2")
    os.symlink("loop2", "loop1")
    refused([*base, "--out", "loop1"], "cannot be followed")
    assert sorted(os.listdir(tmp_path)) == ["loop1", "loop2"]
    assert main([*base, "train.checkpoint_every=2", "--out", "b" * 250]) == 0
    monkeypatch.chdir(tmp_path / ("b" * 250) / "checkpoints")
    refused([*base, "--out", "..", "--overwrite"], "cd out of it first")
    assert (tmp_path / ("b" * 250) / "model.safetensors").is_file()
