"""The instruments, and their one registry. Each instrument module is a set of pure functions
(model, tokens or cache and options in; tensors or a small result dataclass out) plus one entry
point with the same shape everywhere:

    result = module.run_analysis(run, options=None, *, write=True, progress=True)

`options` is the module's frozen `Options` dataclass (its fields are the CLI's flags, validated on
construction); `result` is an `interp.results.Result` whose `summary` is the module's typed
`Summary` (its declared numbers, each with its help and range), written with `write` to
`RUN_DIR/analysis/<name>.json` and `.npz` and read back by `read_result`. Every module also has
`format_summary(result)` (the text the CLI prints).

One name per instrument, for its registry entry, CLI subcommand, JSON file and figure:

- `behaviour`: exact match and the reversed log-prob test (:mod:`interp.analysis.behaviour`;
  written when training ends, as metrics.json and eval_logprobs.npz; CLI `interp evaluate`)
- `lens`: logit lens and tuned lens (:mod:`interp.analysis.lens`)
- `patching`: batched activation patching, causal tracing (:mod:`interp.analysis.patching`)
- `probing`: linear probes on entity-alone representations (:mod:`interp.analysis.probing`)
- `update`: the gradient-update test (:mod:`interp.analysis.update`)
- `dynamics`: the instruments over a run's checkpoints (:mod:`interp.analysis.dynamics`)
- `selective`: selective prediction, ASPIRE (:mod:`interp.analysis.selective`)
- `storage`: where a fact is stored, on the biography world (:mod:`interp.analysis.storage`)
- `qk`: the symmetry of each head's W_Q W_K^T, Saponati et al. (:mod:`interp.analysis.qk`)

Each entry says which worlds (`world.source`) the instrument can read; a run of another world is
refused in one line, never analysed into numbers that mean nothing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from interp.analysis import (
    behaviour,
    dynamics,
    lens,
    patching,
    probing,
    qk,
    selective,
    storage,
    update,
)
from interp.analysis.options import Options
from interp.errors import UserError
from interp.files import reads_back
from interp.results import Result, Summary
from interp.results import read_result as _read_analysis
from interp.runs import Run

FACT_WORLDS = ("synthetic", "paper")  # worlds of people with facts A is B
# The instruments that read Kitouni et al.'s encoder-decoder (model.query_layers > 0): behaviour
# asks it in its own (masked) mode, qk scores its content stream; the rest read a causal stack.
ENCODER_DECODER_READS = ("behaviour", "qk")


@dataclass(frozen=True)
class Instrument:
    """One instrument: its name, module, options and summary classes, and the worlds it reads."""

    name: str  # module entry, CLI subcommand, analysis/<name>.json, the figure's name
    module: ModuleType  # with run_analysis and format_summary
    options_type: type[Options]
    summary_type: type[Summary]
    sources: tuple[str, ...]  # the world sources it can read
    aliases: tuple[str, ...] = ()  # other CLI subcommand names that work

    def options(self, values: dict[str, Any] | None = None) -> Options:
        """Its options with `values` (field name -> value) over the defaults, validated."""
        return self.options_type.from_dict(values)

    @property
    def headlines(self) -> tuple[str, ...]:
        """The flat keys of the summary numbers the report and findings carry over runs."""
        return tuple(d.key for d in self.summary_type.headlines())

    def check_world(self, source: str) -> None:
        """Refuse a run of a world this instrument cannot read, in one line."""
        if source not in self.sources:
            raise UserError(
                f"`{self.name}` reads the {' or '.join(self.sources)} world, not a "
                f"world.source={source} run: use {_reader_of(source)}"
            )

    def run(self, run: Run, options: Options | None = None, **kw: Any) -> Result[Any]:
        self.check_world(run.config.world.source)
        if run.config.model.query_layers and self.name not in ENCODER_DECODER_READS:
            raise UserError(
                f"`{self.name}` reads a single causal stack, and {run.path} is the "
                f"encoder-decoder (model.query_layers={run.config.model.query_layers}): "
                f"of the instruments only {' and '.join(ENCODER_DECODER_READS)} read it"
            )
        result: Result[Any] = self.module.run_analysis(run, options, **kw)
        return result

    def read(self, run_dir: str | Path, arrays: bool = True) -> Result[Any]:
        """Its result on RUN_DIR, typed."""
        if self.name == behaviour.NAME:
            return behaviour.read(run_dir, arrays)
        return _read_analysis(run_dir, self.name, arrays, self.summary_type)

    def cached(self, run_dir: Path, options: Options) -> bool:
        """Whether RUN_DIR holds this instrument's result made with exactly `options`: every
        field, defaults included, so a result made with other options (a CLI call with
        --templates heldout, a notebook call) is never reported as a study's."""
        if self.name == behaviour.NAME:
            return all(reads_back(run_dir / f) for f in behaviour.FILES)
        path = run_dir / "analysis" / f"{self.name}.json"
        if not path.is_file() or not path.with_suffix(".npz").is_file():
            return False
        for p in (path, path.with_suffix(".npz")):
            if not reads_back(p):  # a damaged result is redone, never reused
                print(f"{p}: does not read back whole; running {self.name} again", file=sys.stderr)
                return False
        saved = json.loads(path.read_text()).get("options")
        return bool(saved == options.resolved().to_json())

    def files(self, run_dir: Path) -> list[Path]:
        """Where its result on RUN_DIR is written."""
        if self.name == behaviour.NAME:
            return [run_dir / f for f in behaviour.FILES]
        return [run_dir / "analysis" / f"{self.name}.{x}" for x in ("json", "npz")]

    def format_summary(self, result: Result[Any]) -> str:
        return str(self.module.format_summary(result))


