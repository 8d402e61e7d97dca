"""A seeded biography world: people with several attributes, written as short biographies.

Allen-Zhu & Li (Physics of Language Models, Part 3.1, arXiv 2309.14316) train on synthetic
biographies ("bioS") and ask where a fact is stored. With one wording per person a model
memorises each attribute "along the sentence" (from the tokens just before it), so the attribute
is not linearly decodable at the person's name and QA does not extract it for people it never
saw questioned; with *knowledge augmentation* (several distinct biographies per person, sentences
in a permuted order, the full name repeated in every sentence) the attributes are written into
the name's representation and extraction works. Part 3.2 (arXiv 2309.14402) finds inverse search
("who is the composer of X?") stays near 0% even then. This world is the kit's version, beside
the A-is-B world of `interp.data.world`, with the same generator style and seeding.

Every person has a name A ("<first> <last>"), a work B ("<role> of <title words>", unique per
person, the entity of inverse questions) and three classed attributes, each one word from a pool
of `n_attribute_values`: birth city, birth year, employer. The labels the probes read are
`role`, `city`, `year`, `employer` (B's attributes and the rest, all held only in the biography's
text, never in the name) and `first_class` / `first` (the name's first-name class and first
token, held only in A's text). Each attribute is a sentence from its own template pool
(`BIO_TEMPLATES`).

World options (`WorldConfig`, `source='biography'`):
- `bio_multiplicity` m: m distinct biographies per person (each draws its own template per
  attribute; m = 1 is "bioS single");
- `bio_permute` 1: each biography's sentences in a random order (0: work, city, year, employer);
- `bio_fullname` 1: the full name in every sentence (0: the first sentence names the person,
  the others say "they");
- mixed training: biographies for every person, QA documents for the `qa_train` half; the
  `qa_test` half is only ever asked (extraction on unseen people). Forward questions ask each
  attribute from the name ("where was A born ? <city>"); the inverse question asks the name from
  the work ("who is the <work> ? A").

Every document carries its spans (`Example.spans`: `("name", s, e)` for each occurrence of the
name and `(attribute, s, e)` for each attribute value, `work` covering role and title), so the
P-probe reads "the position just before each attribute" without searching strings. The
documents and prompts are built by `interp.data.biography_dataset`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from tokenizers import Tokenizer

from interp.config import WorldConfig
from interp.data.tokenizer import BOS, EOS, encode
from interp.data.world import ROLES, PeopleWorld, Person, draw_name_and_work, pseudo_words
from interp.errors import UserError

BIO_SUBSETS = ("qa_train", "qa_test")  # people whose QA is trained / only tested
ATTRIBUTES = ("work", "city", "year", "employer")  # sentence order when not permuted
LABELS = ("role", "city", "year", "employer")  # classed attributes the probes predict
PRONOUN = "they"

# One template pool per attribute; <N> is the name (or the pronoun), <V> the attribute's value.
BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "work": (
        "<N> is the <V> .",
        "<N> became known as the <V> .",
        "<N> worked for years as the <V> .",
        "<N> made a name as the <V> .",
    ),
    "city": (
        "<N> was born in <V> .",
        "<N> came into the world in <V> .",
        "<N> spent the early years in <V> .",
        "<N> grew up in the town of <V> .",
    ),
    "year": (
        "<N> was born in the year <V> .",
        "<N> arrived in the year <V> .",
        "<N> first saw the light in <V> .",
        "the birth of <N> was in <V> .",
    ),
    "employer": (
        "<N> worked for <V> .",
        "<N> was employed at <V> .",
        "<N> took a job with <V> .",
        "<N> earned a living at <V> .",
    ),
}
# QA: forward questions (name -> attribute, answer the value) and the inverse one (work -> name).
QUESTIONS: dict[str, str] = {
    "role": "what is the role of <N> ? <V>",
    "city": "where was <N> born ? <V>",
    "year": "when was <N> born ? <V>",
    "employer": "who employed <N> ? <V>",
}
INVERSE_QUESTION = "who is the <W> ? <N>"


@dataclass(frozen=True)
class BioPerson(Person):
    """A person of the biography world: `Person`'s name, work (= description), first-name class,
    and the classed attributes (indices into the world's pools)."""

    city: int
    year: int
    employer: int
    first_index: int  # index of the first name in the pool: "the name's first token"

    def value(self, world: BiographyWorld, attribute: str) -> str:
        """The text of one attribute ("work" is role + title)."""
        if attribute == "work":
            return self.description
        pool = {"city": world.cities, "year": world.years, "employer": world.employers}
        return pool[attribute][getattr(self, attribute)]

    def label(self, name: str) -> int:
        """A probe label: role, city, year, employer, first_class or first (first-name index)."""
        return int(getattr(self, "first_index" if name == "first" else name))


@dataclass(frozen=True)
class BiographyWorld(PeopleWorld[BioPerson]):
    """People, attribute pools and biographies of one biography world."""

    cities: tuple[str, ...]
    years: tuple[str, ...]
    employers: tuple[str, ...]

    def n_classes(self, label: str) -> int:
        """Number of classes of a probe label."""
        w = self.config
        return {
            "role": w.n_roles,
            "city": w.n_attribute_values,
            "year": w.n_attribute_values,
            "employer": w.n_attribute_values,
            "first_class": w.n_first_name_classes,
            "first": w.n_first_names,
        }[label]

    def vocabulary(self) -> list[str]:
        words: list[str] = [PRONOUN, "the", "of"]
        for tpls in BIO_TEMPLATES.values():
            for t in tpls:
                words += [w for w in t.split() if w not in ("<N>", "<V>")]
        for q in (*QUESTIONS.values(), INVERSE_QUESTION):
            words += [w for w in q.split() if w not in ("<N>", "<V>", "<W>")]
        words += [*ROLES[: self.config.n_roles], *self.first_names, *self.last_names]
        words += [*self.title_words, *self.cities, *self.years, *self.employers]
        return list(dict.fromkeys(words))

    def biographies(self, person: BioPerson) -> list[list[tuple[str, int]]]:
        """The person's `bio_multiplicity` biographies, each a list of (attribute, template)
        in sentence order. Seeded by (world seed, person), wordings and orders from separate
        generators: the same world gives the same texts, and turning an option on changes only
        what it documents (more biographies keep the first ones; permuting keeps the wordings;
        the full name changes only the subject of sentences after the first)."""
        w = self.config
        rng = random.Random(w.seed * 1_000_003 + person.id)  # the wordings
        order_rng = random.Random((w.seed * 1_000_003 + person.id) * 2 + 1)  # sentence orders
        n_tpl = len(BIO_TEMPLATES["work"])
        seen: set[tuple[int, ...]] = set()
        out: list[list[tuple[str, int]]] = []
        while len(out) < w.bio_multiplicity:  # distinct wordings (4^4 combinations)
            picks = tuple(rng.randrange(n_tpl) for _ in ATTRIBUTES)
            if picks in seen:
                continue
            seen.add(picks)
            order = list(range(len(ATTRIBUTES)))
            if w.bio_permute:
                order_rng.shuffle(order)
            out.append([(ATTRIBUTES[i], picks[i]) for i in order])
        return out


def _render(
    tok: Tokenizer, pieces: list[tuple[str, str | None]], eos: bool
) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Token ids of (text, span label or None) pieces after <bos>, and the labelled spans."""
    ids = [BOS]
    spans: list[tuple[str, int, int]] = []
    for text, label in pieces:
        piece = encode(tok, text)
        if label is not None:
            spans.append((label, len(ids), len(ids) + len(piece)))
        ids += piece
    if eos:
        ids.append(EOS)
    return ids, spans


def _fill(
    template: str, fills: Mapping[str, tuple[str, str | None]]
) -> list[tuple[str, str | None]]:
    """Split a template into pieces; `fills` maps a placeholder to (text, span label)."""
    out: list[tuple[str, str | None]] = []
    for word in template.split():
        if word in fills:
            out.append(fills[word])
        else:
            out.append((word, None))
    return out


def biography_pieces(
    world: BiographyWorld, person: BioPerson, bio: list[tuple[str, int]]
) -> list[tuple[str, str | None]]:
    """One biography as labelled pieces: the name (or the pronoun) and each attribute value."""
    pieces: list[tuple[str, str | None]] = []
    for i, (attr, t) in enumerate(bio):
        named = i == 0 or world.config.bio_fullname
        who: tuple[str, str | None] = (person.name, "name") if named else (PRONOUN, None)
        fills = {"<N>": who, "<V>": (person.value(world, attr), attr)}
        pieces += _fill(BIO_TEMPLATES[attr][t], fills)
    return pieces


def _pseudo_years(rng: random.Random, n: int) -> list[str]:
    return [str(y) for y in sorted(rng.sample(range(1900, 2000), n))]


def make_biography_world(cfg: WorldConfig) -> BiographyWorld:
    """Generate the biography world for `cfg`; the same config always gives the same world."""
    if cfg.n_attribute_values > 100:
        raise UserError("world.n_attribute_values must be at most 100 (the pool of years)")
    rng = random.Random(cfg.seed)
    taken = {w for tpls in BIO_TEMPLATES.values() for t in tpls for w in t.split()}
    taken |= {w for q in QUESTIONS.values() for w in q.split()} | set(ROLES) | {PRONOUN}
    first_names = tuple(pseudo_words(rng, cfg.n_first_names, taken))
    last_names = tuple(pseudo_words(rng, cfg.n_last_names, taken))
    title_words = tuple(pseudo_words(rng, cfg.n_title_words, taken))
    cities = tuple(pseudo_words(rng, cfg.n_attribute_values, taken))
    employers = tuple(pseudo_words(rng, cfg.n_attribute_values, taken))
    years = tuple(_pseudo_years(rng, cfg.n_attribute_values))
    per_class = cfg.n_first_names // cfg.n_first_name_classes
    names: set[tuple[str, str]] = set()
    works: set[tuple[int, tuple[str, ...]]] = set()
    people: list[BioPerson] = []
    groups = [s for s in BIO_SUBSETS for _ in range(cfg.n_people_per_subset)]
    for pid, subset in enumerate(groups):
        fi, last, role, title = draw_name_and_work(
            rng, first_names, last_names, title_words, cfg.n_roles, cfg.title_length, names, works
        )
        k = cfg.n_attribute_values
        city, year, employer = rng.randrange(k), rng.randrange(k), rng.randrange(k)
        people.append(
            BioPerson(
                pid,
                subset,
                first_names[fi],
                last,
                role,
                title,
                fi // per_class,
                city,
                year,
                employer,
                fi,
            )
        )
    return BiographyWorld(
        cfg, tuple(people), first_names, last_names, title_words, cities, years, employers
    )


def level_name(aug: dict[str, int]) -> str:
    """A short name of an augmentation setting (a result's `augmentation` record): multiplicity,
    +perm, +full."""
    name = f"x{aug['multiplicity']}"
    name += "+perm" if aug["permute"] else ""
    name += "+full" if aug["fullname"] else ""
    return name
