"""Caption text → token ids for SHAN's text encoders.

Two processors share one interface, ``encode_batch(texts, max_words) -> TokenBatch``:

* :class:`Vocabulary` — the paper's word vocabulary for the learnable embedding + bi-GRU encoder.
  Index 0 is ``<pad>``, index 1 is ``<unk>``, then the words in order of decreasing frequency
  (ties alphabetical, so a vocabulary built twice from the same captions is identical).
* :class:`TransformerTextProcessor` — word-pieces of a local BERT-family tokenizer
  (``transformers.AutoTokenizer``) for the optional transformer text encoder.

Defined results for awkward input: an empty (or all-whitespace) caption becomes a single ``<unk>``
so every caption has length ≥ 1; a caption with no known word becomes all ``<unk>`` ids and still
scores.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shan.errors import ShanError

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0
UNK_ID = 1

# A token is a run of letters/digits (with inner apostrophes, e.g. "man's") or one other
# non-space character (punctuation, symbols) on its own.
_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_", re.UNICODE)


class VocabError(ShanError, ValueError):
    """A vocabulary file or text input that cannot be used (with a message saying why)."""


def tokenize(text: str) -> list[str]:
    """Split a caption into lower-case word and punctuation tokens.

    Unicode is NFKC-normalised first (full-width letters, ligatures and compatibility forms map to
    their plain equivalents), then case-folded to lower case. Punctuation is split off as separate
    tokens (``"dog."`` → ``["dog", "."]``); inner apostrophes stay inside the word (``"man's"``).

    Args:
        text: a Python ``str`` (bytes are rejected: decode them first).

    Returns:
        The tokens in order; ``[]`` for an empty or all-whitespace string.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects str, got {type(text).__name__} (decode bytes first)")
    norm = unicodedata.normalize("NFKC", text).lower()
    return _TOKEN_RE.findall(norm)


