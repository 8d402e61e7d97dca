"""Training objectives, one module each, registered by name in `OBJECTIVES`.

An objective decides two things and nothing else, so every objective trains the same
`TransformerBridge` model and every instrument runs unchanged on its runs:
- `documents(docs, dataset)`: the training documents (reverse training adds reversed copies);
- `loss(model, tokens, lengths, generator)`: the loss of one batch (masking objectives build
  their inputs, labels and attention masks here from `generator`, which the trainer seeds from
  (seed, step) so a resumed run draws the same masks).
Test-time use is always causal, left-to-right generation.
"""

from __future__ import annotations

from interp.objectives.base import Objective
from interp.objectives.causal import CausalObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "causal": CausalObjective,
}


def get_objective(name: str) -> Objective:
    return OBJECTIVES[name]()


__all__ = ["OBJECTIVES", "Objective", "get_objective"]
