"""Files on disk: the kit's one atomic writer, strict JSON, and reading JSON with one-line errors.

Every file the kit writes goes through `atomic_path`: the bytes go to a temporary name beside the
target, which is renamed onto it only when the write finished. A reader, or a process started
after a kill, sees the old file or the new one, never half of one. This module imports nothing of
the kit but its errors, so every layer (data, model, runs, reports) can use it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file as from_safetensors
from safetensors.torch import save as save_safetensors

from interp.errors import UserError


def _file_mode() -> int:
    """0666 less the process's umask: the mode `open` gives a new file (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()
DIR_MODE = FILE_MODE | ((FILE_MODE & 0o444) >> 2)  # and x wherever r: 0755 under umask 022


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error, rename it
    onto `path` (`os.replace`, atomic on one file system). A kill or an exception mid-write
    leaves `path` as it was; the temporary file is removed on an exception.

        with atomic_path(out / "sweep.csv") as tmp:
            tmp.write_text(text)

    The temporary name ends in `.tmp-<pid>` (so globs like `*.png` never pick it up): writers
    that infer a format from the suffix, like matplotlib or `np.savez`, must be told the format
    or given an open file.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_file():  # some writers (safetensors) make 0600 files: every file the same mode
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file's bytes with its header's keys in sorted order. The library writes
    `__metadata__` from a hash map, in a different order in every process; sorted, the same
    tensors and metadata give the same bytes (and any safetensors reader reads them)."""
    raw = save_safetensors(dict(tensors), metadata=dict(metadata))
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    head = header.encode()
    head += b" " * (-len(head) % 8)  # the data section stays 8-byte aligned
    return len(head).to_bytes(8, "little") + head + raw[8 + n :]


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed .npz atomically (read back with `allow_pickle=False`)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


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


def write_json(path: str | Path, obj: Any) -> None:
    """Write strict JSON (NaN and infinities as null, see `strict_json`) atomically: a reader
    sees the old file or the new one, never half of one."""
    write_text(
        path, json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    )


def read_json(path: Path) -> Any:
    """The JSON in `path`, or one line naming the file and the fix."""
    if not path.is_file():
        raise UserError(f"{path} not found: is this a run directory made by `interp train`?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}): restore or retrain"
        ) from None
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): the "
            "file is damaged; restore or retrain"
        ) from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}): restore or retrain") from None


def make_dir(path: Path, flag: str = "--out") -> None:
    """`mkdir -p path`, or one line naming the path and the fix (a path under /proc, a file in
    the way, no permission) instead of an OSError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create directory {path} ({e.strerror or e}): choose another {flag}"
        ) from None


def reads_back(path: Path) -> bool:
    """Whether a cached file reads back whole: a JSON file parses to an object, an .npz opens
    and every array in it loads (without pickles), a .safetensors file loads every tensor. A
    study reuses a cached file only when it does (a truncated file is redone, never trusted)."""
    try:
        if path.suffix == ".json":
            return isinstance(json.loads(path.read_text()), dict)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for k in z.files:
                    z[k]
            return True
        if path.suffix == ".safetensors":
            from_safetensors(path)
            return True
        return path.is_file()
    except Exception:  # noqa: BLE001 (whatever a damaged file raises, it is not reusable)
        return False
