"""What a study is: one frozen `Preset` per study, and the `Plan` a command line makes of it.

A preset declares everything a study runs and says, so one pipeline (`interp.study.run_study`)
serves them all and the findings name no preset:

- the runs: a run preset of `interp.config.PRESETS`, objectives x seeds (seed s trains world s:
  the unit of replication is a (world, seed) pair), config `overrides`, per-objective overrides
  (more steps for a slower objective), and `axes` of further variation (the storage study's
  augmentation levels and model scales), each a label -> overrides table;
- the instruments, opt-in: each with its `Options` and, optionally, the objectives (or single
  "objective:seed" runs) it applies to. An instrument a preset does not name does not run, so a
  new instrument never runs on a world it cannot read;
- its findings: how they are collected from the runs (`collect`; by objective unless it says
  otherwise), the claims it judges (`claims`, from the collected findings of every preset, its
  own and others'), the tables its template names (`tables`), and the template itself,
  `interp/presets/<name>.md`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.analysis.options import Options
from interp.config import OBJECTIVE_NAMES, RunConfig, apply_overrides, load_config

PRESET_DIR = Path(__file__).resolve().parent / "presets"  # the templates <name>.md
OBJECTIVE_ORDER = OBJECTIVE_NAMES  # the order tables list the objectives in


@dataclass(frozen=True)
class Use:
    """An instrument in a preset: its options, and the runs it applies to (objectives, or
    "objective:seed" for one run; empty: every run)."""

    options: Options
    on: tuple[str, ...] = ()

    def applies(self, objective: str, seed: int) -> bool:
        return not self.on or objective in self.on or f"{objective}:{seed}" in self.on


@dataclass(frozen=True)
class Axis:
    """A further axis of runs: each label's config overrides (applied after the preset's)."""

    name: str
    values: tuple[tuple[str, tuple[str, ...]], ...]  # (label, overrides); "" for no label

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.values)


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan: its config, directory name, axis labels and instruments' options."""

    config: RunConfig
    name: str
    labels: dict[str, str]
    options: dict[str, Options]

    @property
    def group(self) -> str:
        """The runs that are replicates of one another: the axis labels and the objective."""
        return "/".join([*(v for v in self.labels.values() if v), self.config.train.objective])


Context = Mapping[str, Any]  # preset name -> its findings (the committed findings.json files)


def get_path(tree: Any, path: str) -> Any:
    """The node at a dotted `path` of nested dicts, a list's item by its index (`scale.2`);
    None where any part is absent."""
    node = tree
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def ordered(by_objective: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The items of an {objective: ...} mapping in `OBJECTIVE_ORDER`, others after."""
    rank = {o: i for i, o in enumerate(OBJECTIVE_ORDER)}
    return sorted(by_objective.items(), key=lambda kv: rank.get(kv[0], len(rank)))


@dataclass(frozen=True)
class Preset:
    """A study (see the module docstring)."""

    name: str
    help: str  # one line for `interp study --help`
    run_preset: str
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    instruments: Mapping[str, Use]
    overrides: tuple[str, ...] = ()
    objective_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    axes: tuple[Axis, ...] = ()
    own_dir: bool = True  # report, figures and findings in OUT/<name> (the default: OUT itself)
    collect: Callable[..., dict[str, Any]] | None = None  # None: by objective
    claims: Callable[[Context, str], list[Any]] | None = None  # (ctx, this preset's name)
    tables: Mapping[str, Callable[[Context, str], str]] = field(default_factory=dict)
    citations: Mapping[str, str] = field(default_factory=dict)  # source key -> reference
    reads: tuple[str, ...] = ()  # other presets' findings its template and claims read

    @property
    def template(self) -> Path | None:
        """Its findings template (interp/presets/<name>.md), or None."""
        path = PRESET_DIR / f"{self.name}.md"
        return path if path.is_file() else None

    def figures_dir(self, root: Path) -> Path:
        """Where `make study` commits its figures and findings: figures/ or figures/<name>/."""
        return root / self.name if self.own_dir else root


def run_name(cfg: RunConfig) -> str:
    """A run's directory name: `<objective>_s<seed>_<config hash>`."""
    return f"{cfg.train.objective}_s{cfg.train.seed}_{cfg.hash()}"


@dataclass(frozen=True)
class Plan:
    """A preset as a command line asks for it: its objectives, seeds and instruments (or a
    subset), with extra config overrides (`--set`)."""

    preset: Preset
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    instruments: Mapping[str, Use]
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.preset.name

    def report_dir(self, out: str | Path) -> Path:
        """OUT itself, or OUT/<name> for a preset with a directory of its own (presets sharing
        OUT share its run cache, never each other's report, figures or findings)."""
        return Path(out) / self.name if self.preset.own_dir else Path(out)

    def runs(self) -> list[RunSpec]:
        """Every run: axes x objectives x seeds. Seed s trains world s with training seed s; an
        explicit `world.seed` override puts every run in that one world. Overrides apply in
        order: the preset's, each axis label's, the objective's, the command line's."""
        base = load_config(self.preset.run_preset)
        combos: list[list[tuple[str, str, tuple[str, ...]]]] = [[]]
        for axis in self.preset.axes:
            combos = [c + [(axis.name, lab, ov)] for c in combos for lab, ov in axis.values]
        out = []
        for combo in combos:
            for o in self.objectives:
                for s in self.seeds:
                    cfg = apply_overrides(
                        base,
                        [
                            f"world.seed={s}",
                            *self.preset.overrides,
                            *(x for _, _, ov in combo for x in ov),
                            *self.preset.objective_overrides.get(o, ()),
                            *self.overrides,
                            f"train.objective={o}",
                            f"train.seed={s}",
                        ],
                    )
                    labels = {name: lab for name, lab, _ in combo}
                    prefix = "".join(f"{lab}_" for lab in labels.values() if lab)
                    options = {
                        name: use.options
                        for name, use in self.instruments.items()
                        if use.applies(o, s)
                    }
                    name = prefix + run_name(cfg)
                    out.append(RunSpec(cfg, name, labels, options))
        return out
