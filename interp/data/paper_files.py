"""The published files of Berglund et al. (2023), Experiment 1: found, read, parsed and checked.

`interp.data.paper` builds the kit's dataset from what this module reads: every line of the
training and test files as a `Line` (its person, its order, its template and the character spans
of both entities), each checked against the others, and the `_randomized` control files.

Where the files are (`resolve_data_dir`): `world.data_dir` may be a version folder of the paper's
repository (`<clone>/data/reverse_experiments/june_version_7921032488/`, its templates beside it
in `data/reverse_experiments/templates/`), a folder laid out like
`../shared/datasets/reversal_curse_exp1/` (templates inside), or the repository's root, where
`world.data_version` names the version folder. Needed: the three per-subset training files
`{p2d,d2p,both}_prompts_train.jsonl`, the five test files, and `templates/` with `names.txt`,
`p2d_templates.txt` and `d2p_templates.txt`. Optional: `all_prompts_train.jsonl` (the three
training files concatenated in that order; checked against them when present) and the
`_randomized` files (without them the control answer is drawn as on a synthetic world). Template
lines the kit cannot use (one slot, or the slots in the other file's order) are skipped with one
warning line; the other templates keep their line numbers as indices.

How a line is read:
- the person is the one name of `templates/names.txt` the line contains, with the description
  it is said with: a version may give one name to two people (the repository's larger version
  does, across subsets and within one), so the files are read person by person (a run of lines
  about one name) and runs of one name are one person where their descriptions share their
  words (`People`); the person id is the name's index in that file (for a second person of the
  name, an id past the list's end), and the subset is that of the training file;
- the name's character span is where the name is; the description's span is found by matching
  the line against the paraphrase templates (`templates/{p2d,d2p}_templates.txt`): the template's
  own words are stripped and what remains between them is the description, as that line words it
  (lines reword it to fit the template: "directed the ...", "being the ..."). A line that fits no
  template keeps the other half of the text as the description.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from interp.data.jsonl import Record, read_jsonl, read_jsonl_numbered
from interp.errors import UserError

DEFAULT_DATA_DIR = "../shared/datasets/reversal_curse_exp1"
DEFAULT_DATA_VERSION = "june_version_7921032488"  # the paper's Experiment 1 (30 people per subset)
REPO_DATA = Path("data") / "reverse_experiments"  # where the repository keeps its versions
REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_FILE = "all_prompts_train"
# The per-subset training files, in the order the paper concatenates them into TRAIN_FILE.
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
NAMES_FILE = "names.txt"
TEMPLATE_FILES = {"n2d": "p2d_templates.txt", "d2n": "d2p_templates.txt"}
FIRST_SLOT = {"n2d": "<name>", "d2n": "<description>"}
REPO_URL = "github.com/lukasberglund/reversal_curse"
WHERE_TO_GET = (
    f"clone {REPO_URL} and pass --set world.data_dir=<the clone> (world.data_version picks the "
    f"version folder under {REPO_DATA.as_posix()}/, default {DEFAULT_DATA_VERSION})"
)


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per process: data the kit reads around (skipped template lines,
    absent optional files). The dataset is rebuilt by every command that loads a run, so the
    same warning would otherwise repeat."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class PaperFolder:
    """Where one version of the Exp. 1 data lies: its JSONL files and its templates folder
    (beside the version folders in the repository, inside it in a folder laid out like
    `../shared/datasets/reversal_curse_exp1/`; see `resolve_data_dir`)."""

    data: Path  # the version folder: the JSONL files
    templates: Path  # names.txt and the paraphrase templates


def _has_version(folder: Path) -> bool:
    return any((folder / f"{stem}.jsonl").is_file() for stem in SUBSET_FILES)


def _templates_for(data: Path) -> Path:
    """The templates folder of version folder `data`: inside it, else beside it (the repository)."""
    for where in (data / "templates", data.parent / "templates"):
        if (where / NAMES_FILE).is_file():
            return where.resolve()
    raise UserError(
        f"templates/{NAMES_FILE} not found in {data} nor beside it in {data.parent}: copy the "
        f"folder {REPO_DATA.as_posix()}/templates/ of a clone of {REPO_URL} to "
        f"{data.parent / 'templates'}"
    )


def resolve_data_dir(data_dir: str, data_version: str = DEFAULT_DATA_VERSION) -> PaperFolder:
    """The data's folders, from `world.data_dir` ("" = the default; a relative path is tried as
    given, then from the kit's repository root) and `world.data_version`.

    `data_dir` may be the version folder itself (the JSONL files are in it), the repository's
    root (then `<root>/data/reverse_experiments/<data_version>`) or its
    `data/reverse_experiments` folder (then `<that>/<data_version>`)."""
    given = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    candidates = [given] if given.is_absolute() else [given, REPO_ROOT / given]
    for c in candidates:
        for data in (c, c / REPO_DATA / data_version, c / data_version):
            if _has_version(data):
                return PaperFolder(data.resolve(), _templates_for(data))
    for c in candidates:  # a folder that exists but holds no version: say what it lacks
        for versions in (c / REPO_DATA, c):
            found = sorted(d.name for d in versions.glob("*/") if _has_version(d))
            if found:
                raise UserError(
                    f"no version {data_version!r} in {versions} (it has {', '.join(found)}): "
                    f"pass e.g. --set world.data_version={found[0]}"
                )
        if c.is_dir():
            raise UserError(
                f"{c} holds no Experiment 1 data (no {'/'.join(SUBSET_FILES)}.jsonl in it, nor "
                f"in {REPO_DATA.as_posix()}/{data_version}/ below it): " + WHERE_TO_GET
            )
    raise UserError(f"the paper's Exp. 1 data folder {given} does not exist: " + WHERE_TO_GET)


@dataclass(frozen=True)
class Template:
    """A paraphrase template cut at its entities: prefix <e1> middle <e2> suffix."""

    order: str  # "n2d" (<name> first) or "d2n" (<description> first)
    index: int
    prefix: str
    middle: str
    suffix: str

    @classmethod
    def parse(cls, text: str, order: str, index: int) -> Template | None:
        """The template, or None for a line the kit cannot use: one that does not hold <name>
        and <description> once each, in the file's order (the repository's files hold a few,
        e.g. "Fighting against all odds, <name> has proven that true strength lies within.")."""
        parts = re.split(r"(<name>|<description>)", text.rstrip())
        if len(parts) != 5 or parts[1] != FIRST_SLOT[order] or parts[3] == parts[1]:
            return None
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


def _read_text(path: Path) -> list[str]:
    """The non-blank lines of a text file, stripped of trailing space; one line on a bad file."""
    if not path.is_file():
        raise UserError(
            f"{path} not found: copy it from {REPO_DATA.as_posix()}/templates/ of a clone of "
            f"{REPO_URL}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}): the file is damaged; "
            f"copy it again from {REPO_URL}"
        ) from None
    return [t.rstrip() for t in text.splitlines() if t.strip()]


def load_templates(templates_dir: Path) -> dict[str, list[Template]]:
    """Each order's paraphrase templates; a template's index is its line (blank lines skipped).

    Lines the kit cannot use are skipped, keeping the other lines' indices, and counted in one
    warning line."""
    out: dict[str, list[Template]] = {}
    skipped: list[str] = []
    for order, fname in TEMPLATE_FILES.items():
        path = templates_dir / fname
        out[order] = []
        for i, text in enumerate(_read_text(path)):
            t = Template.parse(text, order, i)
            if t is None:
                skipped.append(f"{fname}:{i + 1} {text[:50]!r}")
            else:
                out[order].append(t)
        if not out[order]:
            raise UserError(
                f"{path} holds no usable template ({FIRST_SLOT[order]} first, then the other "
                "slot): copy it again from " + REPO_URL
            )
    if skipped:
        warn(
            f"skipped {len(skipped)} template line(s) in {templates_dir} without <name> and "
            f"<description> once each in the file's order, e.g. {skipped[0]}"
        )
    return out


def load_names(templates_dir: Path) -> list[str]:
    return [n.strip() for n in _read_text(templates_dir / NAMES_FILE)]


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
            f"{where}: no name of templates/{NAMES_FILE} in {text[:60]!r}...: the kit knows a "
            "version's people from that list; put the templates folder the version was made "
            "with beside it (the repository's big_boy_7341940075 was made with the templates "
            "of its commit 965d0ca)"
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


def read_lines(path: Path, names: list[str], templates: dict[str, list[Template]]) -> list[Line]:
    """The parsed lines of one JSONL file, each with its file:line for error messages."""
    return [
        parse_line(r, f"{path.name}:{lineno}", names, templates)
        for lineno, r in read_jsonl_numbered(path)
    ]


def _missing(path: Path) -> UserError:
    return UserError(
        f"{path} not found: every version of Experiment 1 has it; copy it from the same folder "
        f"of a clone of {REPO_URL}"
    )


def _people(lines: list[Line]) -> list[int]:
    return sorted({ln.person for ln in lines})


SAME_PERSON = 0.5  # core-word overlap (Jaccard) above which two blocks of one name are one person


def _blocks(lines: list[Line]) -> list[list[Line]]:
    """`lines` cut into runs of consecutive lines about the same name (the files go person by
    person: a block is one person's lines in one order)."""
    out: list[list[Line]] = []
    for ln in lines:
        if out and out[-1][0].person == ln.person:
            out[-1].append(ln)
        else:
            out.append([ln])
    return out


def _core_words(block: list[Line]) -> frozenset[str]:
    """The words that at least half of a block's lines use in their description: what the
    description says, whatever each template's rewording adds."""
    counts: Counter[str] = Counter()
    for ln in block:
        counts.update(set(re.findall(r"[a-z0-9]+", ln.span_text("b").lower())))
    return frozenset(w for w, c in counts.items() if 2 * c >= len(block))


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class People:
    """Who is who in a version: a person is a name with a description, in one subset.

    The paper's June version gives every name one person; its larger version reuses names (two
    people called Astrid Waverly, one in NameToDescription, one in DescriptionToName, each with
    a description of their own). A person's id is the name's index in `names.txt` for the first
    person of that name (so a version without shared names keeps the ids it always had) and
    `len(names)`, `len(names) + 1`, ... for the others, in the order the files meet them."""

    names: list[str]
    subset_of: dict[int, str] = field(default_factory=dict)
    name_of: dict[int, str] = field(default_factory=dict)
    words: dict[int, frozenset[str]] = field(default_factory=dict)
    by_name: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))

    def _new(self, name: str, subset: str, words: frozenset[str]) -> int:
        pid = self.names.index(name)
        if pid in self.subset_of:
            pid = max(len(self.names) - 1, *self.subset_of) + 1
        self.subset_of[pid], self.name_of[pid], self.words[pid] = subset, name, words
        self.by_name[name, subset].append(pid)
        return pid

    def _closest(self, name: str, subset: str, words: frozenset[str]) -> int:
        """The person of `name` in `subset` whose description words overlap `words` most, or
        -1 where the subset has no one of that name."""
        pids = self.by_name.get((name, subset), [])
        return max(pids, key=lambda p: _overlap(self.words[p], words)) if pids else -1

    def learn(self, block: list[Line], subset: str) -> list[Line]:
        """A training block's lines with their person's id: the person of this name in `subset`
        whose description it shares (core-word overlap >= SAME_PERSON: the Both subset's two
        blocks per person), else a new person."""
        name, words = block[0].span_text("a"), _core_words(block)
        pid = self._closest(name, subset, words)
        if pid < 0 or _overlap(self.words[pid], words) < SAME_PERSON:
            pid = self._new(name, subset, words)
        else:
            self.words[pid] |= words
        return [replace(ln, person=pid) for ln in block]

    def identify(self, block: list[Line], subset: str) -> list[Line] | None:
        """A test block's lines with the id of the person of this name in `subset` whose
        description is closest, or None where the subset has no one of that name."""
        pid = self._closest(block[0].span_text("a"), subset, _core_words(block))
        return None if pid < 0 else [replace(ln, person=pid) for ln in block]

    def shared(self) -> list[str]:
        """The names that belong to more than one person."""
        count = Counter(self.name_of.values())
        return sorted(n for n, c in count.items() if c > 1)


