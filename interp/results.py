"""Instrument results: the summary contract, and what `run_analysis` returns, writes and reads.

The contract. An instrument's headline numbers are the fields of its frozen `Summary` dataclass,
and the summariser builds that dataclass, so a number is named once. Each field is declared with
`number(help, range)`: its one-line help and the values it can take (an `interp.stats.Range`), so
the range travels with the number and every reader (the report's interval, the findings, a
figure's error bar) takes it from there, never from the number's name. Numbers that come in
families nest: a field declared with `section(Cls, help)` holds a smaller frozen `Section` of
numbers, so `forward` and `reverse` are one class used twice, not two lists of twins:

    class Effect(Section):                 # each a frozen dataclass
        mean: float | None = number("mean change over facts", REAL, headline=True)
        p: float | None = number("paired t-test p over facts", UNIT, pvalue=True)

    class UpdateSummary(Summary):
        forward: Effect = section(Effect, "one step on 'A is B', the B | A-prompt")
        reverse: Effect = section(Effect, "the same step, the A | B-prompt")

On disk a summary is flat JSON (`RUN_DIR/analysis/<instrument>.json`, key `summary`): a nested
number's key is its path joined by "_" (`forward_mean`; a field named `value` takes its section's
name alone; `section(Cls, help, suffix)` appends a suffix: `probe_a_to_b_n2d` + `_best`).
`Summary.flat()` writes those keys and `Summary.from_dict()` reads them back, so the file and the
dataclass cannot disagree. A summary may hold more numbers than it declares (per
layer, per cell): they stay in the flat JSON as details, reachable through the mapping view
(`summary["kl_logit_layer0"]`, `cells`, `series`, `prefixed`), and have no declared range, so
nothing averages them over runs.

A result is RUN_DIR/analysis/<instrument>.json (its options, its summary and its tables) plus
RUN_DIR/analysis/<instrument>.npz (per-item arrays), written atomically, the JSON last (its
presence marks a finished analysis), and never unpickled.
"""

from __future__ import annotations

import itertools
import math
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from interp.errors import UserError
from interp.files import read_json, strict_json, write_json, write_npz
from interp.stats import REAL, Range

S = TypeVar("S", bound="Summary")
T = TypeVar("T", bound="Section")


def number(help: str, range: Range = REAL, *, pvalue: bool = False, headline: bool = False) -> Any:
    """A field of a `Section` or `Summary`: one number (None where the result lacks it or it is
    undefined), its one-line help and its range. `pvalue`: listed per run and combined, never
    averaged; `headline`: the study's report and findings carry it over runs."""
    meta = {"help": help, "range": range, "pvalue": pvalue, "headline": headline}
    return field(default=None, metadata=meta)


def section(cls: type[Section], help: str, suffix: str = "") -> Any:
    """A field holding a nested `Section`: its numbers' keys start with the field's name and,
    with `suffix`, end with it (`probe_a_to_b_n2d_best` + `_final`)."""
    return field(default_factory=cls, metadata={"help": help, "section": cls, "suffix": suffix})


class Declared(NamedTuple):
    """A declared number: its flat key, help, range and kind."""

    key: str
    help: str
    range: Range
    pvalue: bool
    headline: bool


def _key(prefix: str, name: str, suffix: str = "") -> str:
    return (prefix[:-1] if name == "value" and prefix else prefix + name) + suffix


