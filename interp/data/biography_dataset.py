"""The biography world's dataset: biographies, QA documents and QA prompts as `Example`s.

Training documents are every person's `bio_multiplicity` biographies plus, for the `qa_train`
half ("mixed training", Allen-Zhu & Li Part 3.1), one QA document per forward question and the
inverse question. Test prompts are the same QA texts for every person: extraction on `qa_test`
people (never questioned in training) is the held-out measure; `direction` "same" marks a
forward question (name -> attribute), "reverse" the inverse one (work -> name).
"""

from __future__ import annotations

from tokenizers import Tokenizer

from interp.config import WorldConfig
from interp.data.biography import (
    INVERSE_QUESTION,
    LABELS,
    QUESTIONS,
    BiographyWorld,
    BioPerson,
    _fill,
    _render,
    biography_pieces,
    make_biography_world,
)
from interp.data.dataset import FactDataset
from interp.data.example import Example
from interp.data.tokenizer import word_tokenizer
from interp.data.world import ROLES


def _doc(
    tok: Tokenizer,
    pieces: list[tuple[str, str | None]],
    person: BioPerson,
    kind: str,
    **meta: object,
) -> Example:
    """An `Example` from labelled pieces: a document (with <eos>) or a QA prompt whose answer is
    the last piece. `a_span` is the first name occurrence, `b_span` the first work span."""
    ids, spans = _render(tok, pieces, eos=kind == "doc")
    first: dict[str, tuple[int, int]] = {}
    for label, s, e in spans:
        first.setdefault(label, (s, e))
    if kind == "prompt":
        prompt_len = spans[-1][1]
    else:
        prompt_len = len(ids)
    return Example(
        tuple(ids),
        prompt_len,
        first.get("name", (-1, -1)),
        first.get("work", (-1, -1)),
        person.id,
        person.subset,
        kind,
        spans=tuple(spans),
        **meta,  # type: ignore[arg-type]
    )


def qa_examples(
    world: BiographyWorld, tok: Tokenizer, person: BioPerson, kind: str
) -> list[Example]:
    """The person's QA texts: one forward question per label (direction "same", order "n2d",
    `template` = index in LABELS) and the inverse one (direction "reverse", order "d2n")."""
    out = []
    name = (person.name, "name")
    for i, label in enumerate(LABELS):
        value = ROLES[person.role] if label == "role" else person.value(world, label)
        pieces = _fill(QUESTIONS[label], {"<N>": name, "<V>": (value, label)})
        meta = dict(order="n2d", direction="same", templates="train", template=i)
        out.append(_doc(tok, pieces, person, kind, **meta))  # type: ignore[arg-type]
    pieces = _fill(INVERSE_QUESTION, {"<W>": (person.description, "work"), "<N>": name})
    meta = dict(order="d2n", direction="reverse", templates="train", template=len(LABELS))
    out.append(_doc(tok, pieces, person, kind, **meta))  # type: ignore[arg-type]
    return out


def biography_documents(world: BiographyWorld, tok: Tokenizer) -> list[Example]:
    """Every biography of every person, then the QA documents of the `qa_train` people."""
    docs = []
    for p in world.people:
        for j, bio in enumerate(world.biographies(p)):
            pieces = biography_pieces(world, p, bio)
            meta = dict(order="bio", templates="train", template=j)
            docs.append(_doc(tok, pieces, p, "doc", **meta))  # type: ignore[arg-type]
    for p in world.subset("qa_train"):
        docs += qa_examples(world, tok, p, "doc")
    return docs


def build_biography(world_cfg: WorldConfig) -> FactDataset:
    """The dataset of the biography world: training documents (biographies + QA of half the
    people) and the QA prompts of every person (extraction on `qa_test` is the held-out test)."""
    world = make_biography_world(world_cfg)
    tok = word_tokenizer(world.vocabulary())
    prompts = [e for p in world.people for e in qa_examples(world, tok, p, "prompt")]
    return FactDataset(
        tokenizer=tok,
        train_docs=biography_documents(world, tok),
        prompts=prompts,
        people=list(world.people),
        world=world,
    )


def is_biography(dataset: FactDataset) -> bool:
    return isinstance(dataset.world, BiographyWorld)
