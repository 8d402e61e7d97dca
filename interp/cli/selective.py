"""`interp selective`: selective prediction with learned self-evaluation (ASPIRE) on a run."""

from __future__ import annotations

from interp.cli.instrument import instrument_command

HELP = (
    "selective prediction (ASPIRE): do likelihood, a probe or a learned self-evaluation "
    "know when an answer is wrong?"
)

add_arguments, run = instrument_command("selective")
