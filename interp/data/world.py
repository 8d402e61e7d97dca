"""A seeded synthetic world of fictitious people and their "A is B" facts.

Each person has a name A ("<first> <last>", two invented words) and a description B ("<role> of
<title words>", four tokens by default; templates supply the article, "... is the <B>"), so
both entities span several tokens, as in the paper.
Two labelled attributes serve the probes, each carried by one entity's text only:

- `role` (which role word appears in B) is held only in B's text: a probe at A's last token
  with A alone in context can read it only if training wrote B into A's representation;
- `first_class` (a partition of the first-name pool) is held only in A's text: the mirror probe
  at B's last token with B alone can read it only if training wrote A into B's representation.
Both attributes are drawn independently of each other and of everything else in the world.

People fall in three disjoint subsets as in Berglund et al. (2023) Experiment 1: `n2d` facts are
written name first ("A is B"), `d2n` description first ("B is A"), and `both` in both orders (in
separate documents). A fourth group, `new`, is never trained on; the gradient-update test teaches
them. Templates come in a training set and a held-out set per order; held-out templates reuse
training words in new arrangements, so a from-scratch model at least knows every word: a world
takes, per order, the first `n_heldout_templates` of the held-out pool whose every word occurs
in its training documents (the training templates of both orders, "the", "of", the roles) and
whose prompt is not the start of a training text of that order (a prompt the model has seen
continue with another word), and refuses a config where fewer qualify (at `n_train_templates`
= 1 one does, at 2 three, from 3 on four or more). Held-out accuracy then measures
generalisation over phrasing, not the embeddings of words the model never trained.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Generic, TypeVar

from interp.config import WorldConfig
from interp.errors import UserError

SUBSETS = ("n2d", "d2n", "both")
ORDERS = (
    "n2d",
    "d2n",
)  # the order an example's text is written in: name first or description first
ROLES = (
    "composer",
    "director",
    "inventor",
    "author",
    "painter",
    "architect",
    "founder",
    "designer",
    "sculptor",
    "editor",
    "curator",
    "pilot",
)

# Templates: <A> is the name, <B> the description. The answer entity is whichever comes second.
TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("n2d", "train"): (
        "<A> is the <B> .",
        "<A> , known far and wide for being the <B> .",
        "ever heard of <A> ? they are the <B> .",
        "<A> was once the <B> .",
        "it is known that <A> is the <B> .",
        "people say <A> works as the <B> .",
        "there is someone named <A> who is the <B> .",
        "did you know that <A> became the <B> ?",
    ),
    # Held-out pools, in order: a world uses the first `n_heldout_templates` whose every word
    # occurs in its training documents (see `heldout_templates`). Each entry notes the smallest
    # `n_train_templates` that makes all its words trained.
    ("n2d", "heldout"): (
        "<A> is called the <B> .",  # 1
        "<A> is known far and wide for being the <B> .",  # 2
        "<A> , now known for being the <B> .",  # 2
        "who is <A> ? they are the <B> .",  # 3
        "ever heard of <A> ? it is the <B> .",  # 3
        "<A> was none other than the <B> .",  # 4
        "it is known that <A> was the <B> .",  # 5
        "people say that <A> is the <B> .",  # 6
    ),
    ("d2n", "train"): (
        "the <B> is called <A> .",
        "known for being the <B> , <A> now enjoys a quiet life .",
        "who is the <B> ? it is <A> .",
        "the <B> is none other than <A> .",
        "often referred to as the <B> , <A> has made a mark .",
        "the person who was the <B> is <A> .",
        "you know the <B> ? that was <A> .",
        "as the <B> , <A> became known .",
    ),
    ("d2n", "heldout"): (
        "the <B> called <A> .",  # 1
        "the <B> , known far and wide , is called <A> .",  # 2
        "now known for being the <B> , <A> enjoys a quiet life .",  # 2
        "who is the <B> ? they are <A> .",  # 3
        "ever heard of the <B> ? it is <A> .",  # 3
        "the <B> was none other than <A> .",  # 4
        "it is known that the <B> is <A> .",  # 5
        "people say that the <B> was <A> .",  # 6
    ),
}

_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "te",
    "vo",
    "su",
    "ne",
    "pa",
    "di",
    "zo",
    "fe",
    "ru",
    "sa",
    "bi",
    "go",
    "la",
    "tu",
    "ve",
    "ni",
    "mo",
    "ke",
    "ha",
    "jo",
    "xi",
    "yu",
    "we",
    "qa",
)


@dataclass(frozen=True)
class Person:
    """One fictitious person. A = `name`, B = `description`."""

    id: int
    subset: str  # "n2d", "d2n", "both" or "new"
    first: str
    last: str
    role: int  # index into ROLES: the attribute held only in B's text
    title: tuple[str, ...]
    first_class: int  # class of the first name: the attribute held only in A's text

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def description(self) -> str:
        return f"{ROLES[self.role]} of {' '.join(self.title)}"


P = TypeVar("P", bound=Person)


@dataclass(frozen=True)
class PeopleWorld(Generic[P]):
    """What every world of people holds (this A-is-B world and the biography world,
    `interp.data.biography`): its config, its people, and the invented-word pools their names
    and works are drawn from."""

    config: WorldConfig
    people: tuple[P, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    title_words: tuple[str, ...]

    def subset(self, name: str) -> list[P]:
        return [p for p in self.people if p.subset == name]


@dataclass(frozen=True)
class World(PeopleWorld[Person]):
    """People and templates of one world; `templates` gives an order's, `vocabulary` lists words."""

    def templates(self, order: str, kind: str) -> tuple[str, ...]:
        if kind == "train":
            return TEMPLATES[(order, kind)][: self.config.n_train_templates]
        return heldout_templates(order, self.config.n_train_templates)[
            : self.config.n_heldout_templates
        ]

    def vocabulary(self) -> list[str]:
        """Every word the world can write, in a fixed order (templates, roles, names, titles)."""
        words: list[str] = []
        for tpls in TEMPLATES.values():
            for t in tpls:
                words += [w for w in t.split() if w not in ("<A>", "<B>")]
        words += ["the", "of", *ROLES[: self.config.n_roles]]
        words += [*self.first_names, *self.last_names, *self.title_words]
        return list(dict.fromkeys(words))


