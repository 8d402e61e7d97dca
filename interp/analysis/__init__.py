"""The instruments. Each module is a set of pure functions (model, tokens or cache and options
in; tensors or a small result dataclass out) plus one entry point with the same shape everywhere:

    result = module.run_analysis(run, options=None, *, write=True, progress=True)

`options` is the module's frozen `Options` dataclass (its fields are the CLI's flags, validated on
construction); `result` is an `interp.runs.Result` (the JSON as `result.data`, with
`result.summary`, the module's typed `Summary` dataclass of its headline numbers, and
`result.options`, and the arrays), written with `write` to
`RUN_DIR/analysis/<name>.json` and `.npz` by `interp.runs.write_result` and read back by
`interp.runs.read_result`. Every module also has `format_summary(result)` (the text the CLI
prints), `NAME` and `HEADLINES` (the summary numbers the report prints).

One name per instrument, for its module's registry entry, CLI subcommand, JSON file and figure:

- `lens`: logit lens and tuned lens (:mod:`interp.analysis.lens`)
- `patching`: batched activation patching, causal tracing (:mod:`interp.analysis.patching`)
- `probing`: linear probes on entity-alone representations (:mod:`interp.analysis.probing`)
- `update`: the gradient-update test (:mod:`interp.analysis.update`)
- `dynamics`: the instruments over a run's checkpoints (:mod:`interp.analysis.dynamics`)
- `selective`: selective prediction, ASPIRE (:mod:`interp.analysis.selective`)

The registry imports nothing heavy: a module is imported when an instrument is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interp.analysis.options import Options
    from interp.results import Result, Summary
    from interp.runs import Run


@dataclass(frozen=True)
class Instrument:
    """One instrument: its name, the module that implements it, its options class."""

    name: str  # module entry, CLI subcommand, analysis/<name>.json, the figure's name
    module: str  # the module with run_analysis, format_summary, NAME and HEADLINES
    options_class: str  # the name of its Options dataclass in `module`
    summary_class: str  # the name of its Summary dataclass (interp.runs.Summary) in `module`
    aliases: tuple[str, ...] = ()  # older CLI subcommand names that still work

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def options(self, values: dict[str, Any] | None = None) -> Options:
        """Its options with `values` (field name -> value) over the defaults, validated."""
        cls: type[Options] = getattr(self.load(), self.options_class)
        return cls.from_dict(values)

    def summary_type(self) -> type[Summary]:
        """Its typed summary class (what `Result.summary` is built as)."""
        cls: type[Summary] = getattr(self.load(), self.summary_class)
        return cls

    @property
    def headlines(self) -> tuple[str, ...]:
        """The summary numbers the report prints for it."""
        return tuple(self.load().HEADLINES)

    def run(self, run: Run, options: Options | None = None, **kw: Any) -> Result:
        result: Result = self.load().run_analysis(run, options, **kw)
        return result

    def format_summary(self, result: Result) -> str:
        return str(self.load().format_summary(result))


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        Instrument("lens", "interp.analysis.lens", "LensOptions", "LensSummary"),
        Instrument(
            "patching", "interp.analysis.patching", "PatchingOptions", "PatchingSummary", ("patch",)
        ),
        Instrument(
            "probing", "interp.analysis.probing", "ProbingOptions", "ProbingSummary", ("probe",)
        ),
        Instrument("update", "interp.analysis.update", "UpdateOptions", "UpdateSummary"),
        Instrument("dynamics", "interp.analysis.dynamics", "DynamicsOptions", "DynamicsSummary"),
        Instrument(
            "selective", "interp.analysis.selective", "SelectiveOptions", "SelectiveSummary"
        ),
    )
}


def get_instrument(name: str) -> Instrument:
    """The instrument called `name` (or one of its aliases)."""
    from interp.errors import UserError

    for i in INSTRUMENTS.values():
        if name == i.name or name in i.aliases:
            return i
    raise UserError(f"unknown instrument {name!r}: use one of {list(INSTRUMENTS)}")


def available_instruments() -> tuple[str, ...]:
    """The instruments whose module imports (an instrument in progress may be absent)."""
    out = []
    for name, ins in INSTRUMENTS.items():
        try:
            ins.load()
            out.append(name)
        except ModuleNotFoundError as e:
            if e.name != ins.module:
                raise
    return tuple(out)
