"""The published data of Berglund et al. (2023), Experiment 1, as a `FactDataset`.

The paper fine-tunes GPT-3 on 3600 sentences about 90 fictitious celebrities in three disjoint
subsets of 30 people: NameToDescription ("Daphne Barrington is the director of ...", our `n2d`),
DescriptionToName ("The director of ... is Daphne Barrington", our `d2n`) and Both (both orders,
in separate lines). Each fact is written with 30 paraphrase templates; the test files ask it with
10 held-out templates, in the trained order and reversed, and the paper scores greedy completions
by exact match (Table 1) and the log-probability of the right completion against a random other
one of the same subset, from its `_randomized` files (Figure 4). This module reads those files
(`all_prompts_train.jsonl` and the test files; see the data folder's README) into the kit's
`Example`s, so every instrument runs on the paper's data as on a synthetic world.

How a line becomes an `Example`:
- the person is the one name of `templates/names.txt` the line contains; the person id is the
  name's index in that file, and the subset is that of the training file the name appears in;
- the name's character span is where the name is; the description's span is found by matching
  the line against the paraphrase templates (`templates/{p2d,d2p}_templates.txt`): the template's
  own words are stripped and what remains between them is the description, as that line words it
  (lines reword it to fit the template: "directed the ...", "being the ..."). A line that fits no
  template keeps the other half of the text as the description;
- prompt and completion are tokenised separately and joined, so the token boundary is exactly the
  paper's prompt/completion cut; token spans are the tokens whose character offsets overlap the
  entity's characters, computed once here. Documents are <bos> + prompt + completion + <eos>, with
  the loss on every token, as in the paper.

The test templates never occur in training, and a model trained from scratch knows no English but
these 3600 lines, so held-out-template accuracy mostly measures generalisation over wording. We
therefore also ask every person in phrasings the model has seen (`templates="train"`):
- same direction: the person's first `N_TRAIN_TEMPLATE_PROMPTS` training lines, cut before the
  second entity; the answer is that entity as the line words it;
- reverse direction: training templates of the other order, taken from another person's training
  line and filled with this person's entity (their canonical description: the wording most of
  their lines use; or their name), the answer being the other entity. Only templates whose lines
  keep every person's canonical description verbatim are used, so the filled prompt is worded
  exactly like lines the model was trained on. For the Both subset, "reverse" (description first)
  lines were trained too, and its training-template reverse prompts are its own lines.

There are no labelled attributes for the paper's people: `dataset.people` is empty and the probing
instruments (which need a person's role and first-name class) do not apply to this data.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from interp.data.dataset import Example, FactDataset
from interp.data.jsonl import Record, read_jsonl
from interp.data.tokenizer import BOS, EOS, train_tokenizer
from interp.errors import UserError

DEFAULT_DATA_DIR = "../shared/datasets/reversal_curse_exp1"
REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_FILE = "all_prompts_train"
SUBSET_FILES = {
    "p2d_prompts_train": "n2d",
    "d2p_prompts_train": "d2n",
    "both_prompts_train": "both",
}
# Test file -> the subset its people belong to. Direction follows from each line's order.
TEST_FILES = {
    "p2d_prompts_test": "n2d",
    "p2d_reverse_prompts_test": "n2d",
    "d2p_prompts_test": "d2n",
    "d2p_reverse_prompts_test": "d2n",
    "both_prompts_test": "both",
}
RANDOMIZED = {
    "p2d_reverse_prompts_test": "p2d_reverse_prompts_test_randomized",
    "d2p_reverse_prompts_test": "d2p_reverse_prompts_test_randomized",
}
TEMPLATE_FILES = {"n2d": "p2d_templates.txt", "d2n": "d2p_templates.txt"}
N_TRAIN_TEMPLATE_PROMPTS = 5  # training-template prompts per person and direction
WHERE_TO_GET = (
    "get data/reverse_experiments/june_version_7921032488 from github.com/"
    "lukasberglund/reversal_curse (or the Hugging Face dataset "
    "lberglund/reversal_curse) and pass --set world.data_dir=PATH"
)


def resolve_data_dir(data_dir: str) -> Path:
    """The data folder: `data_dir` as given, else relative to the repository root; "" = default."""
    given = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    candidates = [given] if given.is_absolute() else [given, REPO_ROOT / given]
    for c in candidates:
        if (c / f"{TRAIN_FILE}.jsonl").is_file():
            return c.resolve()
    raise UserError(
        f"the paper's Exp. 1 data is not at {given} ({TRAIN_FILE}.jsonl missing): " + WHERE_TO_GET
    )


@dataclass(frozen=True)
class Template:
    """A paraphrase template cut at its entities: prefix <e1> middle <e2> suffix."""

    order: str  # "n2d" (<name> first) or "d2n" (<description> first)
    index: int
    prefix: str
    middle: str
    suffix: str

    @classmethod
    def parse(cls, text: str, order: str, index: int) -> Template:
        parts = re.split(r"(<name>|<description>)", text.rstrip())
        if len(parts) != 5:
            raise UserError(f"template {text!r} must hold <name> and <description> once each")
        return cls(order, index, parts[0], parts[2], parts[4])


@dataclass(frozen=True)
class Line:
    """One parsed JSONL line: who it is about, in which order, and where the entities are."""

    record: Record
    where: str  # "file.jsonl:lineno", for error messages
    person: int  # index of the name in templates/names.txt
    order: str  # "n2d": the name comes first; "d2n": the description comes first
    template: int  # index into the order's template file; -1 if no template fits
    name: tuple[int, int]  # [start, end) characters of the name in record.text
    description: tuple[int, int]  # [start, end) characters of the description in record.text

    def span_text(self, which: str) -> str:
        s, e = self.name if which == "a" else self.description
        return self.record.text[s:e]


def load_templates(data_dir: Path) -> dict[str, list[Template]]:
    out = {}
    for order, fname in TEMPLATE_FILES.items():
        path = data_dir / "templates" / fname
        if not path.is_file():
            raise UserError(f"{path} not found: the data folder is incomplete; " + WHERE_TO_GET)
        lines = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
        out[order] = [Template.parse(t, order, i) for i, t in enumerate(lines)]
    return out


def load_names(data_dir: Path) -> list[str]:
    path = data_dir / "templates" / "names.txt"
    if not path.is_file():
        raise UserError(f"{path} not found: the data folder is incomplete; " + WHERE_TO_GET)
    return [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]


def _match(
    text: str, name: tuple[int, int], order: str, templates: list[Template]
) -> tuple[int, tuple[int, int]] | None:
    """(template index, description span) of the best-fitting template, or None.

    A template fits when its words surround the name and the description exactly; the test files
    stop after the second entity, so a missing suffix is allowed. The best fit is the one whose
    matched template words are longest (the most specific)."""
    nm = text[name[0] : name[1]]
    best: tuple[int, int, tuple[int, int]] | None = None
    for t in templates:
        if order == "n2d":
            head = t.prefix + nm + t.middle
            if name[0] != len(t.prefix) or not text.startswith(head):
                continue
            start, end = len(head), len(text)
            suffix = t.suffix.strip()
            fits_suffix = bool(suffix) and text.endswith(suffix)
            if fits_suffix:
                end -= len(suffix)
            else:  # tolerate a reworded end ("??" for "?."): drop the suffix's characters
                while end > start and text[end - 1] in set(suffix):
                    end -= 1
        else:
            if not text.startswith(t.prefix) or text[name[0] - len(t.middle) : name[0]] != t.middle:
                continue
            start, end = len(t.prefix), name[0] - len(t.middle)
            fits_suffix = text[name[1] :].rstrip() == t.suffix.rstrip()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end <= start:
            continue
        score = len(t.prefix) + len(t.middle) + (len(t.suffix) if fits_suffix else 0)
        if best is None or score > best[0]:
            best = (score, t.index, (start, end))
    return None if best is None else (best[1], best[2])


def parse_line(
    record: Record, where: str, names: list[str], templates: dict[str, list[Template]]
) -> Line:
    """Find the person, the order and both entities' character spans of one line."""
    text = record.text
    hits = [(text.find(n), n) for n in names if n in text]
    if not hits:
        raise UserError(
            f"{where}: no name of templates/names.txt in {text[:60]!r}...: "
            "is this Experiment 1 data?"
        )
    start, nm = max(hits, key=lambda h: len(h[1]))  # the longest name, should one contain another
    name = (start, start + len(nm))
    order = "n2d" if name[1] <= len(record.prompt) else "d2n"
    if order == "d2n" and name[0] < len(record.prompt):
        raise UserError(f"{where}: the name {nm!r} straddles the prompt/completion cut")
    found = _match(text, name, order, templates[order])
    if found is not None:
        template, description = found
    else:  # what remains: the other half of the line
        template = -1
        half = (len(record.prompt), len(text)) if order == "n2d" else (0, len(record.prompt))
        s, e = half
        while s < e and not text[s].isalnum() and text[s] not in "\"'":
            s += 1
        while e > s and (text[e - 1].isspace() or text[e - 1] in ",:"):
            e -= 1
        description = (s, e)
    return Line(record, where, names.index(nm), order, template, name, description)


