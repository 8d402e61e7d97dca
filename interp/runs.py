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
Nothing here is ever unpickled, and every file is written atomically (`atomic_path`): a reader,
or a process started after a kill, sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from transformer_lens.model_bridge import TransformerBridge

from interp.config import RunConfig, config_from_json
from interp.data.dataset import FactDataset, build_synthetic
from interp.data.tokenizer import load_tokenizer
from interp.errors import UserError
from interp.model import build_model, load_weights, resolve_device


@dataclass
class Run:
    """A trained run, loaded: its config, model (in eval mode) and dataset."""

    path: Path
    config: RunConfig
    model: TransformerBridge
    dataset: FactDataset

    def analysis_dir(self) -> Path:
        d = self.path / "analysis"
        d.mkdir(exist_ok=True)
        return d


def build_dataset(cfg: RunConfig) -> FactDataset:
    """The dataset a config describes: the synthetic world, or the paper's published files."""
    if cfg.world.source == "paper":
        from interp.data.paper import build_paper_dataset

        return build_paper_dataset(cfg.world)
    if cfg.world.source == "biography":
        from interp.data.biography_dataset import build_biography

        return build_biography(cfg.world)
    if cfg.world.source == "retrieval":
        from interp.data.retrieval import build_retrieval

        return build_retrieval(cfg.world)
    return build_synthetic(cfg.world)


def check_fits(cfg: RunConfig, dataset: FactDataset) -> None:
    """n_ctx must hold the longest document and prompt."""
    if cfg.model.n_ctx < dataset.max_len:
        raise UserError(
            f"model.n_ctx ({cfg.model.n_ctx}) is shorter than the longest document "
            f"({dataset.max_len} tokens): set --set model.n_ctx={dataset.max_len} or more"
        )


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error, rename it
    onto `path` (`os.replace`, atomic on one file system). A kill or an exception mid-write
    leaves `path` as it was; the temporary file is removed on an exception.

        with atomic_path(out / "sweep.csv") as tmp:
            tmp.write_text(text)

    The temporary name ends in `.tmp-<pid>` (so globs like `*.png` never pick it up): writers
    that infer a format from the suffix, like matplotlib, must be told the format.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinity replaced by None, numpy scalars made Python numbers.

    Python's `json` writes NaN as a bare `NaN`, which is not JSON: every other reader (jq,
    JavaScript, pandas with a strict parser) rejects the file. An undefined number (an AUROC
    when every answer is right) is written as `null`; the result says why beside it (for
    instance selective prediction's `undefined` field).
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON (NaN and infinities as null, see `strict_json`) atomically: a reader
    sees the old file or the new one, never half of one."""
    write_text(
        path, json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    )


def make_dir(path: Path, flag: str = "--out") -> None:
    """`mkdir -p path`, or one line naming the path and the fix (a path under /proc, a file in
    the way, no permission) instead of an OSError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create directory {path} ({e.strerror or e}): choose another {flag}"
        ) from None


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path} not found: is this a run directory made by `interp train`?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}): restore or retrain"
        ) from None


S = TypeVar("S", bound="Summary")


def summary_field(help: str) -> Any:
    """A field of a `Summary`: one number of the instrument's JSON summary, of the same name, with
    its one-line help (None where the result lacks the number or it is undefined)."""
    return field(default=None, metadata={"help": help})


