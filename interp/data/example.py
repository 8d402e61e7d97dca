"""`Example`: one tokenised text that carries its own metadata.

Every `Example` holds its token ids (with <bos> at position 0), where the prompt ends, and the
token spans of A (the person's name) and B (the description). Nothing downstream searches
strings for positions: the lens reads `a_last`/`b_last`, patching corrupts `a_span`, probes read
entity-alone inputs built by `interp.data.dataset`.

Vocabulary of the fields:
- `kind`: "doc" (a training document) or "prompt" (a test question: prompt + answer tokens);
- `order`: the order the text is written in, "n2d" (A first) or "d2n" (B first);
- `direction`: for prompts, "same" (the order the person was trained in) or "reverse";
- `templates`: "train" or "heldout" paraphrase templates.
For the `both` subset, "same" is the n2d order and "reverse" the d2n order (both were trained).

A module of its own, below every dataset builder, so that a recipe of documents
(`interp.data.bridge`) makes `Example`s without importing the builder that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One tokenised text. Spans are [start, end) token positions in `tokens`."""

    tokens: tuple[int, ...]
    prompt_len: int  # tokens[:prompt_len] is the prompt; tokens[prompt_len:] the answer (prompts)
    a_span: tuple[int, int]  # the name A; (-1, -1) where the text has no A
    b_span: tuple[int, int]  # the description B; (-1, -1) where the text has no B
    person: int
    subset: str
    kind: str
    order: str
    direction: str = ""
    templates: str = ""
    template: int = -1
    # Every labelled span of a biography-world text (interp.data.biography): (label, start, end)
    # for each occurrence of the name ("name") and each attribute value ("work", "city", ...).
    spans: tuple[tuple[str, int, int], ...] = ()

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.tokens[: self.prompt_len]

    @property
    def answer(self) -> tuple[int, ...]:
        return self.tokens[self.prompt_len :]

    @property
    def a_last(self) -> int:
        return self.a_span[1] - 1

    @property
    def b_last(self) -> int:
        return self.b_span[1] - 1