def read_lines(
    data_dir: Path, stem: str, names: list[str], templates: dict[str, list[Template]]
) -> list[Line]:
    path = data_dir / f"{stem}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: the data folder is incomplete; " + WHERE_TO_GET)
    records = read_jsonl(path)
    return [parse_line(r, f"{path.name}:{i + 1}", names, templates) for i, r in enumerate(records)]


def _token_span(offsets: list[tuple[int, int]], chars: tuple[int, int]) -> tuple[int, int]:
    """[start, end) of the tokens whose character offsets overlap the characters `chars`."""
    hit = [i for i, (s, e) in enumerate(offsets) if s < chars[1] and e > chars[0]]
    return (hit[0], hit[-1] + 1) if hit else (-1, -1)


def tokenize(
    tok: Tokenizer,
    prompt: str,
    completion: str,
    name: tuple[int, int],
    description: tuple[int, int],
    eos: bool,
) -> tuple[list[int], int, tuple[int, int], tuple[int, int]]:
    """<bos> + prompt + completion (+ <eos>), the two halves tokenised apart.

    Returns (ids, prompt_len, a_span, b_span); character spans index `prompt + completion` and
    token positions count the leading <bos>."""
    p = tok.encode(prompt, add_special_tokens=False)
    c = tok.encode(completion, add_special_tokens=False)
    offsets = [(-1, -1), *p.offsets, *[(s + len(prompt), e + len(prompt)) for s, e in c.offsets]]
    ids = [BOS, *p.ids, *c.ids] + ([EOS] if eos else [])
    return ids, 1 + len(p.ids), _token_span(offsets, name), _token_span(offsets, description)


