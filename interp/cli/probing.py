"""`interp probing` (alias `interp probe`): linear probes for the other entity's attribute,
with their controls."""

from __future__ import annotations

from interp.cli.instrument import instrument_command

HELP = (
    "probe a run: A alone -> B's role and B alone -> A's first-name class, per layer and "
    "subset, with random-init and random-label controls"
)

add_arguments, run = instrument_command("probing")