def load_training_lines(
    folder: PaperFolder, names: list[str], templates: dict[str, list[Template]]
) -> tuple[list[Line], People]:
    """(the training lines, who is who) from the three per-subset training files.

    The paper's training set `all_prompts_train.jsonl` is these files concatenated in
    `SUBSET_FILES` order; a version may lack it. When present it must hold the same lines (in
    any order; its order is then the one used), else it is refused as corrupt."""
    lines: list[Line] = []
    people = People(names)
    for stem, subset in SUBSET_FILES.items():
        path = folder.data / f"{stem}.jsonl"
        if not path.is_file():
            raise _missing(path)
        mine = read_lines(path, names, templates)
        if len(_people(mine)) < 2:
            raise UserError(
                f"{path} holds lines about {len(_people(mine))} person, the kit needs at least "
                "two per subset (a control answer is another person's): the file is cut short; "
                f"copy it again from {REPO_URL}"
            )
        lines += [ln for block in _blocks(mine) for ln in people.learn(block, subset)]
    shared = people.shared()
    if shared:
        warn(
            f"{len(shared)} name(s) in {folder.data} belong to more than one person (e.g. "
            f"{shared[0]}): a person is a name with its description there, and the kit keeps "
            "them apart"
        )
    combined = folder.data / f"{TRAIN_FILE}.jsonl"
    if combined.is_file():
        by_record: dict[Record, list[Line]] = defaultdict(list)
        for ln in reversed(lines):
            by_record[ln.record].append(ln)
        ordered = []
        for lineno, r in read_jsonl_numbered(combined):
            if not by_record.get(r):
                raise UserError(
                    f"{combined.name}:{lineno} is no line of the per-subset training files "
                    f"({', '.join(SUBSET_FILES)}), or is there twice: the file is corrupt; "
                    "delete it (the kit builds the training set from the per-subset files)"
                )
            ordered.append(by_record[r].pop())
        if len(ordered) != len(lines):
            raise UserError(
                f"{combined} holds {len(ordered)} lines, the per-subset training files "
                f"{len(lines)}: the file is corrupt; delete it (the kit builds the training set "
                "from the per-subset files)"
            )
        lines = ordered
    return lines, people


