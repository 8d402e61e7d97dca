"""A key-value retrieval world (Kitouni et al. 2024, "The Factorization Curse", arXiv 2406.05183).

Kitouni et al.'s controlled retrieval task stores pairs of random token sequences and asks for
the value given the key (forward) and the key given the value (backward). In their table MLM-U
answers both ways (100% / 100%), while next-token prediction and training on token-reversed
sequences answer forward only (backward about 0%). Random tokens strip away everything the
fact world shares between entities (roles, name classes, English-like templates), so what is
left is retrieval alone.

Here (`world.source=retrieval`) the pairs follow the fact world's design, so every instrument of
the kit and the study's report read it unchanged: a key ("k007 k021", `title_length` tokens from
a pool of `n_title_words` key tokens) is the entity A, a value ("v013 v002", the same shape from
its own pool) the entity B, and pairs fall in the three subsets of Berglund et al.: `n2d` pairs
are written key first ("k007 k021 : v013 v002 ."), `d2n` value first ("v013 v002 = k007 k021
."), `both` in both documents. The forward question is the pair's own order up to its separator,
the backward one the other order: for an `n2d` pair, "v013 v002 =" -> its key, a format the
model has seen only on other pairs (the `d2n` and `both` ones), exactly as a causal model is
asked a reversed fact. Native-mode evaluation (`interp.native`) asks the masking objectives in
their own mode: "v013 v002 = <mask> <mask> .". Tokens have a fixed width, so the paper's prefix
exact-match rule is also whole-token. One template per order; no held-out templates.
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer

from interp.config import WorldConfig
from interp.data.dataset import DIRECTIONS, FactDataset, prompt_order, trained_orders
from interp.data.example import Example
from interp.data.tokenizer import BOS, EOS, encode, word_tokenizer
from interp.data.world import SUBSETS

SEPARATORS = {"n2d": ":", "d2n": "="}  # key-first documents use ':', value-first ones '='


def _pairs(cfg: WorldConfig) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(subset, key tokens, value tokens) for every pair: distinct keys, distinct values."""
    rng = random.Random(cfg.seed)
    n = cfg.n_people_per_subset * len(SUBSETS)
    keys: set[tuple[str, ...]] = set()
    values: set[tuple[str, ...]] = set()
    while len(keys) < n:
        keys.add(tuple(f"k{rng.randrange(cfg.n_title_words):03d}" for _ in range(cfg.title_length)))
    while len(values) < n:
        values.add(
            tuple(f"v{rng.randrange(cfg.n_title_words):03d}" for _ in range(cfg.title_length))
        )
    ks, vs = sorted(keys), sorted(values)
    rng.shuffle(ks)
    rng.shuffle(vs)
    return [(SUBSETS[i % len(SUBSETS)], ks[i], vs[i]) for i in range(n)]


def _render(
    tok: Tokenizer, key: tuple[str, ...], value: tuple[str, ...], order: str
) -> tuple[list[int], int, tuple[int, int], tuple[int, int]]:
    """(ids up to the second entity, prompt_len, key span, value span) of one pair in `order`."""
    first, second = (key, value) if order == "n2d" else (value, key)
    a = encode(tok, " ".join(first))
    b = encode(tok, " ".join(second))
    ids = [BOS, *a, *encode(tok, SEPARATORS[order]), *b]
    s1, s2 = (1, 1 + len(a)), (len(ids) - len(b), len(ids))
    key_span, value_span = (s1, s2) if order == "n2d" else (s2, s1)
    return ids, len(ids) - len(b), key_span, value_span


def build_retrieval(cfg: WorldConfig) -> FactDataset:
    """The key-value retrieval dataset `cfg` describes (deterministic in `cfg.seed`)."""
    pool = [f"{c}{i:03d}" for c in "kv" for i in range(cfg.n_title_words)]
    tok = word_tokenizer([*SEPARATORS.values(), ".", *pool])
    docs: list[Example] = []
    prompts: list[Example] = []
    for pid, (subset, key, value) in enumerate(_pairs(cfg)):
        for order in trained_orders(subset):
            ids, plen, a, b = _render(tok, key, value, order)
            full = (*ids, *encode(tok, "."), EOS)
            docs.append(
                Example(full, plen, a, b, pid, subset, "doc", order, templates="train", template=0)
            )
        for direction in DIRECTIONS:
            order = prompt_order(subset, direction)
            ids, plen, a, b = _render(tok, key, value, order)
            prompts.append(
                Example(tuple(ids), plen, a, b, pid, subset, "prompt", order, direction, "train", 0)
            )
    return FactDataset(tokenizer=tok, train_docs=docs, prompts=prompts)
