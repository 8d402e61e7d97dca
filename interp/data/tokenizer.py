"""Tokenizers, all HF `tokenizers` objects saved as `tokenizer.json` (plain JSON, no pickle).

- `word_tokenizer(words)`: word-level over a synthetic world's closed vocabulary. One token per
  word, so token positions are word positions and decoding is exact (words joined by spaces).
- `train_tokenizer(texts)`: for real text (the paper's data), trained on the training file.

Special tokens, the same ids in every tokenizer: <pad>=0, <bos>=1, <eos>=2, <mask>=3, <unk>=4.

`hf_tokenizer(tok)` wraps any of them as the `transformers` tokenizer TransformerLens expects, so
`model.to_tokens`, `to_str_tokens`, `to_string` and `generate` work on the kit's models.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from interp.errors import UserError
from interp.files import atomic_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<bos>", "<eos>", "<mask>", "<unk>")
PAD, BOS, EOS, MASK, UNK = range(len(SPECIALS))


def word_tokenizer(words: list[str]) -> Tokenizer:
    """A word-level tokenizer over `words` (specials first, then `words` in order)."""
    vocab = {w: i for i, w in enumerate([*SPECIALS, *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIALS))
    return tok


def train_tokenizer(texts: list[str], vocab_size: int = 4000) -> Tokenizer:
    """Byte-level BPE trained on `texts`.

    Byte-level BPE rather than word-level because the paper's held-out test templates contain
    words that never occur in its training file: a word-level tokenizer would turn them into
    <unk> and the generated text could never be compared with the paper's rule, while byte-level
    BPE encodes any string and decodes it back exactly (spaces and punctuation included).
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, f"special token {s} must have id {i}"
    return tok


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of `text`, without specials."""
    return tok.encode(text, add_special_tokens=False).ids


def decode(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=True)


def hf_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """`tok` as a `transformers.PreTrainedTokenizerFast` that TransformerLens can attach.

    It prepends <bos> itself (`add_bos_token=True`), exactly as the dataset writes every
    document and prompt, so `model.to_tokens(text)` gives the ids training saw for that text
    (without the trailing <eos> a document carries), and TransformerLens records
    `tokenizer_prepends_bos=True` instead of guessing. A copy of `tok` is wrapped, so the
    dataset's tokenizer is never modified. `name_or_path` is set because TransformerLens reads
    it when it normalises a tokenizer (it never loads anything from it here: with
    `add_bos_token=True` it keeps the tokenizer as given).
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import TruncationStrategy

    encode_plus = inspect.signature(PreTrainedTokenizerFast._encode_plus)

    class KitTokenizer(PreTrainedTokenizerFast):
        """Says which words of a text are not in the run's vocabulary (the world's words are
        lower-case, so "Hello", a capitalised name or "raditu." with its full stop attached
        would otherwise become <unk> without a word), and when a text is cut to a maximum
        length (`model.to_tokens` cuts at the model's n_ctx)."""

        def _encode_plus(self, text: Any, *args: Any, **kwargs: Any) -> Any:
            # transformers sets truncation and padding on the backend tokenizer in place, so
            # texts are measured on a copy of it that does neither
            measure = self.__dict__.get("_measure")
            if measure is None:
                measure = Tokenizer.from_str(self.backend_tokenizer.to_str())
                measure.no_truncation()
                measure.no_padding()
                self.__dict__["_measure"] = measure
            warn_unknown(measure, text)
            call = encode_plus.bind(self, text, *args, **kwargs).arguments
            cut = call.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE)
            if call.get("max_length") and cut != TruncationStrategy.DO_NOT_TRUNCATE:
                warn_truncated(measure, text, call["max_length"])
            return super()._encode_plus(text, *args, **kwargs)

    return KitTokenizer(
        tokenizer_object=Tokenizer.from_str(tok.to_str()),
        bos_token=SPECIALS[BOS],
        eos_token=SPECIALS[EOS],
        pad_token=SPECIALS[PAD],
        mask_token=SPECIALS[MASK],
        unk_token=SPECIALS[UNK],
        add_bos_token=True,
        name_or_path="interp",
    )


def unknown_words(tok: Tokenizer, text: str) -> list[str]:
    """The pieces of `text` the vocabulary does not know (they encode to <unk>)."""
    enc = tok.encode(text, add_special_tokens=False)
    pieces = (text[s:e] for i, (s, e) in zip(enc.ids, enc.offsets, strict=True) if i == UNK)
    return [p for p in pieces if p != SPECIALS[UNK]]  # "<unk>" itself is a known token


def warn_unknown(tok: Tokenizer, text: Any) -> None:
    """One warning naming the unknown words of `text` (a string or a list of them)."""
    texts = [text] if isinstance(text, str) else [t for t in text if isinstance(t, str)]
    unknown = sorted({w for t in texts for w in unknown_words(tok, t)})
    if unknown:
        warnings.warn(
            f"not in the run's vocabulary, read as <unk>: {', '.join(map(repr, unknown[:8]))}"
            f"{' ...' if len(unknown) > 8 else ''} (the world's words are lower-case, and a full "
            "stop is a word of its own: 'raditu .')",
            UnknownWordWarning,
            stacklevel=3,
        )


class UnknownWordWarning(UserWarning):
    """A text given to a run's tokenizer holds words its vocabulary does not know."""


def warn_truncated(tok: Tokenizer, text: Any, max_length: int) -> None:
    """One warning when a text (or any of a list) is longer than `max_length` tokens."""
    texts = [text] if isinstance(text, str) else [t for t in text if isinstance(t, str)]
    longest = max((len(tok.encode(t).ids) for t in texts), default=0)
    if longest > max_length:
        warnings.warn(
            f"a text of {longest} tokens was cut to {max_length} (the model's n_ctx): the "
            "tokens past it are dropped",
            TruncatedTextWarning,
            stacklevel=3,
        )


class TruncatedTextWarning(UserWarning):
    """A text given to a run's tokenizer was cut to the model's context length."""


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    with atomic_path(path) as tmp:
        tok.save(str(tmp))


def load_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise UserError(
            f"tokenizer file {path} not found: the run directory is incomplete, retrain it"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise UserError(f"tokenizer file {path} is corrupt ({e}): retrain the run") from None
