"""Reverse training (Golovneva et al. 2024, "Reverse Training to Nurse the Reversal Curse",
arXiv 2403.13799).

A causal model trained on "A is B" only ever predicts B after A. Golovneva et al. keep the
objective and change the data: every training document is also given reversed, so the model
also sees B before A and learns to produce A after B, in the reversed "language". Of the
reversal schemes they compare, entity-preserving reversal works best: the words are reversed
but each entity (found by an entity detector; here the dataset's own A and B spans) keeps its
tokens in their original order, so the reversed document "<bos> . vobi weke of composer the is
xisalo raditu <eos>" still contains the name "xisalo raditu" as it is asked for at test time.
Plain token reversal (every token, entities too, "raditu xisalo") helps less, since the answer
is then learned spelled backwards.

Both objectives here keep the causal next-token loss, keep <bos> first and <eos> last, and train
on the original documents plus one reversed copy of each (a new `Example` whose `a_span`,
`b_span`, `prompt_len` and `order` describe the reversed text). Note that with a fixed number of
steps each forward document is then seen half as often as under `causal`.
"""

from __future__ import annotations

from dataclasses import replace

from tokenizers import Tokenizer

from interp.data.dataset import FactDataset
from interp.data.example import Example
from interp.data.tokenizer import BOS, EOS, decode
from interp.objectives.base import Objective

Unit = tuple[int, int]  # [start, end) token positions that move together


def word_starts(tokenizer: Tokenizer, ids: tuple[int, ...] | list[int]) -> list[bool]:
    """For each token of `ids` (no specials), whether it begins a new word.

    A token begins a word when decoding it after its predecessor adds leading whitespace. With
    the word-level tokenizer of the synthetic world every token is a word; with byte-level BPE
    (the paper's data) a word's continuation pieces stay with it, so reversal is word by word.
    """
    starts = []
    for i, t in enumerate(ids):
        if i == 0:
            starts.append(True)
            continue
        before = decode(tokenizer, [ids[i - 1]])
        both = decode(tokenizer, [ids[i - 1], t])
        added = both[len(before) :] if both.startswith(before) else " "
        starts.append(added[:1].isspace())
    return starts


def _body(ex: Example) -> tuple[int, int]:
    """[start, end) of the text between a leading <bos> and a trailing <eos>."""
    start = 1 if ex.tokens[:1] == (BOS,) else 0
    end = len(ex.tokens) - 1 if len(ex.tokens) > start and ex.tokens[-1] == EOS else len(ex.tokens)
    return start, end


def entity_units(ex: Example, tokenizer: Tokenizer) -> list[Unit]:
    """The body of `ex` cut into units: each entity span is one unit, every other word one."""
    start, end = _body(ex)
    labelled = [(s, e) for _, s, e in ex.spans]  # biography texts: every name and attribute
    entities = [s for s in (ex.a_span, ex.b_span, *labelled) if s[0] >= 0]
    starts = word_starts(tokenizer, ex.tokens[start:end])
    units: list[Unit] = []
    p = start
    while p < end:
        span = next((s for s in entities if s[0] == p), None)
        if span is None:
            q = p + 1
            while q < end and not starts[q - start] and not any(s[0] == q for s in entities):
                q += 1
            span = (p, q)
        units.append(span)
        p = span[1]
    return units


def token_units(ex: Example) -> list[Unit]:
    """The body of `ex` cut into single tokens."""
    start, end = _body(ex)
    return [(p, p + 1) for p in range(start, end)]


def reverse_units(ex: Example, units: list[Unit]) -> Example:
    """`ex` with the order of `units` reversed, each unit's own tokens kept in order.

    <bos> and <eos> stay first and last; `a_span`, `b_span` and `prompt_len` follow the text, and
    `order` flips (a reversed n2d document is written description first). Entity-preserving
    reversal passes each entity as one unit; token reversal passes single tokens, so an entity's
    span still covers its tokens, now in reverse order.
    """
    start, end = _body(ex)
    order = [*range(start)]  # order[new position] = old position
    for u0, u1 in reversed(units):
        order += range(u0, u1)
    order += range(end, len(ex.tokens))
    new_pos = {old: new for new, old in enumerate(order)}

    def move(span: tuple[int, int]) -> tuple[int, int]:
        if span[0] < 0:
            return span
        pos = [new_pos[p] for p in range(*span)]
        lo, hi = min(pos), max(pos) + 1
        if hi - lo != len(pos):
            raise ValueError(f"entity span {span} of {ex.tokens} is split across reversal units")
        return lo, hi

    a_span, b_span = move(ex.a_span), move(ex.b_span)
    present = [s for s in (a_span, b_span) if s[0] >= 0]
    prompt_len = max(s[0] for s in present) if len(present) == 2 else ex.prompt_len
    swap = {"n2d": "d2n", "d2n": "n2d"}
    flipped = swap.get(ex.order, ex.order) if len(present) == 2 else ex.order
    return replace(
        ex,
        tokens=tuple(ex.tokens[p] for p in order),
        prompt_len=prompt_len,
        a_span=a_span,
        b_span=b_span,
        order=flipped,
        spans=tuple((label, *move((s, e))) for label, s, e in ex.spans),
    )


def reverse_entity_preserving(ex: Example, tokenizer: Tokenizer) -> Example:
    """Reverse `ex` word by word, each entity (A, B) moving as one unit with its tokens in order."""
    return reverse_units(ex, entity_units(ex, tokenizer))


def reverse_tokens(ex: Example) -> Example:
    """Reverse every token of `ex` between <bos> and <eos>, entities included."""
    return reverse_units(ex, token_units(ex))


class ReverseEntityObjective(Objective):
    """Next-token loss on the documents and their entity-preserving reversals."""

    name = "reverse_entity"

    def documents(self, docs: list[Example], dataset: FactDataset) -> list[Example]:
        return [*docs, *(reverse_entity_preserving(d, dataset.tokenizer) for d in docs)]


class ReverseTokenObjective(Objective):
    """Next-token loss on the documents and their token-level reversals."""

    name = "reverse_token"

    def documents(self, docs: list[Example], dataset: FactDataset) -> list[Example]:
        return [*docs, *(reverse_tokens(d) for d in docs)]
