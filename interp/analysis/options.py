"""Instrument options: one frozen dataclass per instrument, whose fields are the CLI's flags.

Each field is declared with :func:`option`, which carries its one-line help (the `--help` text)
and its admissible values (a range, or a set of choices). The dataclass validates itself on
construction (`__post_init__` calls :func:`check_options`), so an invalid `Options` cannot exist:
a notebook call and the CLI are refused with the same one-line `UserError` naming the flag and the
fix. Checks that need the run (e.g. folds <= people per subset) stay in the instrument.

    @dataclass(frozen=True)
    class ProbingOptions(Options):
        folds: int = option(5, "k of k-fold cross-validation", min=2)
        C: float = option(1.0, "inverse L2 strength", min=0, min_open=True)

    add_option_arguments(parser, ProbingOptions)   # --folds, --C with their help and defaults
    opts = options_from_args(ProbingOptions, args)  # validated

The tuned-lens pattern (its `TrainingConfig` fields are its CLI).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from interp.errors import UserError

T = TypeVar("T", bound="Options")
SEED_MAX = 2**32 - 1  # seeds are mixed into 64-bit generator seeds (seed * 1_000_003 + k)
# Bounds of an option that sets none: past them a float overflows float32 arithmetic (an lr of
# 1e308 is a RuntimeError deep in torch) and a count runs until killed.
FLOAT_MAX = 1e6
INT_MAX = 10_000_000


def option(
    default: Any,
    help: str,
    *,
    min: int | float | None = None,
    max: int | float | None = None,
    min_open: bool = False,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A field of an `Options` dataclass: its default, its one-line help and its admissible
    values (`min` <= value <= `max`, `min < value` with `min_open`, or one of `choices`; for a
    tuple field, each element). Floats must also be finite."""
    meta = {"help": help, "min": min, "max": max, "min_open": min_open, "choices": choices}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default: Options are frozen")
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The CLI flag of a field: `max_prompts` -> `--max-prompts`."""
    return "--" + name.replace("_", "-")


def _base_type(cls: type, f: dataclasses.Field[Any]) -> tuple[type, bool, bool]:
    """(element type, is a tuple, may be None) of a field, from its annotation."""
    hint = typing.get_type_hints(cls)[f.name]
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


def _check_value(name: str, value: Any, typ: type, meta: dict[str, Any]) -> None:
    where = flag(name)
    if typ is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        if typ is int and not isinstance(value, int):
            raise UserError(f"{where} must be a whole number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{where} must be a finite number, got {value!r}: pass a real value")
        lo, hi = meta["min"], meta["max"]
        if hi is None:
            hi = FLOAT_MAX if typ is float else INT_MAX
        if lo is not None and (value <= lo if meta["min_open"] else value < lo):
            op = ">" if meta["min_open"] else ">="
            raise UserError(f"{where} must be {op} {lo:g}, got {value!r}")
        if hi is not None and value > hi:
            raise UserError(f"{where} must be <= {hi:g}, got {value!r}")
    elif typ is str and not isinstance(value, str):
        raise UserError(f"{where} must be a string, got {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise UserError(
            f"{where} {value!r} unknown: use one of {', '.join(map(str, meta['choices']))}"
        )


def check_options(opts: Options) -> None:
    """Every field of `opts` has the type its annotation says and an admissible value."""
    cls = type(opts)
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        typ, is_tuple, optional = _base_type(cls, f)
        if value is None and optional:
            continue
        if is_tuple:
            if not isinstance(value, tuple) or not value:
                raise UserError(
                    f"{flag(f.name)} ({f.name}) needs at least one value, got {value!r}"
                )
            for v in value:
                _check_value(f.name, v, typ, dict(f.metadata))
        else:
            _check_value(f.name, value, typ, dict(f.metadata))


@dataclass(frozen=True)
class Options:
    """Base of every instrument's options: validated on construction, comparable as JSON."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # 1 for a float field is 1.0 (so its JSON is too)
            v = getattr(self, f.name)
            if type(v) is int and _base_type(type(self), f)[0] is float:
                object.__setattr__(self, f.name, float(v))
        check_options(self)
        self.check()

    def check(self) -> None:
        """Checks between fields; an instrument overrides it. Raise `UserError`."""

    def resolved(self: T) -> T:
        """The options with run-independent defaults filled in (what a result records); an
        instrument whose default depends on another field overrides it."""
        return self

    def to_json(self) -> dict[str, Any]:
        """The options as written in the result JSON (tuples as lists)."""
        out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any] | None) -> T:
        """Options from a dict of field values (unknown names refused with one line)."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown option(s) {unknown} for {cls.__name__}: use {sorted(known)}")
        return cls(**_tuples(d))


def add_option_arguments(p: argparse.ArgumentParser, cls: type[Options]) -> None:
    """One flag per field of `cls`, with the field's help and default."""
    for f in dataclasses.fields(cls):
        typ, is_tuple, optional = _base_type(cls, f)
        meta = f.metadata
        if typ is bool:
            p.add_argument(
                flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=meta["help"],
            )
            continue
        default = f.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "type": typ,
            "default": default,
            "help": f"{meta['help']} (default {shown})",
        }
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        if is_tuple:
            kwargs["nargs"] = "+"
        if optional:
            kwargs["metavar"] = f.name.upper()
        p.add_argument(flag(f.name), **kwargs)


def options_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The validated options the parsed flags describe."""
    return cls(**_tuples({f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}))


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """Lists (from JSON or argparse's nargs) as the tuples the frozen fields hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
