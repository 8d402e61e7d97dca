"""`interp patching` (alias `interp patch`): activation patching (causal tracing) of every
subset x query x corruption."""

from __future__ import annotations

from interp.cli.instrument import instrument_command

HELP = (
    "activation patching: resid_pre / attn_out / mlp_out at every layer x position, "
    "forward and reverse queries, entity-swap and embedding-noise corruptions"
)

add_arguments, run = instrument_command("patching")
