"""`interp update`: the gradient-update test on a trained run's held-out new facts."""

from __future__ import annotations

from interp.cli.instrument import instrument_command

HELP = (
    "gradient-update test: k optimiser steps on each new fact 'A is B' from the trained "
    "weights; Delta log p forward vs reverse against controls, where the change lands per "
    "layer, and which parameter groups carry it"
)

add_arguments, run = instrument_command("update")