@dataclass
class TokenBatch:
    """A padded batch of encoded captions.

    Attributes:
        tokens: ``(M, n)`` int64 ids, padded with 0 (``n`` = longest length in the batch).
        lengths: ``(M,)`` int64, number of real tokens, always ≥ 1.
        words: for each caption, the displayed token of every real position (``len == lengths[m]``).
        unknown: for each caption and position, whether the token is out of vocabulary (``<unk>``).
        truncated: for each caption, whether tokens beyond ``max_words`` were dropped.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    words: list[list[str]]
    unknown: list[list[bool]]
    truncated: list[bool]

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def to(self, device: torch.device | str) -> TokenBatch:
        """Move the tensors to ``device`` (the Python lists are shared)."""
        return TokenBatch(
            self.tokens.to(device),
            self.lengths.to(device),
            self.words,
            self.unknown,
            self.truncated,
        )

    def select(self, index: Sequence[int] | slice) -> TokenBatch:
        """Sub-batch of the given captions, re-padded to its own longest length."""
        idx = list(range(len(self)))[index] if isinstance(index, slice) else list(index)
        lengths = self.lengths[idx]
        n = int(lengths.max()) if len(idx) else 1
        return TokenBatch(
            tokens=self.tokens[idx, :n].clone(),
            lengths=lengths.clone(),
            words=[self.words[i] for i in idx],
            unknown=[self.unknown[i] for i in idx],
            truncated=[self.truncated[i] for i in idx],
        )


def _pack(
    ids: list[list[int]],
    words: list[list[str]],
    unknown: list[list[bool]],
    truncated: list[bool],
) -> TokenBatch:
    """Pad lists of ids into a :class:`TokenBatch` (all lists non-empty)."""
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    n = int(lengths.max()) if len(ids) else 1
    tokens = torch.zeros((len(ids), n), dtype=torch.long)
    for m, row in enumerate(ids):
        tokens[m, : len(row)] = torch.tensor(row, dtype=torch.long)
    return TokenBatch(tokens, lengths, words, unknown, truncated)


def _check_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode_batch expects a list of captions, got a single str")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"captions must be str, got {type(t).__name__}")
    return out


class Vocabulary:
    """Word ↔ id map with ``<pad>`` = 0 and ``<unk>`` = 1.

    Example:
        >>> v = Vocabulary.build(["A dog runs.", "a cat"])
        >>> v.encode("a dog sleeps")  # "sleeps" is unknown
        [2, 5, 1]
    """

    def __init__(self, words: Sequence[str] = ()) -> None:
        self.itos: list[str] = [PAD_TOKEN, UNK_TOKEN]
        self.stoi: dict[str, int] = {PAD_TOKEN: PAD_ID, UNK_TOKEN: UNK_ID}
        for w in words:
            self.add(w)

    def add(self, word: str) -> int:
        """Add ``word`` (if new) and return its id."""
        if word not in self.stoi:
            self.stoi[word] = len(self.itos)
            self.itos.append(word)
        return self.stoi[word]

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Vocabulary of every token that occurs at least ``min_count`` times in ``captions``.

        Words are ordered by decreasing count, ties alphabetically (deterministic).
        """
        if min_count < 1:
            raise VocabError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for cap in captions:
            counts.update(tokenize(cap))
        words = sorted(
            (w for w, c in counts.items() if c >= min_count),
            key=lambda w: (-counts[w], w),
        )
        words = [w for w in words if w not in (PAD_TOKEN, UNK_TOKEN)]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (unknown words → 1); may be empty for an empty string."""
        return [self.stoi.get(w, UNK_ID) for w in tokenize(text)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` (ids out of range → ``<unk>``)."""
        return [self.itos[i] if 0 <= i < len(self.itos) else UNK_TOKEN for i in map(int, ids)]

    def encode_batch(self, texts: Sequence[str], max_words: int = 64) -> TokenBatch:
        """Encode captions into a padded :class:`TokenBatch`.

        Each caption keeps its first ``max_words`` tokens (``truncated`` says when more were
        dropped). An empty caption becomes a single ``<unk>`` (word ``"<unk>"``, unknown=True),
        so every length is ≥ 1; a caption with no known word is all ``<unk>`` ids but ``words``
        keeps the original tokens for display.
        """
        if max_words < 1:
            raise VocabError(f"max_words must be >= 1, got {max_words}")
        ids, words, unknown, truncated = [], [], [], []
        for text in _check_texts(texts):
            toks = tokenize(text)
            truncated.append(len(toks) > max_words)
            toks = toks[:max_words]
            if not toks:
                ids.append([UNK_ID])
                words.append([UNK_TOKEN])
                unknown.append([True])
                continue
            row = [self.stoi.get(w, UNK_ID) for w in toks]
            ids.append(row)
            words.append(toks)
            unknown.append([i == UNK_ID for i in row])
        return _pack(ids, words, unknown, truncated)

    def to_dict(self) -> dict:
        return {"kind": "vocabulary", "itos": list(self.itos)}

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (``{"kind": "vocabulary", "itos": [...]}``)."""
        Path(path).write_text(
            json.dumps(self.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save` (clear :class:`VocabError` when malformed)."""
        p = Path(path)
        if not p.is_file():
            raise VocabError(f"vocabulary file not found: {p}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VocabError(f"vocabulary file {p} is not valid JSON: {e}") from None
        itos = data.get("itos") if isinstance(data, dict) else None
        if (
            not isinstance(itos, list)
            or len(itos) < 2
            or itos[:2] != [PAD_TOKEN, UNK_TOKEN]
            or not all(isinstance(w, str) for w in itos)
        ):
            raise VocabError(
                f"vocabulary file {p} is malformed: expected {{'itos': ['<pad>', '<unk>', ...]}}"
            )
        if len(set(itos)) != len(itos):
            raise VocabError(f"vocabulary file {p} has duplicate words")
        return cls(itos[2:])


class TransformerTextProcessor:
    """Word-piece processor for the transformer text encoder (a local BERT-family directory).

    ``encode_batch`` returns the same :class:`TokenBatch` as :class:`Vocabulary`, with these
    differences: ``words`` are the word-pieces (e.g. ``"##ing"``), the special tokens ``[CLS]`` and
    ``[SEP]`` are **kept** in ``tokens``/``words`` (the transformer needs them; they count towards
    ``max_words``), and ``unknown`` marks the tokenizer's own unknown token. Padding uses id 0 in
    ``tokens`` regardless of the tokenizer's pad id; the model builds its attention mask from
    ``lengths``.

    Saving a processor means remembering its directory (``model_dir``); the tokenizer files are not
    copied.
    """

    def __init__(self, model_dir: str | Path, max_words: int = 64) -> None:
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        if not Path(self.model_dir).is_dir():
            raise VocabError(f"transformer directory not found: {self.model_dir}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise VocabError(f"cannot load a tokenizer from {self.model_dir}: {e}") from None
        self.max_words = int(max_words)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word in self.tokenizer.get_vocab()

    def __repr__(self) -> str:
        return f"TransformerTextProcessor({self.model_dir!r})"

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` including ``[CLS]``/``[SEP]``."""
        return self.encode_batch([text], self.max_words).tokens[0].tolist()

    def encode_batch(self, texts: Sequence[str], max_words: int | None = None) -> TokenBatch:
        """Encode captions into a padded :class:`TokenBatch` (see the class docstring)."""
        max_words = self.max_words if max_words is None else int(max_words)
        n_special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if max_words < n_special + 1:
            raise VocabError(f"max_words must be >= {n_special + 1} for a transformer tokenizer")
        texts = _check_texts(texts)
        unk_id = self.tokenizer.unk_token_id
        ids, words, unknown, truncated = [], [], [], []
        for text in texts:
            norm = unicodedata.normalize("NFKC", text)
            n_full = len(self.tokenizer(norm, add_special_tokens=True)["input_ids"])
            row = self.tokenizer(
                norm, add_special_tokens=True, truncation=True, max_length=max_words
            )["input_ids"]
            if len(row) <= n_special and unk_id is not None:  # empty caption → one unknown token
                row = row[:1] + [unk_id] + row[1:] if row else [unk_id]
            truncated.append(n_full > max_words)
            ids.append(list(row))
            words.append(self.tokenizer.convert_ids_to_tokens(list(row)))
            unknown.append([unk_id is not None and i == unk_id for i in row])
        return _pack(ids, words, unknown, truncated)

    def to_dict(self) -> dict:
        return {
            "kind": "transformer",
            "model_dir": self.model_dir,
            "max_words": self.max_words,
        }

    def save(self, path: str | Path) -> None:
        """Write ``{"kind": "transformer", "model_dir": ...}`` (the directory is not copied)."""
        Path(path).write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TransformerTextProcessor:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise VocabError(f"cannot read transformer text processor file {p}: {e}") from None
        if (
            not isinstance(data, dict)
            or data.get("kind") != "transformer"
            or "model_dir" not in data
        ):
            raise VocabError(f"{p} does not describe a transformer text processor")
        return cls(data["model_dir"], int(data.get("max_words", 64)))


def load_text_processor(path: str | Path) -> Vocabulary | TransformerTextProcessor:
    """Load either processor from the JSON file written by its ``save``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabError(f"text processor file not found: {p}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VocabError(f"cannot read text processor file {p}: {e}") from None
    if isinstance(data, dict) and data.get("kind") == "transformer":
        return TransformerTextProcessor.load(p)
    return Vocabulary.load(p)


__all__ = [
    "PAD_ID",
    "PAD_TOKEN",
    "UNK_ID",
    "UNK_TOKEN",
    "TokenBatch",
    "TransformerTextProcessor",
    "VocabError",
    "Vocabulary",
    "load_text_processor",
    "tokenize",
]