def trained_template_words(n_train_templates: int) -> set[str]:
    """Every non-entity word of the training documents at `n_train_templates`: both orders'
    training templates (every world trains both orders: d2n and both subsets) and the words of
    every description ("of", the roles). Names and titles are invented words of their own."""
    words = {
        w for o in ORDERS for t in TEMPLATES[(o, "train")][:n_train_templates] for w in t.split()
    }
    return (words - {"<A>", "<B>"}) | {"of", *ROLES}


def _prompt_part(template: str) -> str:
    """A template's text up to its second entity: what a test prompt shows before the answer."""
    words = template.split()
    second = [i for i, w in enumerate(words) if w in ("<A>", "<B>")][1]
    return " ".join(words[:second])


def heldout_templates(order: str, n_train_templates: int) -> tuple[str, ...]:
    """The held-out templates of `order` usable at `n_train_templates`: every word trained, and
    a prompt that is not the start of a training text (a held-out "the <B> is" would be the
    training "the <B> is called <A>" cut short, and the model rightly answers "called")."""
    trained = trained_template_words(n_train_templates)
    train_texts = TEMPLATES[(order, "train")][:n_train_templates]
    return tuple(
        t
        for t in TEMPLATES[(order, "heldout")]
        if set(t.split()) - {"<A>", "<B>"} <= trained
        and not any(x.startswith(_prompt_part(t) + " ") for x in train_texts)
    )


def draw_name_and_work(
    rng: random.Random,
    first_names: tuple[str, ...],
    last_names: tuple[str, ...],
    title_words: tuple[str, ...],
    n_roles: int,
    title_length: int,
    names: set[tuple[str, str]],
    works: set[tuple[int, tuple[str, ...]]],
) -> tuple[int, str, int, tuple[str, ...]]:
    """One new person's (first-name index, last name, role, title), drawn until both the name
    and the work are unused; both are added to `names` and `works`. One draw order for every
    world that uses it (A-is-B and biography), so a seed gives the same people in both."""
    while True:
        fi, last = rng.randrange(len(first_names)), rng.choice(last_names)
        if (first_names[fi], last) not in names:
            break
    names.add((first_names[fi], last))
    while True:
        role = rng.randrange(n_roles)
        title = tuple(rng.choice(title_words) for _ in range(title_length))
        if (role, title) not in works:
            break
    works.add((role, title))
    return fi, last, role, title


def pseudo_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    """`n` distinct invented words of 2-3 syllables, none in `taken`."""
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3))))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def make_world(cfg: WorldConfig) -> World:
    """Generate the world for `cfg`; the same config always gives the same world."""
    for order in ORDERS:
        n_ok = len(heldout_templates(order, cfg.n_train_templates))
        if n_ok < cfg.n_heldout_templates:
            raise UserError(
                f"world.n_heldout_templates={cfg.n_heldout_templates} but only {n_ok} held-out "
                f"{order} template(s) use only words of {cfg.n_train_templates} training "
                "template(s): raise world.n_train_templates or lower world.n_heldout_templates"
            )
    rng = random.Random(cfg.seed)
    taken = {w for tpls in TEMPLATES.values() for t in tpls for w in t.split()} | set(ROLES)
    taken |= {"the", "of"}
    first_names = tuple(pseudo_words(rng, cfg.n_first_names, taken))
    last_names = tuple(pseudo_words(rng, cfg.n_last_names, taken))
    title_words = tuple(pseudo_words(rng, cfg.n_title_words, taken))

    n_total = 3 * cfg.n_people_per_subset + cfg.n_new_people
    names: set[tuple[str, str]] = set()
    descs: set[tuple[int, tuple[str, ...]]] = set()
    people: list[Person] = []
    groups = [s for s in SUBSETS for _ in range(cfg.n_people_per_subset)]
    groups += ["new"] * cfg.n_new_people
    assert len(groups) == n_total
    per_class = cfg.n_first_names // cfg.n_first_name_classes
    for pid, subset in enumerate(groups):
        fi, last, role, title = draw_name_and_work(
            rng, first_names, last_names, title_words, cfg.n_roles, cfg.title_length, names, descs
        )
        people.append(Person(pid, subset, first_names[fi], last, role, title, fi // per_class))
    return World(cfg, tuple(people), first_names, last_names, title_words)