def load_paper_lines(
    folder: PaperFolder,
) -> tuple[list[Line], dict[int, str], dict[str, list[Line]]]:
    """(training lines, person -> subset, test file stem -> lines), all checked."""
    names, templates = load_names(folder.templates), load_templates(folder.templates)
    train, people = load_training_lines(folder, names, templates)
    tests: dict[str, list[Line]] = {}
    for stem, subset in TEST_FILES.items():
        path = folder.data / f"{stem}.jsonl"
        if not path.is_file():
            raise _missing(path)
        tests[stem] = []
        for block in _blocks(read_lines(path, names, templates)):
            known = people.identify(block, subset)
            if known is None:
                ln = block[0]
                raise UserError(
                    f"{ln.where}: {ln.span_text('a')} is not in the {subset} subset "
                    "its file tests: the data is corrupt"
                )
            tests[stem] += known
        if len(_people(tests[stem])) < 2:
            raise UserError(
                f"{path} holds lines about one person, the kit needs at least two (a control "
                f"answer is another person's): the file is cut short; copy it again from {REPO_URL}"
            )
    return train, people.subset_of, tests


def load_controls(folder: PaperFolder, stem: str, lines: list[Line]) -> list[Record] | None:
    """The `_randomized` file of test file `stem`, line for line, or None where there is none
    (the log-probability control is then drawn as on a synthetic world: another person's answer
    on the same template, `interp.controls.control_answers`)."""
    if stem not in RANDOMIZED:
        return None
    path = folder.data / f"{RANDOMIZED[stem]}.jsonl"
    if not path.is_file():
        people: dict[tuple[str, int], set[int]] = defaultdict(set)
        for ln in lines:
            people[ln.order, ln.template].add(ln.person)
        for ln in lines:
            if len(people[ln.order, ln.template]) < 2:
                raise UserError(
                    f"{ln.where}: no other person is asked with this line's template, so without "
                    f"{path.name} there is no control answer to draw: copy {path.name} from the "
                    f"same folder of a clone of {REPO_URL}"
                )
        warn(
            f"{path} absent: the control answers of {stem}.jsonl are drawn from other people "
            "of the same subset and template, as on a synthetic world"
        )
        return None
    randomized = read_jsonl(path)
    if [r.prompt for r in randomized] != [ln.record.prompt for ln in lines]:
        raise UserError(
            f"{path} does not hold the prompts of {stem}.jsonl line for line: the data is "
            "corrupt; delete it (the controls are then drawn from other people) or copy it again"
        )
    return randomized
