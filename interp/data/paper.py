"""The published data of Berglund et al. (2023), Experiment 1, as a `FactDataset`.

The paper fine-tunes GPT-3 on 3600 sentences about 90 fictitious celebrities in three disjoint
subsets of 30 people: NameToDescription ("Daphne Barrington is the director of ...", our `n2d`),
DescriptionToName ("The director of ... is Daphne Barrington", our `d2n`) and Both (both orders,
in separate lines). Each fact is written with 30 paraphrase templates; the test files ask it with
10 held-out templates, in the trained order and reversed, and the paper scores greedy completions
by exact match (Table 1) and the log-probability of the right completion against a random other
one of the same subset, from its `_randomized` files (Figure 4). This module turns those files
(see the data folder's README) into the kit's `Example`s, so every instrument runs on the paper's
data as on a synthetic world. `interp.data.paper_files` finds, reads and checks the files: each
line's person, order, template and the character spans of its two entities.

How a line becomes an `Example`: prompt and completion are tokenised separately and joined, so
the token boundary is exactly the paper's prompt/completion cut; token spans are the tokens whose
character offsets overlap the entity's characters, computed once here. Documents are <bos> +
prompt + completion + <eos>, with the loss on every token, as in the paper.

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

from collections import Counter, defaultdict
from dataclasses import replace

from tokenizers import Tokenizer

from interp.config import WorldConfig
from interp.data.dataset import DIRECTIONS, FactDataset, prompt_order
from interp.data.example import Example
from interp.data.jsonl import Record
from interp.data.paper_files import Line, load_controls, load_paper_lines, resolve_data_dir
from interp.data.tokenizer import BOS, EOS, train_tokenizer

N_TRAIN_TEMPLATE_PROMPTS = 5  # training-template prompts per person and direction


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
    tok: Tokenizer, line: Line, subset: str, kind: str, direction: str = "", templates: str = ""
) -> Example:
    """`line` (its person, order and template) as an `Example` of `kind`."""
    r = line.record
    ids, prompt_len, a_span, b_span = tokenize(
        tok, r.prompt, r.completion, line.name, line.description, eos=kind == "doc"
    )
    return Example(
        tuple(ids),
        prompt_len,
        a_span,
        b_span,
        line.person,
        subset,
        kind,
        line.order,
        direction,
        templates,
        line.template,
    )


def _direction(subset: str, order: str) -> str:
    """'same' where `order` is the subset's trained order (name first for Both), else 'reverse'."""
    return "same" if order == prompt_order(subset, "same") else "reverse"


def _cut_after_answer(line: Line) -> Line:
    """`line` with its completion ending with the answer entity (the second one)."""
    answer = line.name if line.order == "d2n" else line.description
    prompt = line.record.prompt
    return replace(line, record=Record(prompt, line.record.text[len(prompt) : answer[1]]))


def _refill(donor: Line, person: int, name: str, description: str) -> Line:
    """`donor`'s prompt with its first entity replaced by `person`'s (`name` or `description`),
    completed by the person's other entity: a training wording of an order the person was not
    trained in."""
    if donor.order == "d2n":  # refill the description; the answer is the name
        s, e = donor.description
        prompt = donor.record.prompt[:s] + description + donor.record.prompt[e:]
        desc = (s, s + len(description))
        completion = " " + name
        name_span = (len(prompt) + 1, len(prompt) + 1 + len(name))
    else:  # refill the name; the answer is the description
        s, e = donor.name
        prompt = donor.record.prompt[:s] + name + donor.record.prompt[e:]
        name_span = (s, s + len(name))
        completion = " " + description
        desc = (len(prompt) + 1, len(prompt) + 1 + len(description))
    record = Record(prompt, completion)
    return replace(donor, record=record, person=person, name=name_span, description=desc)


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
    # For each order, the first k verbatim templates, each with its first line in the subset
    # trained in that order only (n2d or d2n; the files go person by person, so that is the line
    # of the subset's first person), to be refilled with another person's entity.
    donors: dict[str, list[Line]] = {}
    for order in ("n2d", "d2n"):
        pool = [ln for ln in lines if subset_of[ln.person] == order]
        keep = verbatim_templates(pool, canon, order)[:k]
        donors[order] = [next(ln for ln in pool if ln.template == t) for t in keep]
    out = []
    for person in sorted(by_person):
        subset = subset_of[person]
        own = by_person[person]
        for direction in DIRECTIONS:
            mine = [ln for ln in own if _direction(subset, ln.order) == direction]
            if mine:  # lines the person was trained on, in this direction
                asked = [_cut_after_answer(ln) for ln in mine[:k]]
            else:  # another order's training templates, refilled with this person's entities
                name = own[0].span_text("a")
                others = donors["d2n" if subset == "n2d" else "n2d"]
                asked = [_refill(d, person, name, canon[person]) for d in others]
            out += [_example(tok, ln, subset, "prompt", direction, "train") for ln in asked]
    return out


def build_paper_dataset(world_cfg: WorldConfig) -> FactDataset:
    """The paper's Exp. 1 data as a FactDataset (deterministic; see the module docstring).

    Prompts: every line of the five test files (held-out templates, in file order), then the
    training-template prompts. `control_answers` maps each reversed held-out prompt to the
    completion of the same line of its `_randomized` file."""
    folder = resolve_data_dir(world_cfg.data_dir, world_cfg.data_version)
    train, subset_of, tests = load_paper_lines(folder)
    tok = train_tokenizer([ln.record.text for ln in train])
    docs = [_example(tok, ln, subset_of[ln.person], "doc", templates="train") for ln in train]
    prompts: list[Example] = []
    controls: dict[int, tuple[int, ...]] = {}
    for stem, lines in tests.items():
        randomized = load_controls(folder, stem, lines)
        for i, ln in enumerate(lines):
            subset = subset_of[ln.person]
            if randomized is not None:
                controls[len(prompts)] = tuple(
                    tok.encode(randomized[i].completion, add_special_tokens=False).ids
                )
            prompts.append(
                _example(tok, ln, subset, "prompt", _direction(subset, ln.order), "heldout")
            )
    prompts += train_template_prompts(tok, train, subset_of)
    return FactDataset(tokenizer=tok, train_docs=docs, prompts=prompts, control_answers=controls)
