"""Instrument results: what `run_analysis` returns and writes, and what readers load back.

A result is RUN_DIR/analysis/<instrument>.json (its options, its summary and its tables) plus
RUN_DIR/analysis/<instrument>.npz (per-item arrays), written atomically, the JSON last (its
presence marks a finished analysis), and never unpickled.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from interp.errors import UserError
from interp.files import read_json, strict_json, write_json, write_npz

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
    write_npz(out / f"{result.instrument}.npz", result.arrays)
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
