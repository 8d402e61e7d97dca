"""Ordinary next-token prediction over whole documents: the objective under which the reversal
curse appears (Berglund et al. 2023). The loss covers prompt and completion alike."""

from __future__ import annotations

from interp.objectives.base import Objective


class CausalObjective(Objective):
    """The base objective's next-token loss on the documents as given."""

    name = "causal"
