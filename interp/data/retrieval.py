"""Kitouni et al.'s key-value retrieval task ("The Factorization Curse", arXiv 2406.05183,
section 3.1 and Table 1), as published.

Every key and every value is a sequence of `title_length` tokens that belong to it alone (no
token is shared between two entities), so nothing but the stored pair links a key to its value.
Training holds every pair as a document and, for a subset of pairs, the questions about it in
both directions; the test asks the other pairs' questions, never seen:

    documents (every pair)        <bos> k k : v v <eos>
    forward query (trained half)  <bos> value of k k : v v <eos>
    backward query (trained half) <bos> key of v v : k k <eos>
    test (held-out half)          <bos> value of k k :  -> v v      <bos> key of v v :  -> k k

In their table next-token training answers held-out forward queries (100%) but not backward
ones (0%), a fixed-rate (15%) MLM about 20% both ways, MLM-U 100% both ways.

In the kit's vocabulary (so every instrument and the report read it unchanged): a key is the
entity A, a value the entity B; the pairs whose queries are held out form the `n2d` subset
(stored only as "A : B": the forward query is the trained order, the backward one the reversed
order), the pairs whose queries are trained form the `both` subset (trained both ways: the
positive control, and the fit the convergence criterion reads). `direction` 'same' is the
forward query, 'reverse' the backward one; one template, kind 'train'.
"""

from __future__ import annotations

import random

from interp.config import WorldConfig
from interp.data.dataset import FactDataset
from interp.data.example import Example
from interp.data.tokenizer import BOS, EOS, encode, word_tokenizer

SUBSETS = ("n2d", "both")  # queries held out; queries trained
QUERIES = {"same": "value of", "reverse": "key of"}  # forward: the value of a key; backward


def _entities(cfg: WorldConfig) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(keys, values): `title_length` tokens of its own for each entity, the pairing shuffled
    by `cfg.seed` (the token names say nothing about which key goes with which value)."""
    n = cfg.n_people_per_subset * len(SUBSETS)
    keys = [tuple(f"k{i:04d}{chr(97 + j)}" for j in range(cfg.title_length)) for i in range(n)]
    values = [tuple(f"v{i:04d}{chr(97 + j)}" for j in range(cfg.title_length)) for i in range(n)]
    rng = random.Random(cfg.seed)
    rng.shuffle(keys)
    rng.shuffle(values)
    return keys, values


def _text(
    tok, first: tuple[str, ...], second: tuple[str, ...], query: str = ""
) -> tuple[list[int], int, tuple[int, int], tuple[int, int]]:
    """(ids up to the second entity, prompt length, first entity's span, second's span)."""
    ids = [BOS, *(encode(tok, query) if query else [])]
    a = encode(tok, " ".join(first))
    s1 = (len(ids), len(ids) + len(a))
    ids += [*a, *encode(tok, ":")]
    b = encode(tok, " ".join(second))
    s2 = (len(ids), len(ids) + len(b))
    return [*ids, *b], s2[0], s1, s2


def build_retrieval(cfg: WorldConfig) -> FactDataset:
    """The retrieval dataset `cfg` describes (deterministic in `cfg.seed`):
    `n_people_per_subset` pairs with held-out queries and as many with trained ones."""
    keys, values = _entities(cfg)
    words = [":", *QUERIES.values(), *(t for e in keys + values for t in e)]
    tok = word_tokenizer(" ".join(words).split())
    docs: list[Example] = []
    prompts: list[Example] = []
    for pid, (key, value) in enumerate(zip(keys, values, strict=True)):
        subset = SUBSETS[pid % len(SUBSETS)]
        ids, plen, a, b = _text(tok, key, value)
        docs.append(Example((*ids, EOS), plen, a, b, pid, subset, "doc", "n2d", templates="train",
                            template=0))  # fmt: skip
        for direction, query in QUERIES.items():
            first, second = (key, value) if direction == "same" else (value, key)
            ids, plen, s1, s2 = _text(tok, first, second, query)
            a, b = (s1, s2) if direction == "same" else (s2, s1)
            order = "n2d" if direction == "same" else "d2n"
            if subset == "both":  # the trained queries, as documents
                docs.append(Example((*ids, EOS), plen, a, b, pid, subset, "doc", order,
                                    templates="train", template=0))  # fmt: skip
            prompts.append(
                Example(tuple(ids), plen, a, b, pid, subset, "prompt", order, direction, "train", 0)
            )
    return FactDataset(tokenizer=tok, train_docs=docs, prompts=prompts)
