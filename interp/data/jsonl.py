"""The paper's JSONL format: one `{"prompt": ..., "completion": ...}` object per line.

Berglund et al. (2023) publish every file of Experiment 1 in this format (the OpenAI fine-tuning
format): a training line is a whole document cut in two, a test line is a question and the answer
the model must produce. The cut sits right before the second entity, and the completion starts
with the space that separates it from the prompt, so `prompt + completion` is the full text.

- `read_jsonl(path)` reads such a file, refusing bytes that are not UTF-8, a malformed line, a
  line without the two string keys or with an empty one (each with its file:line), or a file
  with no lines, each in one line that names the fix.
- `to_records(dataset)` writes a synthetic world in the same format (`write_dataset` puts it on
  disk under the paper's file names), so the kit's worlds and the paper's data can be read by the
  same tools: documents are cut before their second entity, test prompts are prompt / " " + answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from interp.data.dataset import FactDataset
from interp.data.example import Example
from interp.data.tokenizer import EOS
from interp.errors import UserError
from interp.files import atomic_path

KEYS = ("prompt", "completion")
# Our subset names -> the paper's file prefixes.
FILE_PREFIX = {"n2d": "p2d", "d2n": "d2p", "both": "both"}


@dataclass(frozen=True)
class Record:
    """One JSONL line: `prompt + completion` is the whole text; the completion starts with " "."""

    prompt: str
    completion: str

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def read_jsonl(path: str | Path) -> list[Record]:
    """All records of a JSONL file (blank lines skipped). Raises UserError on any bad line."""
    return [r for _, r in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, Record]]:
    """(line number, record) for every non-blank line of a JSONL file, all checked.

    Refused, in one line naming the file and line: bytes that are not UTF-8, text that is not a
    JSON object, a missing or non-string key, an empty prompt or completion; and a file without
    a line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"JSONL file {path} not found: check the path (data_dir)")
    records = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                f"{e.start + 1}): the file is damaged; copy it again or re-save it as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path}:{lineno}: not valid JSON ({e.msg}): each line must be "
                '{"prompt": "...", "completion": "..."}'
            ) from None
        if not isinstance(obj, dict):
            raise UserError(
                f"{path}:{lineno}: a line must be a JSON object with keys "
                f"{KEYS}, got {type(obj).__name__}"
            )
        missing = [k for k in KEYS if k not in obj]
        if missing:
            raise UserError(
                f"{path}:{lineno}: missing key(s) {missing}: each line needs "
                '"prompt" and "completion"'
            )
        bad = [k for k in KEYS if not isinstance(obj[k], str)]
        if bad:
            raise UserError(f"{path}:{lineno}: {bad} must be string(s)")
        empty = [k for k in KEYS if not obj[k].strip()]
        if empty:
            raise UserError(
                f"{path}:{lineno}: empty {' and '.join(empty)}: each line needs a prompt and the "
                "completion that follows it; delete or complete the line"
            )
        records.append((lineno, Record(obj["prompt"], obj["completion"])))
    if not records:
        raise UserError(f"{path} is empty: expected one JSON object per line with keys {KEYS}")
    return records


def write_jsonl(path: str | Path, records: list[Record]) -> None:
    """Write records one JSON object per line, atomically (temp file, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(
                json.dumps({"prompt": r.prompt, "completion": r.completion}, ensure_ascii=False)
                + "\n"
            )


def example_record(dataset: FactDataset, e: Example) -> Record:
    """A document or test prompt as prompt / completion, cut at `e.prompt_len`.

    Documents are cut before their second entity (render() sets prompt_len there) and lose their
    <eos>; test prompts are cut between prompt and answer. Words are joined by single spaces.
    """
    body = e.tokens[e.prompt_len :]
    if e.kind == "doc" and body and body[-1] == EOS:
        body = body[:-1]
    return Record(dataset.text(e.tokens[: e.prompt_len]), " " + dataset.text(body))


def _test_stem(subset: str, direction: str, templates: str) -> str:
    """The paper's name for a test file; training-template prompts get `_train_templates`."""
    stem = FILE_PREFIX[subset]
    if direction == "reverse" and subset != "both":
        stem += "_reverse"
    stem += "_prompts_test"
    return stem + ("_train_templates" if templates == "train" else "")


def to_records(dataset: FactDataset) -> dict[str, list[Record]]:
    """A dataset under the paper's file names (without .jsonl).

    `{p2d,d2p,both}_prompts_train` and `all_prompts_train` hold the documents; test files hold
    held-out-template prompts as in the paper (`both_prompts_test` carries both directions) and
    training-template prompts in `*_train_templates` files.
    """
    out: dict[str, list[Record]] = {"all_prompts_train": []}
    for e in dataset.train_docs:
        r = example_record(dataset, e)
        out.setdefault(f"{FILE_PREFIX[e.subset]}_prompts_train", []).append(r)
        out["all_prompts_train"].append(r)
    for e in dataset.prompts:
        out.setdefault(_test_stem(e.subset, e.direction, e.templates), []).append(
            example_record(dataset, e)
        )
    return out


def write_dataset(dataset: FactDataset, out_dir: str | Path) -> list[Path]:
    """Write `to_records(dataset)` as `<out_dir>/<name>.jsonl`; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, records in to_records(dataset).items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
        paths.append(out_dir / f"{name}.jsonl")
    return paths
