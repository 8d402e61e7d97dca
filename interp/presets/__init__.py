"""The studies the kit runs: one module per family, each exporting `PRESETS`, a tuple of
`interp.plan.Preset`, with a findings template `<name>.md` beside it.

- default.py: `default` (make study) and `tiny` (a smoke run)
- objectives.py: `objectives` (every objective, matched forward accuracy) and `gpu`
- bridge.py: `bridge` (the identity bridge as Ma et al. built it, two model sizes)
- retrieval.py: `retrieval` (Kitouni et al.'s key-value task)
- storage.py: `storage`, `storage_gpu`, `storage_scale`, `storage_people` and `storage_tiny` (the
  biography world)

Every module of this package is a family: adding a preset is one file (a new module,
or a line in an existing one) and its template; the registry, the command line's help, the
pipeline and the findings pick it up from here.
"""

from __future__ import annotations

import importlib
import pkgutil

from interp.analysis import INSTRUMENTS
from interp.config import OBJECTIVE_NAMES
from interp.errors import UserError
from interp.plan import Plan, Preset, Use


def _families() -> dict[str, Preset]:
    out: dict[str, Preset] = {}
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "default", m.name)):
        for p in importlib.import_module(f"{__name__}.{m.name}").PRESETS:
            if p.name in out:
                raise ValueError(f"preset {p.name!r} is declared twice")
            out[p.name] = p
    return out


PRESETS: dict[str, Preset] = _families()


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown study preset {name!r}: use one of {sorted(PRESETS)}")
    return PRESETS[name]


def make_plan(
    preset: str = "default",
    overrides: list[str] | None = None,
    objectives: list[str] | None = None,
    seeds: list[int] | None = None,
    instruments: list[str] | None = None,
) -> Plan:
    """The plan of a preset with the command line's `--set`, `--objectives`, `--seeds` and
    `--instruments` (a subset: the preset's options where it has them, the defaults where it
    does not). Everything is checked here, in one line each, before anything is written: the
    names, the instruments' options, every run's config, and that each instrument can read each
    run's world."""
    p = get_preset(preset)
    for o in objectives or []:
        if o not in OBJECTIVE_NAMES:
            raise UserError(f"unknown objective {o!r}: use one of {OBJECTIVE_NAMES}")
    uses = dict(p.instruments)
    if instruments is not None:
        for i in instruments:
            if i not in INSTRUMENTS or i == "behaviour":
                known = [n for n in INSTRUMENTS if n != "behaviour"]
                raise UserError(f"unknown instrument {i!r}: use one of {known}")
        uses = {i: uses.get(i, Use(INSTRUMENTS[i].options())) for i in instruments}
    plan = Plan(
        preset=p,
        objectives=tuple(objectives or p.objectives),
        seeds=tuple(seeds if seeds is not None else p.seeds),
        instruments=uses,
        overrides=tuple(overrides or ()),
    )
    for spec in plan.runs():  # every config validated (a bad --set is one line)
        for name in spec.options:
            INSTRUMENTS[name].check_world(spec.config.world.source)
    return plan


__all__ = ["PRESETS", "Plan", "Preset", "Use", "get_preset", "make_plan"]