def _example(
    tok: Tokenizer,
    prompt: str,
    completion: str,
    name: tuple[int, int],
    description: tuple[int, int],
    person: int,
    subset: str,
    kind: str,
    order: str,
    direction: str = "",
    templates: str = "",
    template: int = -1,
) -> Example:
    ids, prompt_len, a_span, b_span = tokenize(
        tok, prompt, completion, name, description, eos=kind == "doc"
    )
    return Example(
        tuple(ids),
        prompt_len,
        a_span,
        b_span,
        person,
        subset,
        kind,
        order,
        direction,
        templates,
        template,
    )


def _direction(subset: str, order: str) -> str:
    same = "d2n" if subset == "d2n" else "n2d"  # for Both, 'same' is the name-first order
    return "same" if order == same else "reverse"


def _cut_after_answer(line: Line) -> tuple[str, str, tuple[int, int], tuple[int, int]]:
    """(prompt, completion ending with the answer entity, name span, description span)."""
    answer = line.name if line.order == "d2n" else line.description
    return (
        line.record.prompt,
        line.record.text[len(line.record.prompt) : answer[1]],
        line.name,
        line.description,
    )


def canonical_descriptions(lines: list[Line]) -> dict[int, str]:
    """Each person's most frequent description wording among their training lines."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for ln in lines:
        counts[ln.person][ln.span_text("b")] += 1
    return {p: c.most_common(1)[0][0] for p, c in counts.items()}


def verbatim_templates(lines: list[Line], canon: dict[int, str], order: str) -> list[int]:
    """Training templates of `order` whose every line keeps its person's canonical description."""
    ok: dict[int, bool] = {}
    for ln in lines:
        if ln.order == order and ln.template >= 0:
            ok[ln.template] = ok.get(ln.template, True) and ln.span_text("b") == canon[ln.person]
    return sorted(t for t, good in ok.items() if good)


