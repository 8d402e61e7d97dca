"""`interp dynamics`: exact match, probes and the logit lens over a run's saved checkpoints."""

from __future__ import annotations

from interp.cli.instrument import instrument_command

HELP = (
    "training dynamics: exact match, entity-alone probes and logit-lens ranks at every "
    "saved checkpoint of a run"
)

add_arguments, run = instrument_command("dynamics")
