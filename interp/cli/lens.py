"""`interp lens`: logit lens (and tuned lens) of the answer's first token, per layer, position."""

from __future__ import annotations

from interp.cli.instrument import instrument_command

HELP = (
    "logit lens of a run: rank of the answer's first token per layer at A's last token, B's "
    "last token and the final prompt position, forward vs reverse, with controls"
)

add_arguments, run = instrument_command("lens")