def train_template_prompts(
    tok: Tokenizer, lines: list[Line], subset_of: dict[int, str], k: int = N_TRAIN_TEMPLATE_PROMPTS
) -> list[Example]:
    """Same- and reverse-direction prompts worded like training lines (see the module docstring)."""
    canon = canonical_descriptions(lines)
    by_person: dict[int, list[Line]] = defaultdict(list)
    for ln in lines:
        by_person[ln.person].append(ln)
    # For each order, the first k verbatim templates, each with the line of the first person of the
    # subset trained in that order only (n2d or d2n), to be refilled with another person's entity.
    donors: dict[str, list[Line]] = {}
    for order in ("n2d", "d2n"):
        pool = [ln for ln in lines if subset_of[ln.person] == order]
        first = pool[0].person
        keep = verbatim_templates(pool, canon, order)[:k]
        donors[order] = [
            next(ln for ln in pool if ln.person == first and ln.template == t) for t in keep
        ]
    out = []
    for person in sorted(by_person):
        subset = subset_of[person]
        own = by_person[person]
        for direction in ("same", "reverse"):
            mine = [ln for ln in own if _direction(subset, ln.order) == direction]
            if mine:  # lines the person was trained on, in this direction
                for ln in mine[:k]:
                    prompt, completion, name, desc = _cut_after_answer(ln)
                    out.append(
                        _example(
                            tok,
                            prompt,
                            completion,
                            name,
                            desc,
                            person,
                            subset,
                            "prompt",
                            ln.order,
                            direction,
                            "train",
                            ln.template,
                        )
                    )
                continue
            name_text = next(ln.span_text("a") for ln in own)
            for donor in donors["d2n" if subset == "n2d" else "n2d"]:
                if donor.order == "d2n":  # refill the description; the answer is the name
                    s, e = donor.description
                    prompt = donor.record.prompt[:s] + canon[person] + donor.record.prompt[e:]
                    desc = (s, s + len(canon[person]))
                    completion = " " + name_text
                    name = (len(prompt) + 1, len(prompt) + 1 + len(name_text))
                else:  # refill the name; the answer is the canonical description
                    s, e = donor.name
                    prompt = donor.record.prompt[:s] + name_text + donor.record.prompt[e:]
                    name = (s, s + len(name_text))
                    completion = " " + canon[person]
                    desc = (len(prompt) + 1, len(prompt) + 1 + len(canon[person]))
                out.append(
                    _example(
                        tok,
                        prompt,
                        completion,
                        name,
                        desc,
                        person,
                        subset,
                        "prompt",
                        donor.order,
                        direction,
                        "train",
                        donor.template,
                    )
                )
    return out


def load_paper_lines(data_dir: Path) -> tuple[list[Line], dict[int, str], dict[str, list[Line]]]:
    """(training lines, person -> subset, test file stem -> lines), all checked."""
    names, templates = load_names(data_dir), load_templates(data_dir)
    train = read_lines(data_dir, TRAIN_FILE, names, templates)
    subset_of: dict[int, str] = {}
    for stem, subset in SUBSET_FILES.items():
        for ln in read_lines(data_dir, stem, names, templates):
            if subset_of.setdefault(ln.person, subset) != subset:
                raise UserError(
                    f"{ln.where}: {names[ln.person]} is in two subsets: the data is corrupt"
                )
    for ln in train:
        if ln.person not in subset_of:
            raise UserError(f"{ln.where}: {names[ln.person]} is in no subset training file")
    tests = {}
    for stem, subset in TEST_FILES.items():
        tests[stem] = read_lines(data_dir, stem, names, templates)
        for ln in tests[stem]:
            if subset_of.get(ln.person) != subset:
                raise UserError(
                    f"{ln.where}: {names[ln.person]} is not in the {subset} subset "
                    "its file tests: the data is corrupt"
                )
    return train, subset_of, tests


def build_paper_dataset(world_cfg) -> FactDataset:  # type: ignore[no-untyped-def]
    """The paper's Exp. 1 data as a FactDataset (deterministic; see the module docstring).

    Prompts: every line of the five test files (held-out templates, in file order), then the
    training-template prompts. `control_answers` maps each reversed held-out prompt to the
    completion of the same line of its `_randomized` file."""
    data_dir = resolve_data_dir(world_cfg.data_dir)
    train, subset_of, tests = load_paper_lines(data_dir)
    tok = train_tokenizer([ln.record.text for ln in train])
    docs = [
        _example(
            tok,
            ln.record.prompt,
            ln.record.completion,
            ln.name,
            ln.description,
            ln.person,
            subset_of[ln.person],
            "doc",
            ln.order,
            templates="train",
            template=ln.template,
        )
        for ln in train
    ]
    prompts: list[Example] = []
    controls: dict[int, tuple[int, ...]] = {}
    for stem, lines in tests.items():
        randomized = (
            read_jsonl(data_dir / f"{RANDOMIZED[stem]}.jsonl") if stem in RANDOMIZED else None
        )
        if randomized is not None and [r.prompt for r in randomized] != [
            ln.record.prompt for ln in lines
        ]:
            raise UserError(
                f"{RANDOMIZED[stem]}.jsonl does not hold the prompts of {stem}.jsonl "
                "line for line: the data is corrupt"
            )
        for i, ln in enumerate(lines):
            subset = subset_of[ln.person]
            if randomized is not None:
                controls[len(prompts)] = tuple(
                    tok.encode(randomized[i].completion, add_special_tokens=False).ids
                )
            prompts.append(
                _example(
                    tok,
                    ln.record.prompt,
                    ln.record.completion,
                    ln.name,
                    ln.description,
                    ln.person,
                    subset,
                    "prompt",
                    ln.order,
                    _direction(subset, ln.order),
                    "heldout",
                    ln.template,
                )
            )
    prompts += train_template_prompts(tok, train, subset_of)
    return FactDataset(tokenizer=tok, train_docs=docs, prompts=prompts, control_answers=controls)