@dataclass(frozen=True)
class Summary(Mapping[str, Any]):
    """An instrument's summary: its headline numbers as named, typed fields, and every number of
    the JSON's `summary` (the same names; the generic readers, such as the report's table) through
    the mapping view: `summary.forward_best_restoration` is `summary["forward_best_restoration"]`.

    Each instrument subclasses it with its fields, declared with `summary_field(help)` and named
    as the JSON keys, so the file on disk is the single source: `from_dict` reads a summary back
    and nothing is renamed. Numbers that come per layer or per cell (subset x direction ...) are
    reachable through `cells`, `series` and `prefixed` (and the subclasses' methods built on
    them) rather than by building key strings.
    """

    # every number of the JSON summary; compared (two summaries are equal when all numbers are)
    raw: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, hash=False)

    def __init_subclass__(cls, **kw: Any) -> None:
        """Append each field's help to the class docstring (what `summary?` shows)."""
        super().__init_subclass__(**kw)
        lines = []
        for name in cls.__dict__.get("__annotations__", {}):
            f = cls.__dict__.get(name)
            help = getattr(f, "metadata", {}).get("help")
            if help:
                lines.append(f"    {name}: {help}")
        if lines:
            head = (cls.__doc__ or "").rstrip()
            cls.__doc__ = f"{head}\n\nFields (None where undefined or absent):\n" + "\n".join(lines)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The named numbers (each a key of the JSON summary)."""
        return tuple(f.name for f in fields(cls) if f.name != "raw")

    @classmethod
    def from_dict(cls: type[S], summary: Mapping[str, Any]) -> S:
        """The typed view of a JSON summary (as `run_analysis` builds it or `read_result` reads
        it): each field takes the number of its name, None where absent. Read as the file holds
        it (`strict_json`: NaN is None), so a fresh result and one read back look the same."""
        raw = strict_json(dict(summary))
        return cls(raw=raw, **{n: raw.get(n) for n in cls.field_names()})

    def missing(self) -> list[str]:
        """The fields whose number the JSON summary does not hold at all (null counts as held)."""
        return [n for n in self.field_names() if n not in self.raw]

    def cells(self, pattern: str, **axes: Sequence[str]) -> dict[Any, Any]:
        """The numbers named `pattern.format(**cell)` for every combination of `axes`, by cell
        (the tuple of axis values in `axes` order; the bare value for one axis), leaving out
        cells the summary lacks:

            s.cells("final_pos_rank_last_layer_{subset}_{direction}",
                    subset=SUBSETS, direction=DIRECTIONS)[("n2d", "reverse")]
        """
        out: dict[Any, Any] = {}
        for combo in itertools.product(*axes.values()):
            key = pattern.format(**dict(zip(axes, combo, strict=True)))
            if key in self.raw:
                out[combo if len(combo) != 1 else combo[0]] = self.raw[key]
        return out

    def series(self, pattern: str) -> tuple[Any, ...]:
        """The numbers named `pattern.format(i)` for i = 0, 1, ... while the summary has them
        (per-layer numbers: `s.series("kl_logit_layer{}")`)."""
        out: list[Any] = []
        while (key := pattern.format(len(out))) in self.raw:
            out.append(self.raw[key])
        return tuple(out)

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """The numbers whose names start with `prefix`, by the rest of the name (per-group
        numbers whose groups only the result knows: `s.prefixed("norm_sq_share_")`)."""
        return {k[len(prefix) :]: v for k, v in self.raw.items() if k.startswith(prefix)}

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


@dataclass
class Result:
    """One instrument's result on one run: what `run_analysis` returns and `read_result` loads.

    `data` is the JSON (`options`, `summary`, and the instrument's tables); `arrays` the .npz
    (per-item arrays, indexed as the instrument's docstring says). `result["groups"]` reads the
    JSON; `result.summary` (the instrument's typed `Summary`: named headline numbers, and every
    number by name) and `result.options` are its two keys every instrument has.
    """

    instrument: str
    data: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None  # the run directory it was written to or read from

    @property
    def summary(self) -> Summary:
        """The instrument's typed summary (e.g. `interp.analysis.patching.PatchingSummary`): the
        headline numbers as named fields, every number of the JSON's summary by name."""
        from interp.analysis import INSTRUMENTS

        ins = INSTRUMENTS.get(self.instrument)
        cls = ins.summary_type() if ins is not None else Summary
        return cls.from_dict(self.summary_dict)

    @property
    def summary_dict(self) -> dict[str, Any]:
        """The JSON's summary as written: name -> number (null where undefined)."""
        out: dict[str, Any] = self.data["summary"]
        return out

    @property
    def options(self) -> dict[str, Any]:
        """The full options it was made with, as JSON (what the study's cache compares)."""
        out: dict[str, Any] = self.data["options"]
        return out

    def headline(self) -> dict[str, Any]:
        """The numbers the instrument declares as its headline (its module's HEADLINES), by
        name: what the study report prints (None where this result lacks one)."""
        from interp.analysis import INSTRUMENTS

        return {k: self.summary_dict.get(k) for k in INSTRUMENTS[self.instrument].headlines}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data


def write_result(run_dir: str | Path, result: Result) -> Path:
    """Write `result` to RUN_DIR/analysis/<instrument>.npz and .json, each atomically, the JSON
    last (its presence marks a finished analysis). Returns the JSON's path."""
    out = Path(run_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{result.instrument}.tmp.npz"
    np.savez(tmp, **result.arrays)  # type: ignore[arg-type]
    tmp.replace(out / f"{result.instrument}.npz")
    write_json(out / f"{result.instrument}.json", result.data)
    result.path = Path(run_dir)
    return out / f"{result.instrument}.json"


def read_result(run_dir: str | Path, instrument: str, arrays: bool = True) -> Result:
    """Load RUN_DIR/analysis/<instrument>.json (and with `arrays`, its .npz; never pickled)."""
    d = Path(run_dir) / "analysis"
    path = d / f"{instrument}.json"
    if not path.is_file():
        raise UserError(
            f"{path} not found: run `interp {instrument} {run_dir}` (or the study) first"
        )
    data = read_json(path)
    arr: dict[str, np.ndarray] = {}
    if arrays:
        npz = d / f"{instrument}.npz"
        if not npz.is_file():
            raise UserError(f"{npz} not found: rerun `interp {instrument} {run_dir}`")
        with np.load(npz, allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
    return Result(instrument, data, arr, Path(run_dir))


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
    marker and config.json, or (runs made before the marker) config.json, tokenizer.json and a
    versions.json naming torch. A user's folder that merely holds a config.json is not."""
    if not (path / "config.json").is_file():
        return False
    if read_marker(path) is not None:
        return True
    try:
        legacy = "torch" in json.loads((path / "versions.json").read_text())
    except (OSError, ValueError, TypeError):
        legacy = False
    return legacy and (path / "tokenizer.json").is_file()


def check_out_path(path: Path) -> None:
    """Refuse an --out that cannot be a run directory, before anything is written: an empty
    name, or a path under a file (/dev/null/x)."""
    if str(path) == "" or str(path).strip() == "":
        raise UserError("--out is empty: name a run directory, e.g. --out runs/tiny")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent} is not a directory, so {path} cannot be created")
            break


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
            if not is_run_dir(path):
                raise UserError(
                    f"--overwrite refused: {path} is not a run directory made by `interp train` "
                    f"(no {MARKER} and config.json), so it may hold your files; "
                    "choose another --out or remove it yourself"
                )
            return "overwrite"
        raise UserError(
            f"run directory {path} already exists: pass --resume to continue it "
            "or --overwrite to replace it"
        )
    if resume:
        raise UserError(f"nothing to resume at {path}: run without --resume to start it")
    return "new"


def remove_run_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def load_config(path: Path) -> RunConfig:
    return config_from_json(read_json(path / "config.json"))


def load_run(path: str | Path, checkpoint: int | None = None, device: str = "cpu") -> Run:
    """Load a run's config, dataset and model (final weights, or checkpoint `step`) in eval mode.

    The model carries the run's tokenizer, so TransformerLens's string idioms work on it:
    `run.model.to_str_tokens("xisalo raditu is the")`, `run.model.generate("...")`.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"run directory {path} not found: train it first with `interp train --out {path}`"
        )
    cfg = load_config(path)
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
    return Run(path, cfg, model, dataset)


STEP_DIR = re.compile(r"step_(\d{6,})")


def checkpoint_steps(path: str | Path) -> list[int]:
    """Steps of the saved checkpoints of a run, ascending. Only folders named exactly `step_N`
    count: a stray copy (`step_000400 copy`) or a half-written `.tmp_step_N` is ignored."""
    d = Path(path) / "checkpoints"
    if not d.is_dir():
        return []
    found = (STEP_DIR.fullmatch(p.name) for p in d.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