@dataclass(frozen=True)
class Section:
    """A frozen group of declared numbers (see the module docstring); every field is a
    `number` or a `section`, so an empty instance (every number None) always exists."""

    def __init_subclass__(cls, **kw: Any) -> None:
        """Append each field's help to the class docstring (what `summary?` shows)."""
        super().__init_subclass__(**kw)
        lines = []
        for name in cls.__dict__.get("__annotations__", {}):
            help = getattr(cls.__dict__.get(name), "metadata", {}).get("help")
            if help:
                lines.append(f"    {name}: {help}")
        if lines:
            head = (cls.__doc__ or "").rstrip()
            cls.__doc__ = f"{head}\n\nFields (None where undefined or absent):\n" + "\n".join(lines)

    @classmethod
    def _own(cls) -> list[Any]:
        return [f for f in fields(cls) if "help" in f.metadata]

    @classmethod
    def declared(cls, prefix: str = "", suffix: str = "") -> list[Declared]:
        """Every number this class declares, nested ones included, with its flat key."""
        out: list[Declared] = []
        for f in cls._own():
            m = f.metadata
            if m.get("section") is not None:
                out += m["section"].declared(f"{prefix}{f.name}_", m["suffix"] + suffix)
            else:
                key = _key(prefix, f.name, suffix)
                out.append(Declared(key, m["help"], m["range"], m["pvalue"], m["headline"]))
        return out

    def flat(self, prefix: str = "", suffix: str = "") -> dict[str, float]:
        """The numbers this instance holds, by flat key (None, absent, left out; a NaN, an
        undefined number, kept: it is written as null)."""
        out: dict[str, float] = {}
        for f in self._own():
            v = getattr(self, f.name)
            if f.metadata.get("section") is not None:
                out.update(v.flat(f"{prefix}{f.name}_", f.metadata["suffix"] + suffix))
            elif v is not None:
                out[_key(prefix, f.name, suffix)] = float(v)
        return out

    @classmethod
    def parse(cls: type[T], raw: Mapping[str, Any], prefix: str = "", suffix: str = "") -> T:
        """The instance whose numbers are `raw`'s at this class's keys (None where absent)."""
        kw: dict[str, Any] = {}
        for f in cls._own():
            sub = f.metadata.get("section")
            if sub is not None:
                kw[f.name] = sub.parse(raw, f"{prefix}{f.name}_", f.metadata["suffix"] + suffix)
            else:
                v = raw.get(_key(prefix, f.name, suffix))
                kw[f.name] = None if v is None else float(v)
        return cls(**kw)


@dataclass(frozen=True)
class Summary(Section, Mapping[str, Any]):
    """An instrument's summary: its declared numbers as typed (nested) fields, and every number
    of the JSON's `summary` through the mapping view (`summary["forward_mean"]`), the details
    included. Each instrument subclasses it; `from_dict` reads the flat JSON."""

    # every number of the JSON summary; compared (two summaries are equal when all numbers are)
    raw: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, hash=False)

    @classmethod
    def from_dict(cls: type[S], summary: Mapping[str, Any]) -> S:
        """The typed view of a JSON summary (as `run_analysis` builds it or `read_result` reads
        it). Read as the file holds it (`strict_json`: NaN is None), so a fresh result and one
        read back look the same."""
        raw = strict_json(dict(summary))
        parsed = cls.parse(raw)
        return cls(raw=raw, **{f.name: getattr(parsed, f.name) for f in cls._own()})

    @classmethod
    def headlines(cls) -> tuple[Declared, ...]:
        """The declared numbers the study's report and findings carry over runs."""
        return tuple(d for d in cls.declared() if d.headline)

    def value(self, key: str) -> float | None:
        """The number at flat key `key` (None where absent or undefined)."""
        v = self.raw.get(key)
        return None if v is None or not math.isfinite(float(v)) else float(v)

    def cells(self, pattern: str, **axes: Sequence[str]) -> dict[Any, Any]:
        """Detail numbers named `pattern.format(**cell)` for every combination of `axes`, by
        cell (the tuple of axis values in `axes` order; the bare value for one axis), leaving
        out cells the summary lacks:

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
        """Detail numbers named `pattern.format(i)` for i = 0, 1, ... while the summary has
        them (per-layer numbers: `s.series("kl_logit_layer{}")`)."""
        out: list[Any] = []
        while (key := pattern.format(len(out))) in self.raw:
            out.append(self.raw[key])
        return tuple(out)

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Detail numbers whose names start with `prefix`, by the rest of the name (per-group
        numbers whose groups only the result knows: `s.prefixed("norm_sq_share_")`)."""
        return {k[len(prefix) :]: v for k, v in self.raw.items() if k.startswith(prefix)}

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


