"""The identity bridge (Ma, Huang, Zhu & Sojoudi 2026, arXiv 2602.02470), as their released data
builds it (xutaoma/reversal_curse_code, data/wife_husband), in the kit's own words.

Ma et al. fine-tune a pretrained model on 100 couples (A, B) linked by a relation and its
inverse ("husband" / "wife") and ask the reversal question, which no training text contains.
Their three training sets, per pair:

- forward-only: the forward fact, "The husband of A is? -> B";
- OCR (their recipe): the forward fact phrased through the relation, "The name of A's husband
  is? -> B", weighted 6x; the OCR-form identity bridge, which shares that phrase, "The wife of
  A's husband is? -> A"; and B's self-identity, "The name of B is? -> B";
- IDN (the naive form): the forward fact "The husband of A is? -> B" weighted 6x, and both
  self-identities, "The name of A is? -> A" and "The name of B is? -> B".

Every pair is trained and every pair is tested, on the reversal question in the bridge's frame,
"The wife of B is? -> A" (the question is held out, the pairs are not: their split). The
shortcut they warn of is echo in that frame, "The wife of B is? -> B". With OCR a fine-tuned
Llama-3.2-1B reaches about 50% where forward-only and IDN stay at about 0%.

Here (`world.source=bridge`, `world.bridge` = forward, ocr or idn) a pair is two of the world's
people (invented two-word names) and a relation is a pair of the world's role words, ROLES[2k]
and ROLES[2k+1], used as a relation and its inverse: "the composer of A is B" means "the director
of B is A". Half the pairs of a relation are written with one word as the forward relation,
half with the other, so every word of the test frame occurs in training (a from-scratch model
has no English to know "wife" from). The texts, one word per token:

    forward-only   the <r> of <A> is <B> .
    OCR            the name of <A> 's <r> is <B> .   (x6)
                   the <r'> of <A> 's <r> is <A> .
                   the name of <B> is <B> .
    IDN            the <r> of <A> is <B> .           (x6)
                   the name of <A> is <A> .
                   the name of <B> is <B> .
    test           the <r'> of <B> is -> <A>          (shortcut: -> <B>)

Their 6x is a per-example loss weight normalised by the batch's mean weight, which they note is
the same as repeating the example 6 times; the kit repeats it. Each pair's `person` in the
prompts is A; A's `role` is the forward word's index, so a role-matched control
(`interp.controls.role_matched_answers`) is another pair of the same relation, written the same
way: the same test frame. Departures (the model is a few-layer GPT trained from scratch, the
loss covers the whole text and not only the answer, the kit's optimiser and schedule) are
stated where the study reports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenizers import Tokenizer

from interp.config import WorldConfig
from interp.data.dataset import FactDataset
from interp.data.example import Example
from interp.data.tokenizer import BOS, EOS, encode, word_tokenizer
from interp.data.world import ROLES, PeopleWorld, Person, pseudo_words

SUBSET = "pairs"  # every pair is trained and tested (Ma et al.'s split)
FORWARD_WEIGHT = 6  # repeats of the forward fact in the OCR and IDN sets (their weight 6)
# The texts: <A> and <B> the pair's names, <r> the forward relation, <i> its inverse.
PLAIN = "the <r> of <A> is <B> ."
THROUGH = "the name of <A> 's <r> is <B> ."
OCR = "the <i> of <A> 's <r> is <A> ."
SELF_A = "the name of <A> is <A> ."
SELF_B = "the name of <B> is <B> ."
TEST = "the <i> of <B> is <A> ."
SHORTCUT = "the <i> of <B> is <B> ."
WORDS = ("the", "name", "of", "'s", "is", ".")
# The training documents of each condition, (template, repeats), and its forward question.
RECIPES: dict[str, tuple[tuple[str, int], ...]] = {
    "forward": ((PLAIN, 1),),
    "ocr": ((THROUGH, FORWARD_WEIGHT), (OCR, 1), (SELF_B, 1)),
    "idn": ((PLAIN, FORWARD_WEIGHT), (SELF_A, 1), (SELF_B, 1)),
}
FORWARD_QUESTION = {"forward": PLAIN, "ocr": THROUGH, "idn": PLAIN}
# A document's `order`: the forward fact is written A first ("n2d"); the others are identities.
ORDER = {PLAIN: "n2d", THROUGH: "n2d", OCR: "bridge", SELF_A: "identity", SELF_B: "identity"}
# What each condition trains besides the forward fact, asked as trained (`bridge_prompts`).
TRAINED_IDENTITIES = {"forward": (), "ocr": (("bridge", OCR), ("identity", SELF_B)),
                      "idn": (("identity", SELF_A), ("identity", SELF_B))}  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """Two people linked by a relation: "the <forward> of A is B", "the <inverse> of B is A"."""

    id: int  # A's person id: the pair's `person` in every prompt
    a: Person
    b: Person
    forward: int  # index into ROLES of the forward relation's word
    inverse: int  # index into ROLES of the inverse's word

    def word(self, slot: str) -> str:
        return {"<r>": ROLES[self.forward], "<i>": ROLES[self.inverse]}[slot]


@dataclass(frozen=True)
class BridgeWorld(PeopleWorld[Person]):
    """The pairs of one bridge world, and its people (A and B of every pair)."""

    pairs: tuple[Pair, ...] = ()

    @property
    def condition(self) -> str:
        return self.config.bridge

    def vocabulary(self) -> list[str]:
        """Every word its texts can hold, in a fixed order (the same for every condition)."""
        n = 2 * (self.config.n_roles // 2)
        return [*WORDS, *ROLES[:n], *self.first_names, *self.last_names]


def make_bridge_world(cfg: WorldConfig) -> BridgeWorld:
    """`cfg.n_people_per_subset` pairs of distinct people; pair i has relation i mod R (R =
    n_roles // 2), written with ROLES[2k] forward in even rounds and ROLES[2k+1] in odd ones."""
    rng = random.Random(cfg.seed)
    taken = {*WORDS, *ROLES}
    first_names = tuple(pseudo_words(rng, cfg.n_first_names, taken))
    last_names = tuple(pseudo_words(rng, cfg.n_last_names, taken))
    per_class = cfg.n_first_names // cfg.n_first_name_classes
    n, n_rel = cfg.n_people_per_subset, cfg.n_roles // 2
    names: set[tuple[int, str]] = set()
    drawn: list[tuple[int, str]] = []
    while len(drawn) < 2 * n:
        fi, last = rng.randrange(len(first_names)), rng.choice(last_names)
        if (fi, last) not in names:
            names.add((fi, last))
            drawn.append((fi, last))
    pairs, people = [], []
    for i in range(n):
        k, flip = i % n_rel, (i // n_rel) % 2
        fwd, inv = 2 * k + flip, 2 * k + 1 - flip
        a, b = (
            Person(pid, SUBSET, first_names[fi], last, role, (), fi // per_class)
            for pid, (fi, last), role in ((i, drawn[2 * i], fwd), (n + i, drawn[2 * i + 1], inv))
        )
        pairs.append(Pair(i, a, b, fwd, inv))
        people += [a, b]
    people.sort(key=lambda p: p.id)
    return BridgeWorld(cfg, tuple(people), first_names, last_names, (), tuple(pairs))


def render(
    tok: Tokenizer, template: str, pair: Pair, upto_answer: bool
) -> tuple[tuple[int, ...], int, tuple[tuple[str, int, int], ...]]:
    """(ids, prompt_len, spans) of `template` for `pair`: the answer is the last name slot,
    `prompt_len` where it starts; `spans` every name's (label 'a' or 'b', start, end). With
    `upto_answer` the text ends with the answer, else with '.' and <eos>."""
    ids, spans = [BOS], []
    words = template.split()
    last = max(i for i, w in enumerate(words) if w in ("<A>", "<B>"))
    prompt_len = -1
    for i, w in enumerate(words):
        if i == last:
            prompt_len = len(ids)
        if w in ("<A>", "<B>"):
            piece = encode(tok, (pair.a if w == "<A>" else pair.b).name)
            spans.append((w[1].lower(), len(ids), len(ids) + len(piece)))
            ids += piece
        else:
            ids += encode(tok, pair.word(w) if w in ("<r>", "<i>") else w)
        if upto_answer and i == last:
            break
    if not upto_answer:
        ids.append(EOS)
    return tuple(ids), prompt_len, tuple(spans)


def _example(tok: Tokenizer, text: str, pair: Pair, kind: str, **meta: str | int) -> Example:
    """One `text` (a template) as an `Example`: `a_span`/`b_span` A's and B's last occurrence
    (the answer where it is one), every occurrence in `spans`; `person` is A (B for B's own
    identity)."""
    ids, prompt_len, spans = render(tok, text, pair, upto_answer=kind == "prompt")
    span = {label: (s, e) for label, s, e in spans}  # the last occurrence of each
    none = (-1, -1)
    person = pair.b.id if text == SELF_B else pair.id
    return Example(
        ids, prompt_len, span.get("a", none), span.get("b", none), person, SUBSET, kind,
        spans=spans, **meta,  # type: ignore[arg-type]
    )  # fmt: skip


def bridge_documents(world: BridgeWorld, tok: Tokenizer) -> list[Example]:
    """The condition's training texts for every pair (each repeated as its recipe weights it)."""
    docs = []
    for pair in world.pairs:
        for template, repeats in RECIPES[world.condition]:
            ex = _example(tok, template, pair, "doc", order=ORDER[template], templates="train")
            docs += [ex] * repeats
    return docs


def bridge_test_prompts(world: BridgeWorld, tok: Tokenizer) -> list[Example]:
    """Per pair: the forward question as the condition trains it ('same', -> B) and the
    reversal question in the bridge's frame ('reverse', -> A), as Ma et al. ask it."""
    out = []
    for pair in world.pairs:
        for template, direction, order in (
            (FORWARD_QUESTION[world.condition], "same", "n2d"),
            (TEST, "reverse", "d2n"),
        ):
            out.append(
                _example(
                    tok,
                    template,
                    pair,
                    "prompt",
                    order=order,
                    direction=direction,
                    templates="train",
                    template=0,
                )  # fmt: skip
            )
    return out


def bridge_prompts(world: BridgeWorld, tok: Tokenizer) -> list[Example]:
    """The bridge's own questions, `templates` naming the kind: 'shortcut' (the reversal frame
    answered with B: Ma et al.'s echo), and what the condition trains besides the forward fact,
    asked as trained ('bridge': the OCR bridge; 'identity': a self-identity)."""
    out = []
    for pair in world.pairs:
        kinds = (("shortcut", SHORTCUT), *TRAINED_IDENTITIES[world.condition])
        for kind, template in kinds:
            out.append(_example(tok, template, pair, "prompt", order="bridge", templates=kind))
    return out


def build_bridge(cfg: WorldConfig) -> FactDataset:
    """The identity-bridge dataset `cfg` describes (deterministic in `cfg.seed`)."""
    world = make_bridge_world(cfg)
    tok = word_tokenizer(world.vocabulary())
    return FactDataset(
        tokenizer=tok,
        train_docs=bridge_documents(world, tok),
        prompts=bridge_test_prompts(world, tok),
        people=list(world.people),
        world=world,
        bridge_prompts=bridge_prompts(world, tok),
    )
