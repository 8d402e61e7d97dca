"""The control answers of the reversed log-probability test: for each prompt, another person's
answer from the same subset and template (`control_answers`, the random control) and, where the
world's people have roles, one of the same role and, on D2N, the same first-name class
(`role_matched_answers`, matched on everything but the fact). `interp.evaluate` asks the model
for both; each has its own generator seeded from the run seed, so adding one column never moves
the other's draws."""

from __future__ import annotations

import random
from collections import defaultdict

from interp.data.dataset import Example, FactDataset


def _same_cell(dataset: FactDataset) -> dict[tuple, list[Example]]:
    """The dataset's prompts by (subset, direction, template kind, template): a control answer
    comes from the same cell and template as its prompt."""
    by_key: dict[tuple, list[Example]] = defaultdict(list)
    for e in dataset.prompts:
        by_key[(e.subset, e.direction, e.templates, e.template)].append(e)
    return by_key


def control_answers(
    dataset: FactDataset, prompts: list[Example], seed: int = 0
) -> list[tuple[int, ...]]:
    """For each prompt, the answer of a random other person of the same subset (same template).

    A dataset may supply its own controls (`dataset.control_answers`, e.g. the paper's
    `_randomized` files), keyed by the prompt's index in `dataset.prompts`.
    """
    supplied = getattr(dataset, "control_answers", None) or {}
    index = {id(e): i for i, e in enumerate(dataset.prompts)}
    rng = random.Random(seed)
    by_key = _same_cell(dataset)
    out = []
    for e in prompts:
        if index.get(id(e)) in supplied:
            out.append(tuple(supplied[index[id(e)]]))
            continue
        others = [
            o
            for o in by_key[(e.subset, e.direction, e.templates, e.template)]
            if o.person != e.person and o.answer != e.answer
        ]
        out.append(rng.choice(others).answer)
    return out


ROLE_MATCHED_RULE = (
    "another person of the same subset and template with the same role (on D2N prompts also "
    "the same first-name class), drawn by its own generator seeded from the run seed"
)


def person_roles(dataset: FactDataset) -> dict[int, tuple[int, int]] | None:
    """{person id: (role, first-name class)} of the dataset's people, or None where its people
    carry no role (the retrieval world and the paper's data have none)."""
    people = dataset.people
    if not people or not all(hasattr(p, "role") for p in people):
        return None
    return {p.id: (p.role, p.first_class) for p in people}


def role_matched_answers(
    dataset: FactDataset, prompts: list[Example], seed: int = 0
) -> list[tuple[int, ...] | None] | None:
    """For each prompt, the answer of a random other person of the same subset (same template)
    with the same role, and on D2N prompts also the same first-name class: a control matched on
    everything but the fact. None for a prompt whose person has no such other; None for all
    when the world's people carry no role (`person_roles`).

    Its own generator, seeded from `seed` under another name, so `control_answers`' draws with
    the same seed are unchanged by this column."""
    roles = person_roles(dataset)
    if roles is None:
        return None
    rng = random.Random(f"role-matched:{seed}")
    by_key = _same_cell(dataset)
    out: list[tuple[int, ...] | None] = []
    for e in prompts:
        role, cls = roles.get(e.person, (None, None))
        others = [
            o
            for o in by_key[(e.subset, e.direction, e.templates, e.template)]
            if o.person != e.person
            and o.answer != e.answer
            and roles.get(o.person, (None, None))[0] == role
            and (e.subset != "d2n" or roles[o.person][1] == cls)
        ]
        out.append(rng.choice(others).answer if role is not None and others else None)
    return out
