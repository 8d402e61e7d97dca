"""Run directories: what made a run, and loading it back.

A run directory holds
    config.json          the RunConfig (world, model, train)
    versions.json        python, torch, transformer-lens, interp, git commit
    tokenizer.json       the tokenizer (HF tokenizers JSON)
    train_log.jsonl      one line per logged step
    checkpoints/step_N/  model.safetensors (+ optimizer.safetensors and state.json in the latest)
    model.safetensors    the final weights (its presence marks a finished run)
    metrics.json         evaluation (exact match, log-probability test)
    analysis/            instrument results: <instrument>.json and .npz
    interp_run.json      the marker: written by `interp train`, with the config hash and the
                         torch thread count the run was made with (resume checks both)
Nothing here is ever unpickled, and every file is written atomically (`interp.files`): a reader,
or a process started after a kill, sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # not POSIX: no run lock (the kit's turns are off there too)
    fcntl = None  # type: ignore[assignment]

from transformer_lens.model_bridge import TransformerBridge

from interp.config import RunConfig, config_from_json
from interp.data.biography_dataset import build_biography
from interp.data.bridge import build_bridge
from interp.data.dataset import FactDataset, build_synthetic
from interp.data.paper import build_paper_dataset
from interp.data.retrieval import build_retrieval
from interp.data.tokenizer import load_tokenizer
from interp.encoder_decoder import EncoderDecoder
from interp.errors import UserError
from interp.files import read_json, write_json
from interp.model import build_model, load_weights, resolve_device

# What a Run's model is. The type checker sees the bridge: every instrument but behaviour and qk
# refuses the encoder-decoder before it reads `run.model` (interp.analysis.Instrument.run), and
# those two read only what both models have (a forward pass, W_Q, W_K). At run time (the tests'
# type checks) either is accepted.
if TYPE_CHECKING:
    Model = TransformerBridge
else:
    Model = TransformerBridge | EncoderDecoder


@dataclass
class Run:
    """A trained run, loaded: its config, model (in eval mode) and dataset."""

    path: Path
    config: RunConfig
    model: Model  # the bridge, or Kitouni et al.'s encoder-decoder (model.query_layers > 0)
    dataset: FactDataset

    def analysis_dir(self) -> Path:
        d = self.path / "analysis"
        d.mkdir(exist_ok=True)
        return d

    def __repr__(self) -> str:
        """One line (the default dataclass repr printed the whole model and dataset, some
        200,000 characters, when a notebook displayed `run`)."""
        c, ds = self.config, self.dataset
        n = sum(p.numel() for p in self.model.parameters())
        return (
            f"Run({str(self.path)!r}: {c.train.objective}, seed {c.train.seed}, world "
            f"{c.world.source}, {c.model.n_layers} layers x d_model {c.model.d_model}, "
            f"{n:,} parameters; {len(ds.train_docs)} documents, {len(ds.prompts)} prompts)"
        )


def build_dataset(cfg: RunConfig) -> FactDataset:
    """The dataset a config describes (`world.source`): the synthetic world, the paper's
    published files, the biography, retrieval or identity-bridge world."""
    builders = {
        "paper": build_paper_dataset,
        "biography": build_biography,
        "retrieval": build_retrieval,
        "bridge": build_bridge,
    }
    return builders.get(cfg.world.source, build_synthetic)(cfg.world)


def check_fits(cfg: RunConfig, dataset: FactDataset) -> None:
    """n_ctx must hold the longest document and prompt."""
    if cfg.model.n_ctx < dataset.max_len:
        raise UserError(
            f"model.n_ctx ({cfg.model.n_ctx}) is shorter than the longest document "
            f"({dataset.max_len} tokens): set --set model.n_ctx={dataset.max_len} or more"
        )


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformer-lens", "interp"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        out["git_commit"] = commit.stdout.strip() if commit.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out


MARKER = "interp_run.json"
_MADE_BY = "interp train"


def write_marker(path: Path, config_hash: str, torch_threads: int) -> None:
    """Mark `path` as a run made by the kit, with what resume must match (see `read_marker`)."""
    write_json(
        path / MARKER,
        {"made_by": _MADE_BY, "config_hash": config_hash, "torch_threads": torch_threads},
    )


def read_marker(path: Path) -> dict[str, Any] | None:
    """The run's marker ({"made_by", "config_hash", "torch_threads"}), or None when `path` has
    none (a folder the kit did not make, or a run made before the marker existed)."""
    try:
        d = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("made_by") == _MADE_BY else None


def is_run_dir(path: Path) -> bool:
    """Whether `path` is recognisably a run the kit made, so that --overwrite may delete it: its
    marker and config.json. A folder without the marker is never deleted, whatever it holds (a
    user's folder with copies of a run's config.json, tokenizer.json and versions.json beside
    their own files is not a run); a run made before the marker existed is removed by hand."""
    return (path / "config.json").is_file() and read_marker(path) is not None


NAME_MAX = 255  # bytes in one file name (Linux, macOS)


def check_out_path(path: Path) -> None:
    """Refuse an --out that cannot be a run directory, before anything is written: an empty
    name, or a path under a file (/dev/null/x)."""
    if str(path) == "" or str(path).strip() == "":
        raise UserError("--out is empty: name a run directory, e.g. --out runs/tiny")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"--out {str(path)!r} holds bytes that are not UTF-8 text (the run's files name it): "
            "choose a name in UTF-8"
        ) from None
    try:
        path.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop
        raise UserError(f"--out {path} cannot be followed ({e}): choose another --out") from None
    for part in path.absolute().parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(
                f"--out: the name {part[:40]}... is {len(os.fsencode(part))} bytes, over the "
                f"file system's limit of {NAME_MAX}: choose a shorter name"
            )
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent} is not a directory, so {path} cannot be created")
            break


@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold the run directory `path` for this process while the block runs: an exclusive
    `flock` on `.<name>.lock` beside it, removed as it is let go (the kernel releases the lock
    when the process dies, so a killed training never blocks the next). A second writer on the
    same directory (two `interp train --out same`, a study and a train) gets one line instead
    of logging every step twice. Where no lock file can be made (a parent that does not exist
    yet, a filesystem without flock) the block runs unlocked: the checks that follow say what is
    wrong."""
    if fcntl is None:
        yield
        return
    where = path.absolute()  # `--out .` is locked from its parent, not from inside
    lock = where.parent / f".{where.name}.lock"
    fd = None
    for _ in range(3):  # the holder unlinks the file as it lets go: lock the file that is there
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"{path} is being written by another process: wait for it to finish or "
                "choose another --out"
            ) from None
        except OSError:  # a filesystem without flock
            os.close(fd)
            fd = None
            break
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(lock)  # still holding it: no one else has this file locked
            os.close(fd)


