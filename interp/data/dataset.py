"""The dataset a run trains and tests on, and the synthetic world's documents and prompts.

`FactDataset` holds a run's tokenised texts, each an `Example` (`interp.data.example`: token ids
with the spans of A and B, the subset and direction, so nothing downstream searches strings for
positions), with the tokenizer that made them. `build_synthetic` writes the synthetic world's
training documents (every training template of every trained order) and its test prompts (same
and reverse direction, training and held-out templates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from tokenizers import Tokenizer
from torch import Tensor

from interp.config import WorldConfig
from interp.data.example import Example
from interp.data.tokenizer import BOS, EOS, PAD, decode, encode, word_tokenizer
from interp.data.world import SUBSETS, PeopleWorld, Person, World, make_world

DIRECTIONS = ("same", "reverse")
TEMPLATE_KINDS = ("train", "heldout")


@dataclass
class FactDataset:
    """What a run trains on and is tested on, with the tokenizer that made it."""

    tokenizer: Tokenizer
    train_docs: list[Example]
    prompts: list[Example]
    people: list[Person] = field(default_factory=list)
    new_docs: list[Example] = field(default_factory=list)
    new_prompts: list[Example] = field(default_factory=list)
    world: PeopleWorld[Any] | None = None  # the world of people it was written from, if any
    bridge_prompts: list[Example] = field(default_factory=list)  # interp.data.bridge's own
    # Supplied log-prob controls, keyed by index in `prompts` (the paper's `_randomized` files);
    # prompts without one get a random same-subset answer (interp.controls.control_answers).
    control_answers: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def d_vocab(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def max_len(self) -> int:
        """Longest sequence a model must take (documents with <eos>, prompts with answers or
        with their supplied control answers)."""
        examples = [*self.train_docs, *self.prompts, *self.new_docs, *self.new_prompts]
        controls = [len(self.prompts[i].prompt) + len(c) for i, c in self.control_answers.items()]
        return max([len(e.tokens) for e in examples] + controls)

    def select(self, **where: str) -> list[Example]:
        """Prompts matching every given field, e.g. select(subset="n2d", direction="reverse")."""
        return [e for e in self.prompts if all(getattr(e, k) == v for k, v in where.items())]

    def text(self, ids: tuple[int, ...] | list[int]) -> str:
        return decode(self.tokenizer, list(ids))


def render(
    tok: Tokenizer, template: str, person: Person, upto_answer: bool
) -> tuple[list[int], int, tuple[int, int], tuple[int, int]]:
    """Fill `template` for `person`; return (ids, prompt_len, a_span, b_span).

    With `upto_answer` the text stops after the second entity (a test prompt plus its answer);
    otherwise it is the whole document with <eos>. Positions count the leading <bos>.
    """
    ids = [BOS]
    spans: dict[str, tuple[int, int]] = {}
    prompt_len = -1
    order = [w for w in template.split() if w in ("<A>", "<B>")]
    for word in template.split():
        if word in ("<A>", "<B>"):
            if word == order[1]:
                prompt_len = len(ids)
            piece = encode(tok, person.name if word == "<A>" else person.description)
            spans[word] = (len(ids), len(ids) + len(piece))
            ids += piece
            if upto_answer and word == order[1]:
                break
        else:
            ids += encode(tok, word)
    if not upto_answer:
        ids.append(EOS)
    return ids, prompt_len, spans["<A>"], spans["<B>"]


def _example(tok: Tokenizer, text: str, person: Person, kind: str, **meta: object) -> Example:
    ids, prompt_len, a_span, b_span = render(tok, text, person, upto_answer=kind == "prompt")
    return Example(tuple(ids), prompt_len, a_span, b_span, person.id, person.subset, kind, **meta)  # type: ignore[arg-type]


def trained_orders(subset: str) -> tuple[str, ...]:
    return {"n2d": ("n2d",), "d2n": ("d2n",), "both": ("n2d", "d2n"), "new": ("n2d",)}[subset]


def prompt_order(subset: str, direction: str) -> str:
    """The text order of a test prompt: 'same' is the trained order (n2d for `both`)."""
    same = "d2n" if subset == "d2n" else "n2d"
    return same if direction == "same" else ("d2n" if same == "n2d" else "n2d")


def documents(world: World, tok: Tokenizer, people: list[Person]) -> list[Example]:
    """Training documents: every training template of every order the person is trained in."""
    docs = []
    for p in people:
        for order in trained_orders(p.subset):
            for i, t in enumerate(world.templates(order, "train")):
                docs.append(_example(tok, t, p, "doc", order=order, templates="train", template=i))
    return docs


def test_prompts(world: World, tok: Tokenizer, people: list[Person]) -> list[Example]:
    """For every person: same and reverse direction, on training and held-out templates."""
    out = []
    for p in people:
        for direction in DIRECTIONS:
            order = prompt_order(p.subset if p.subset != "new" else "n2d", direction)
            for kind in TEMPLATE_KINDS:
                for i, t in enumerate(world.templates(order, kind)):
                    out.append(
                        _example(
                            tok,
                            t,
                            p,
                            "prompt",
                            order=order,
                            direction=direction,
                            templates=kind,
                            template=i,
                        )
                    )
    return out


def entity_alone(ds: FactDataset, person: Person, which: str, lead: str = "") -> Example:
    """<bos> then A alone (`which='a'`) or B alone (`which='b'`): the probes' neutral input;
    with `lead`, the words that precede the entity in training first ("the" before B), outside
    the entity's span."""
    text = person.name if which == "a" else person.description
    ids = [BOS, *(encode(ds.tokenizer, lead) if lead else [])]
    start = len(ids)
    ids += encode(ds.tokenizer, text)
    span = (start, len(ids))
    none = (-1, -1)
    return Example(
        tuple(ids),
        len(ids),
        span if which == "a" else none,
        span if which == "b" else none,
        person.id,
        person.subset,
        "entity",
        order="n2d" if which == "a" else "d2n",
    )


def build_synthetic(world_cfg: WorldConfig) -> FactDataset:
    """The dataset of the synthetic world described by `world_cfg` (deterministic)."""
    return dataset_of_world(make_world(world_cfg))


def dataset_of_world(world: World) -> FactDataset:
    """The dataset of a given world: a generated one, or one changed by hand (the
    counterfactual-pairing control rotates the N2D pairing, in
    experiments/counterfactual_pairing.py)."""
    tok = word_tokenizer(world.vocabulary())
    trained = [p for p in world.people if p.subset in SUBSETS]
    new = [p for p in world.people if p.subset == "new"]
    return FactDataset(
        tokenizer=tok,
        train_docs=documents(world, tok, trained),
        prompts=test_prompts(world, tok, trained),
        people=list(world.people),
        new_docs=documents(world, tok, new),
        new_prompts=test_prompts(world, tok, new),
        world=world,
    )


def pad_batch(
    seqs: list[tuple[int, ...]] | list[list[int]],
    pad: int = PAD,
    device: str | torch.device = "cpu",
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Right-pad token sequences into one tensor; return (tokens, lengths).

    Right padding keeps every real token at its own position, so under a causal mask the padded
    tail never changes the real positions' outputs.
    """
    lengths = [len(s) for s in seqs]
    width = max(lengths)
    out = torch.tensor([[*s, *[pad] * (width - len(s))] for s in seqs], dtype=torch.long)
    return out.to(device), torch.tensor(lengths, dtype=torch.long).to(device)