def _reader_of(source: str) -> str:
    readers = [f"`interp {i.name}`" for i in INSTRUMENTS.values() if source in i.sources]
    return " or ".join(readers) or "the behaviour only (`interp evaluate`)"


ALL_WORLDS = ("synthetic", "paper", "biography", "retrieval", "bridge")
INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        Instrument("behaviour", behaviour, behaviour.BehaviourOptions, behaviour.BehaviourSummary,
                   ALL_WORLDS, ("evaluate",)),
        Instrument("lens", lens, lens.LensOptions, lens.LensSummary, FACT_WORLDS),
        Instrument("patching", patching, patching.PatchingOptions, patching.PatchingSummary,
                   FACT_WORLDS, ("patch",)),
        Instrument("probing", probing, probing.ProbingOptions, probing.ProbingSummary,
                   FACT_WORLDS, ("probe",)),
        Instrument("update", update, update.UpdateOptions, update.UpdateSummary, FACT_WORLDS),
        Instrument("dynamics", dynamics, dynamics.DynamicsOptions, dynamics.DynamicsSummary,
                   FACT_WORLDS),
        Instrument("selective", selective, selective.SelectiveOptions, selective.SelectiveSummary,
                   FACT_WORLDS),
        Instrument("storage", storage, storage.StorageOptions, storage.StorageSummary,
                   ("biography",)),
        Instrument("qk", qk, qk.QkOptions, qk.QkSummary, ALL_WORLDS),
    )
}  # fmt: skip


def get_instrument(name: str) -> Instrument:
    """The instrument called `name` (or one of its aliases)."""
    for i in INSTRUMENTS.values():
        if name == i.name or name in i.aliases:
            return i
    raise UserError(f"unknown instrument {name!r}: use one of {list(INSTRUMENTS)}")


def read_result(run_dir: str | Path, instrument: str, arrays: bool = True) -> Result[Any]:
    """An instrument's result on a run, with its typed summary: the notebook's reader."""
    return get_instrument(instrument).read(run_dir, arrays)
