"""The identity bridge (Ma, Huang, Zhu, Sojoudi 2026, arXiv 2602.02470) as a data recipe.

Ma et al. add to the training data statements that lead from A back to A through a relation and
its inverse without ever naming B, "the wife of A's husband is A" (their "OCR" form). Trained on
"A's husband is B" plus such identities, a model answers "B's wife is ?" far more often (about
0% -> about 50% on a 1B model; their theory is for a one-layer transformer): the identity makes
the inverse relation ("the wife of <x> is ...") be computed from a representation of A's
partner, so the reversed question about B reuses it. The naive "IDN" form, "the name of A is A",
names no relation and does not help; and a model may satisfy the identity by echoing the name in
its prompt, a shortcut that would teach nothing about the relation.

On the synthetic world a fact is "A is the <role> of <title>" (A's work is <title>, its
<role> is A), so:
- `ocr`: "the <role> of the work of <A> is <A> ." (relation: A's work; inverse: the <role> of it)
- `idn`: "the name of <A> is <A> ."
One identity document per trained person (every subset), added to the training documents. The
reversed question stays the world's own ("the <role> of <title> is called" -> A), so reverse
accuracy is measured exactly as for the causal baseline.

The shortcut test (`bridge_prompts`) asks the identity of every trained person twice: with the
person's own role (the identity as trained) and with another role ("the painter of the work of
A is", when A is a composer: nothing in the world makes that A). A model that answers A as often
for the wrong role as for the right one echoes the name; a model that computes the relation
does not. `echo` (`interp.evaluate.bridge_metrics`) counts greedy answers that begin with A's
name.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from interp.data.example import Example
from interp.data.tokenizer import BOS, EOS, encode
from interp.data.world import BRIDGE_TEMPLATES, ROLES, Person, World

BRIDGES = ("", *BRIDGE_TEMPLATES)


def _render(
    tok: Tokenizer, template: str, person: Person, role: int, upto_answer: bool
) -> tuple[list[int], int, tuple[int, int]]:
    """(ids, prompt_len, span of the second A): the identity text for `person`, with <role>
    filled by ROLES[role]. With `upto_answer` the text stops after the second A."""
    ids, prompt_len, span = [BOS], -1, (-1, -1)
    seen = 0
    for word in template.split():
        if word == "<A>":
            seen += 1
            piece = encode(tok, person.name)
            if seen == 2:
                prompt_len, span = len(ids), (len(ids), len(ids) + len(piece))
            ids += piece
        else:
            ids += encode(tok, ROLES[role] if word == "<role>" else word)
    if upto_answer:
        ids = ids[: span[1]]
    else:
        ids.append(EOS)
    return ids, prompt_len, span


def bridge_documents(world: World, tok: Tokenizer, people: list[Person]) -> list[Example]:
    """One identity document per person, in the world's `bridge` form ([] when it has none).
    `a_span` is the second A (what the identity asks for); B is absent."""
    form = world.config.bridge
    if not form:
        return []
    out = []
    for p in people:
        ids, prompt_len, span = _render(tok, BRIDGE_TEMPLATES[form], p, p.role, upto_answer=False)
        out.append(
            Example(tuple(ids), prompt_len, span, (-1, -1), p.id, p.subset, "doc", order="bridge")
        )
    return out


def bridge_prompts(world: World, tok: Tokenizer, people: list[Person]) -> list[Example]:
    """The identity asked per person: with the person's own role (`templates='train'`, as
    trained) and, for the OCR form, with the next role in the world (`templates='shortcut'`,
    which no fact supports: answering A there is echoing). `direction` is 'identity'."""
    form = world.config.bridge
    if not form:
        return []
    out = []
    for p in people:
        roles = [("train", p.role)]
        if form == "ocr":
            roles.append(("shortcut", (p.role + 1) % world.config.n_roles))
        for kind, role in roles:
            ids, prompt_len, span = _render(tok, BRIDGE_TEMPLATES[form], p, role, upto_answer=True)
            out.append(
                Example(
                    tuple(ids),
                    prompt_len,
                    span,
                    (-1, -1),
                    p.id,
                    p.subset,
                    "prompt",
                    order="bridge",
                    direction="identity",
                    templates=kind,
                )
            )
    return out