def summary_json(summary: Summary, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a result's JSON holds under `summary`: the details, then the declared numbers."""
    return {**(details or {}), **summary.flat()}


def split_summary(cls: type[S], numbers: Mapping[str, Any]) -> tuple[S, dict[str, Any]]:
    """(the declared numbers as `cls`, the rest) of a table of numbers by flat key, for a
    summariser that computes a grid of numbers (every score x set) of which some are declared."""
    typed = cls.parse(numbers)
    declared = {d.key for d in cls.declared()}
    return typed, {k: v for k, v in numbers.items() if k not in declared}


@dataclass
class Result(Generic[S]):
    """One instrument's result on one run: what `run_analysis` returns and `read_result` loads.

    `data` is the JSON (`options`, `summary`, and the instrument's tables); `arrays` the .npz
    (per-item arrays, indexed as the instrument's docstring says). `result["groups"]` reads the
    JSON; `result.summary` (the instrument's typed `Summary`) and `result.options` are its two
    keys every instrument has.
    """

    instrument: str
    data: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None  # the run directory it was written to or read from
    summary_type: type[Summary] = Summary  # the instrument's Summary class

    @property
    def summary(self) -> S:
        """The instrument's typed summary (e.g. `interp.analysis.patching.PatchingSummary`)."""
        out: S = self.summary_type.from_dict(self.data["summary"])  # type: ignore[assignment]
        return out

    @property
    def options(self) -> dict[str, Any]:
        """The full options it was made with, as JSON (what the study's cache compares)."""
        out: dict[str, Any] = self.data["options"]
        return out

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data


def write_result(run_dir: str | Path, result: Result[Any]) -> Path:
    """Write `result` to RUN_DIR/analysis/<instrument>.npz and .json, each atomically, the JSON
    last (its presence marks a finished analysis). Returns the JSON's path."""
    out = Path(run_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    write_npz(out / f"{result.instrument}.npz", result.arrays)
    write_json(out / f"{result.instrument}.json", result.data)
    result.path = Path(run_dir)
    return out / f"{result.instrument}.json"


EVALUATION_FILES = ("metrics.json", "eval_logprobs.npz")  # a run's behaviour, in the run dir


def evaluation_result(
    metrics: dict[str, Any],
    arrays: dict[str, np.ndarray],
    path: Path | None,
    summary_type: type[Summary] = Summary,
) -> Result[Any]:
    """A run's evaluation (metrics.json and eval_logprobs.npz) as the behaviour instrument's
    Result: `data` is metrics.json with its exact match flattened as the summary
    (`em_<subset>_<direction>_<templates>` in the objective's own mode, `causal_...` by causal
    decoding beside it), `arrays` one row per test prompt."""
    flat = {
        f"{prefix}_{s}_{d}_{k}": float(v)
        for prefix, em in (
            ("em", metrics["exact_match"]),
            ("causal", metrics.get("causal", {}).get("exact_match", {})),
        )
        for s, by_d in em.items()
        for d, by_k in by_d.items()
        for k, v in by_k.items()
    }
    return Result(
        "behaviour", {**metrics, "summary": flat, "options": {}}, arrays, path, summary_type
    )


def read_evaluation(
    run_dir: str | Path, arrays: bool = True, summary_type: type[Summary] = Summary
) -> Result[Any]:
    """RUN_DIR's evaluation (metrics.json, and with `arrays` eval_logprobs.npz; never pickled)."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / EVALUATION_FILES[0])
    arr: dict[str, np.ndarray] = {}
    if arrays:
        npz = run_dir / EVALUATION_FILES[1]
        if not npz.is_file():
            raise UserError(
                f"{npz} not found: evaluate the run again (`interp evaluate {run_dir}`)"
            )
        with np.load(npz, allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
    return evaluation_result(metrics, arr, run_dir, summary_type)


def read_result(
    run_dir: str | Path,
    instrument: str,
    arrays: bool = True,
    summary_type: type[Summary] = Summary,
) -> Result[Any]:
    """Load RUN_DIR/analysis/<instrument>.json (and with `arrays`, its .npz; never pickled).
    `interp.analysis.read_result` passes the instrument's own Summary class."""
    d = Path(run_dir) / "analysis"
    path = d / f"{instrument}.json"
    if not path.is_file():
        raise UserError(
            f"{path} not found: run `interp {instrument} {run_dir}` (or the study) first"
        )
    data = read_json(path)
    redo = f"rerun `interp {instrument} {run_dir}`"
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise UserError(
            f"{path} holds no instrument result (no summary): the file is damaged; {redo}"
        )
    arr: dict[str, np.ndarray] = {}
    if arrays:
        npz = d / f"{instrument}.npz"
        if not npz.is_file():
            raise UserError(f"{npz} not found: {redo}")
        try:
            with np.load(npz, allow_pickle=False) as z:
                arr = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise UserError(f"{npz} is truncated or damaged ({e}): {redo}") from None
    return Result(instrument, data, arr, Path(run_dir), summary_type)
