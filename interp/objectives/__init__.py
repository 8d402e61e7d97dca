"""Training objectives, one module each, registered by name in `OBJECTIVES`.

An objective decides two things and nothing else, so every objective trains the same
`TransformerBridge` model and every instrument runs unchanged on its runs:
- `documents(docs, dataset)`: the training documents (reverse training adds reversed copies);
- `loss(model, tokens, lengths, generator)`: the loss of one batch (masking objectives build
  their inputs, labels and attention masks here from `generator`, which the trainer seeds from
  (seed, step) so a resumed run draws the same masks).
and how its model is asked (`mode`, `interp.objectives.base.Mode`): causal decoding for
next-token training, each masking objective in the mode its paper asks it (`interp.modes`).
"""

from __future__ import annotations

from interp.config import OBJECTIVE_NAMES
from interp.objectives.base import Objective
from interp.objectives.bico import BicoObjective
from interp.objectives.causal import CausalObjective
from interp.objectives.mlm_u import MlmObjective, MlmUHybridObjective, MlmUObjective
from interp.objectives.reverse import ReverseEntityObjective, ReverseTokenObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "causal": CausalObjective,  # next-token prediction: the reversal curse's setting
    "reverse_entity": ReverseEntityObjective,  # + entity-preserving reversals (Golovneva 2024)
    "reverse_token": ReverseTokenObjective,  # + token-reversed copies (Golovneva 2024's weaker one)
    "bico": BicoObjective,  # half next-token, half 15% masked bidirectional (Lv et al. 2023)
    "mlm": MlmObjective,  # 15% masked, bidirectional, no next-token batches (Kitouni's MLM)
    "mlm_u": MlmUObjective,  # U(0,1)-rate masked, bidirectional (Kitouni et al. 2024's MLM-U)
    "mlm_u_hybrid": MlmUHybridObjective,  # the kit's variant: half next-token, read at t - 1
}
assert set(OBJECTIVES) == set(OBJECTIVE_NAMES), (
    f"interp.objectives.OBJECTIVES has {sorted(OBJECTIVES)}, interp.config.OBJECTIVE_NAMES "
    f"{sorted(OBJECTIVE_NAMES)}: register an objective in both"
)
OBJECTIVE_ORDER = OBJECTIVE_NAMES  # the kit's display order


def get_objective(name: str) -> Objective:
    return OBJECTIVES[name]()


__all__ = ["OBJECTIVES", "OBJECTIVE_ORDER", "Objective", "get_objective"]