def prepare_run_dir(path: Path, resume: bool, overwrite: bool) -> str:
    """Decide what to do with `path`: 'new', 'resume' or 'overwrite'. Refuses to clobber
    without a flag, and refuses --overwrite on anything that is not recognisably a run."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: pass one")
    check_out_path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a directory: choose another --out")
    if path.exists() and any(path.iterdir()):
        if resume:
            if not (path / "config.json").is_file():
                raise UserError(
                    f"{path} is not a run directory (no config.json): cannot --resume it"
                )
            return "resume"
        if overwrite:
            cwd, target = Path.cwd().resolve(), path.resolve()
            if cwd != target and cwd.is_relative_to(target):
                raise UserError(
                    f"--overwrite refused: the current directory {cwd} is inside {path}, which "
                    "--overwrite would delete: cd out of it first"
                )
            if not is_run_dir(path):
                raise UserError(
                    f"--overwrite refused: {path} is not a run directory made by `interp train` "
                    f"(no {MARKER} and config.json), so it may hold your files; "
                    "choose another --out or remove it yourself"
                )
            return "overwrite"
        raise UserError(
            f"run directory {path} already exists: pass --resume to continue it "
            "or --overwrite to replace it (from Python: resume=True or overwrite=True; "
            "load_run reads it as it is)"
        )
    if resume:
        raise UserError(f"nothing to resume at {path}: run without --resume to start it")
    return "new"


def remove_run_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def read_run_config(path: Path) -> RunConfig:
    """The RunConfig a run directory was made with (its config.json)."""
    return config_from_json(read_json(path / "config.json"))


def study_run(study: str | Path, objective: str | None = None, seed: int | None = None) -> Path:
    """The run directory of a study's (objective, seed): `STUDY/runs/<objective>_s<seed>_<hash>`.
    One line where none matches (naming the study's runs) or several do (runs of several
    configs share the folder: pass the run directory itself)."""
    runs = Path(study) / "runs"
    if not runs.is_dir():
        raise UserError(
            f"{study} is not a study directory (no runs/ in it): pass `interp study`'s --out"
        )
    pattern = f"{objective or '*'}_s{'*' if seed is None else seed}_*"
    found = sorted(p for p in runs.glob(pattern) if p.is_dir() and read_marker(p) is not None)
    if len(found) == 1:
        return found[0]
    have = sorted({p.name.rsplit("_", 1)[0] for p in runs.iterdir() if p.is_dir()})
    if not found:
        raise UserError(f"no run {pattern} in {runs}: it holds {', '.join(have) or 'no runs'}")
    raise UserError(
        f"{len(found)} runs match {pattern} in {runs} ({', '.join(p.name for p in found[:4])}"
        f"{', ...' if len(found) > 4 else ''}): pass objective and seed, or the run directory"
    )


def load_run(
    path: str | Path,
    checkpoint: int | None = None,
    device: str = "cpu",
    *,
    objective: str | None = None,
    seed: int | None = None,
) -> Run:
    """Load a run's config, dataset and model (final weights, or checkpoint `step`) in eval mode.

    `path` is a run directory, or, with `objective` and/or `seed`, a study's directory (its
    `--out`): `load_run("study_out", objective="mlm_u", seed=1)` (`study_run`).

    The model carries the run's tokenizer, so TransformerLens's string idioms work on it:
    `run.model.to_str_tokens("xisalo raditu is the")`, `run.model.generate("...")`.
    """
    path = Path(path)
    if objective is not None or seed is not None:
        path = study_run(path, objective, seed)
    if not path.is_dir():
        raise UserError(
            f"run directory {path} not found: train it first with `interp train --out {path}`"
        )
    cfg = read_run_config(path)
    dataset = build_dataset(cfg)
    tok = load_tokenizer(path / "tokenizer.json")
    if tok.get_vocab() != dataset.tokenizer.get_vocab():
        raise UserError(
            f"{path}/tokenizer.json does not match the world its config.json describes: "
            "the run was made by another version of the data; retrain it"
        )
    if checkpoint is None:
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise UserError(
                f"{path} has no final model.safetensors (unfinished run): "
                f"finish it with `interp train --out {path} --resume`"
            )
    else:
        weights = path / "checkpoints" / f"step_{checkpoint:06d}" / "model.safetensors"
    model = build_model(
        cfg.model, dataset.d_vocab, cfg.train.seed, resolve_device(device), dataset.tokenizer
    )
    load_weights(model, weights)
    model.eval()
    return Run(path, cfg, model, dataset)  # type: ignore[arg-type]  # see Model


STEP_DIR = re.compile(r"step_(\d{6,})")


def checkpoint_steps(path: str | Path) -> list[int]:
    """Steps of the saved checkpoints of a run, ascending. Only folders named exactly `step_N`
    count: a stray copy (`step_000400 copy`) or a half-written `.tmp_step_N` is ignored."""
    d = Path(path) / "checkpoints"
    if not d.is_dir():
        return []
    found = (STEP_DIR.fullmatch(p.name) for p in d.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
