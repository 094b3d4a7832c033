"""Minimal-pair perturbations of any caption, from its text alone (no scene needed).

:func:`perturb` returns captions that differ from the given one in one controlled way — the
text-level counterpart of the toy world's typed negatives (the kinds share their names with
:data:`shan.toyworld.negatives.NEGATIVE_TYPES`). Two users: training with word-swap negatives on
real Flickr30K / COCO captions, and the app's automatic minimal pairs (a user types a caption, the
app shows each perturbation and which step of SHAN prefers the true one).

Kinds (:data:`PERTURBATION_KINDS`):

- ``colour_swap``: two different colour words exchanged, or the only one replaced by another;
- ``shape_swap``: two nouns exchanged (keeping each place's number), or the only one replaced by
  another (nouns from the caller's list; without one, the heads of determiner phrases);
- ``size_swap``: two size words exchanged, or the only one replaced by its opposite;
- ``relation_swap``: the phrases on both sides of a relation exchanged ("a cat on a mat" → "a mat
  on a cat");
- ``relation_opposite``: a relation replaced by its opposite (left/right, above/below, on/under,
  in front of/behind, inside/outside);
- ``count``: a number (or ``a``/``an``) changed by one, with plural agreement of the noun and of a
  following ``is``/``are``;
- ``word_order``: an attribute word moved from one noun to another that has none of its kind ("a
  red circle and a square" → "a circle and a red square"): the same words in another order.

The result's ``text`` is the caption as :func:`shan.data.vocab.tokenize` reads it (NFKC, lower
case; spacing and punctuation kept), ``changed`` the indices of the tokens of the new text that
differ from the old. Deterministic for a given ``seed``; never returns the caption itself; any
string is accepted (empty, punctuation only, any script): it just yields fewer perturbations.

Phrases are found with a small heuristic (a determiner or number starts one; it runs until a
preposition, verb-like ``-ing`` word, copula, conjunction or punctuation), good enough for the
captions of these datasets, not a parser.
"""

from __future__ import annotations

import difflib
import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shan.data.vocab import _TOKEN_RE  # the tokenizer's own pattern: token positions line up
from shan.errors import ShanError
from shan.toyworld.negatives import (
    COLOUR_SWAP,
    COUNT,
    RELATION_OPPOSITE,
    RELATION_SWAP,
    SHAPE_SWAP,
    SIZE_SWAP,
    WORD_ORDER,
)

PERTURBATION_KINDS = (
    COLOUR_SWAP,
    SHAPE_SWAP,
    SIZE_SWAP,
    RELATION_SWAP,
    RELATION_OPPOSITE,
    COUNT,
    WORD_ORDER,
)

DEFAULT_COLOURS = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
    "grey", "gray", "cyan", "turquoise", "violet", "silver", "golden", "tan", "beige",
)  # fmt: skip
DEFAULT_SIZES = (("small", "large"), ("little", "big"), ("tiny", "huge"), ("short", "tall"))
DEFAULT_RELATIONS = (
    ("left", "right"),
    ("above", "below"),
    ("on", "under"),
    ("in front of", "behind"),
    ("inside", "outside"),
)
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_IRREGULAR = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
    "foot": "feet", "tooth": "teeth", "goose": "geese", "knife": "knives", "leaf": "leaves",
    "wolf": "wolves", "shelf": "shelves", "sheep": "sheep", "fish": "fish", "deer": "deer",
    "rhombus": "rhombuses", "bus": "buses", "glass": "glasses",
}  # fmt: skip
_SINGULAR = {v: k for k, v in _IRREGULAR.items()}
_DETERMINERS = frozenset(
    {"a", "an", "the", "this", "that", "these", "those", "his", "her", "their", "its", "my",
     "your", "our", "some", "many", "several", "each", "every", "another", *NUMBER_WORDS}
)  # fmt: skip
_PLURAL_DETS = frozenset({"these", "those", "some", "many", "several", *NUMBER_WORDS[1:]})
_BOUNDARY = frozenset(
    {"is", "are", "was", "were", "be", "being", "been", "and", "or", "but", "while", "with",
     "without", "who", "which", "that", "as", "in", "on", "at", "of", "by", "for", "from", "to",
     "into", "onto", "over", "under", "near", "behind", "beside", "next", "above", "below",
     "inside", "outside", "between", "through", "across", "along", "around", "left", "right",
     "front", "there", "has", "have", "where", "then"}
)  # fmt: skip
_PLACE_WORDS = frozenset({"left", "right", "top", "bottom", "side", "middle", "center", "front",
                          "back", "background", "foreground", "corner"})  # fmt: skip


class PerturbError(ShanError, TypeError):
    """A caption that is not a string (decode bytes first)."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbed caption: its kind, text, changed token indices (in the new text), a note."""

    kind: str
    text: str
    changed: list[int]
    note: str


@dataclass(frozen=True)
class WordLists:
    """The words perturbations act on. ``nouns`` (e.g. the toy world's shapes) enable exact
    noun swaps; without them the heads of determiner phrases are used."""

    colours: tuple[str, ...] = DEFAULT_COLOURS
    sizes: tuple[tuple[str, str], ...] = DEFAULT_SIZES
    relations: tuple[tuple[str, str], ...] = DEFAULT_RELATIONS
    nouns: tuple[str, ...] = ()
    numbers: tuple[str, ...] = NUMBER_WORDS
    extra: Mapping[str, str] = field(default_factory=dict)  # more irregular plurals


def pluralize(word: str, extra: Mapping[str, str] | None = None) -> str:
    """English plural of a noun (irregular forms, -es, -ies; a plural stays as it is)."""
    table = {**_IRREGULAR, **(extra or {})}
    if word in table:
        return table[word]
    if word in table.values() or (word.endswith("s") and not word.endswith(("ss", "us"))):
        return word
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def singularize(word: str, extra: Mapping[str, str] | None = None) -> str:
    """English singular of a noun (the inverse of :func:`pluralize` on its outputs)."""
    table = {**_SINGULAR, **{v: k for k, v in (extra or {}).items()}}
    if word in table:
        return table[word]
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" and not word.startswith(("uni", "use", "one")) else "a"


class _Text:
    """A caption as tokens with the text between them, so edits keep spacing and punctuation."""

    def __init__(self, caption: str) -> None:
        norm = unicodedata.normalize("NFKC", caption).lower()
        self.tokens: list[str] = []
        self.seps: list[str] = []
        pos = 0
        for m in _TOKEN_RE.finditer(norm):
            self.seps.append(norm[pos : m.start()])
            self.tokens.append(m.group())
            pos = m.end()
        self.tail = norm[pos:]

    def edit(self, replacements: Iterable[tuple[int, int, Sequence[str]]]) -> tuple[str, list[str]]:
        """Text and tokens after replacing non-overlapping token spans ``[a, b)`` by words."""
        toks, seps = list(self.tokens), list(self.seps)
        for a, b, words in sorted(replacements, key=lambda r: (r[0], r[1]), reverse=True):
            sep = seps[a] if a < len(seps) else " "
            toks[a:b] = list(words)
            seps[a:b] = ([sep] + [" "] * (len(words) - 1)) if words else []
        text = "".join(s + t for s, t in zip(seps, toks)) + self.tail
        return text, toks


@dataclass
class _Phrase:
    start: int  # the determiner
    end: int  # one past the head noun
    det: str

    @property
    def head(self) -> int:
        return self.end - 1

    def plural(self, toks: Sequence[str]) -> bool:
        return self.det in _PLURAL_DETS or (
            self.det in ("the", "his", "her", "their", "its", "my", "your", "our")
            and singularize(toks[self.head]) != toks[self.head]
        )


def _inside(tok: str, first: bool) -> bool:
    """Whether ``tok`` continues a determiner phrase (an ``-ing`` word only right after it)."""
    if not tok.isalpha() or tok in _BOUNDARY or tok in _DETERMINERS:
        return False
    return first or not tok.endswith("ing")


def _phrases(toks: Sequence[str]) -> list[_Phrase]:
    """Determiner phrases: a determiner, then words up to a boundary (at least one word)."""
    out = []
    k = 0
    while k < len(toks):
        if toks[k] in _DETERMINERS:
            j = k + 1
            while j < len(toks) and _inside(toks[j], first=j == k + 1):
                j += 1
            if j > k + 1:
                out.append(_Phrase(k, j, toks[k]))
                k = j
                continue
        k += 1
    return out


def _find(toks: Sequence[str], phrase: Sequence[str]) -> list[int]:
    n = len(phrase)
    return [k for k in range(len(toks) - n + 1) if list(toks[k : k + n]) == list(phrase)]


def _changed(old: Sequence[str], new: Sequence[str]) -> list[int]:
    out: list[int] = []
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(
        None, old, new, autojunk=False
    ).get_opcodes():
        if tag in ("replace", "insert"):
            out.extend(range(j1, j2))
    return out


class _Perturber:
    def __init__(self, text: _Text, words: WordLists, rng: random.Random) -> None:
        self.t, self.w, self.rng = text, words, rng
        self.toks = text.tokens
        self.phrases = _phrases(self.toks)

    # Helpers ---------------------------------------------------------------------------------
    def _swap_or_replace(self, positions: list[int], options: Sequence[str], what: str,
                         replace_with=None) -> list[tuple[list, str]]:  # fmt: skip
        toks, rng = self.toks, self.rng
        out = []
        pairs = [(i, j) for i in positions for j in positions if i < j and toks[i] != toks[j]]
        for i, j in pairs:
            out.append(([(i, i + 1, [toks[j]]), (j, j + 1, [toks[i]])],
                        f"{what}s '{toks[i]}' and '{toks[j]}' exchanged"))  # fmt: skip
        if not pairs:
            for i in positions:
                choices = replace_with(toks[i]) if replace_with else [
                    o for o in options if o != toks[i]]  # fmt: skip
                if choices:
                    new = rng.choice(list(choices))
                    out.append(([(i, i + 1, [new])], f"{what} '{toks[i]}' replaced by '{new}'"))
        return out

    def _agree(self, phrase_end: int, plural: bool) -> list[tuple[int, int, list[str]]]:
        """``is``/``are`` right after a phrase (or ``there is`` before it) made to agree."""
        toks = self.toks
        out = []
        if phrase_end < len(toks) and toks[phrase_end] in ("is", "are"):
            out.append((phrase_end, phrase_end + 1, ["are" if plural else "is"]))
        return out

    # Kinds -------------------------------------------------------------------------------------
    def colour_swap(self) -> list[tuple[list, str]]:
        colours = set(self.w.colours)
        pos = [k for k, t in enumerate(self.toks) if t in colours]
        return self._swap_or_replace(pos, self.w.colours, "colour")

    def size_swap(self) -> list[tuple[list, str]]:
        opposite = {a: b for a, b in self.w.sizes} | {b: a for a, b in self.w.sizes}
        pos = [k for k, t in enumerate(self.toks) if t in opposite]
        return self._swap_or_replace(pos, (), "size", replace_with=lambda t: [opposite[t]])

    def shape_swap(self) -> list[tuple[list, str]]:
        toks, extra = self.toks, self.w.extra
        if self.w.nouns:
            lemmas = {n: n for n in self.w.nouns} | {pluralize(n, extra): n for n in self.w.nouns}
            pos = [k for k, t in enumerate(toks) if t in lemmas]
        else:
            lemmas = {toks[p.head]: singularize(toks[p.head], extra) for p in self.phrases}
            pos = [p.head for p in self.phrases if toks[p.head] not in _PLACE_WORDS]
        out = []

        def form(lemma: str, like: str) -> str:
            return pluralize(lemma, extra) if lemmas.get(like) != like else lemma

        pairs = [(i, j) for i in pos for j in pos if i < j and lemmas[toks[i]] != lemmas[toks[j]]]
        for i, j in pairs:
            a, b = form(lemmas[toks[j]], toks[i]), form(lemmas[toks[i]], toks[j])
            out.append(([(i, i + 1, [a]), (j, j + 1, [b])],
                        f"nouns '{toks[i]}' and '{toks[j]}' exchanged"))  # fmt: skip
        if not pairs and self.w.nouns:
            for i in pos:
                others = [n for n in self.w.nouns if n != lemmas[toks[i]]]
                if others:
                    new = form(self.rng.choice(others), toks[i])
                    out.append(([(i, i + 1, [new])], f"noun '{toks[i]}' replaced by '{new}'"))
        return out

    def _relations(self) -> list[tuple[int, int, list[str], list[str]]]:
        """Every relation phrase found: ``(start, end, words, opposite words)``."""
        out = []
        for a, b in self.w.relations:
            for src, dst in ((a, b), (b, a)):
                words = src.split()
                for k in _find(self.toks, words):
                    out.append((k, k + len(words), words, dst.split()))
        return out

    def relation_opposite(self) -> list[tuple[list, str]]:
        return [([(s, e, dst)], f"'{' '.join(w)}' replaced by '{' '.join(dst)}'")
                for s, e, w, dst in self._relations()]  # fmt: skip

    def _filler(self, a: int, b: int) -> bool:
        """At most three words between a phrase and its relation ("is sitting")."""
        gap = self.toks[a:b]
        return len(gap) <= 3 and all(t.isalpha() and t not in ("and", "or") for t in gap)

    def relation_swap(self) -> list[tuple[list, str]]:
        toks = self.toks
        out = []
        for s, e, words, _ in self._relations():
            left = [p for p in self.phrases if p.end <= s and self._filler(p.end, s)]
            right = [p for p in self.phrases if e <= p.start <= e + 1]
            if not left or not right:
                continue
            lp, rp = left[-1], right[0]
            if toks[rp.head] in _PLACE_WORDS or toks[lp.head] in _PLACE_WORDS:
                continue
            lw, rw = toks[lp.start : lp.end], toks[rp.start : rp.end]
            if lw == rw:
                continue
            edits = [(lp.start, lp.end, rw), (rp.start, rp.end, lw)]
            edits += self._agree(lp.end, rp.plural(toks))
            out.append((edits, f"'{' '.join(lw)}' and '{' '.join(rw)}' exchanged around "
                               f"'{' '.join(words)}'"))  # fmt: skip
        return out

    def count(self) -> list[tuple[list, str]]:
        toks, extra = self.toks, self.w.extra
        numbers = list(self.w.numbers)
        out = []
        for p in self.phrases:
            if p.det in ("a", "an"):
                n = 1
            elif p.det in numbers:
                n = numbers.index(p.det) + 1
            else:
                continue
            head = toks[p.head]
            for m in (n - 1, n + 1):
                if not 1 <= m <= len(numbers):
                    continue
                noun = pluralize(head, extra) if m > 1 else singularize(head, extra)
                first = toks[p.start + 1] if p.start + 1 < p.head else noun
                det = numbers[m - 1] if m > 1 else _article(first)
                edits = [(p.start, p.start + 1, [det])]
                if noun != head:
                    edits.append((p.head, p.head + 1, [noun]))
                edits += self._agree(p.end, m > 1)
                if p.start >= 2 and toks[p.start - 2] == "there" and toks[p.start - 1] in (
                    "is", "are"):  # fmt: skip
                    edits.append((p.start - 1, p.start, ["are" if m > 1 else "is"]))
                out.append((edits, f"{n} → {m} ('{p.det} {head}' → '{det} {noun}')"))
        return out

    def word_order(self) -> list[tuple[list, str]]:
        toks = self.toks
        colours = set(self.w.colours)
        sizes = {w for pair in self.w.sizes for w in pair}
        out = []
        for group in (colours, sizes):
            for p in self.phrases:
                attrs = [k for k in range(p.start + 1, p.head) if toks[k] in group]
                for k in attrs:
                    for q in self.phrases:
                        if q is p or any(toks[j] in group for j in range(q.start + 1, q.head)):
                            continue
                        if toks[q.head] in _PLACE_WORDS:
                            continue
                        # Remove the word from p, put it right before q's noun.
                        edits = [(k, k + 1, []), (q.head, q.head + 1, [toks[k], toks[q.head]])]
                        if q.det in ("a", "an") and q.start + 1 == q.head:
                            edits.append((q.start, q.start + 1, [_article(toks[k])]))
                        if p.det in ("a", "an") and k == p.start + 1:
                            edits.append((p.start, p.start + 1, [_article(toks[k + 1])]))
                        out.append((edits, f"'{toks[k]}' moved from '{toks[p.head]}' to "
                                           f"'{toks[q.head]}'"))  # fmt: skip
        return out


def perturb(
    caption: str,
    seed: int = 0,
    words: WordLists | None = None,
    kinds: Sequence[str] = PERTURBATION_KINDS,
    max_per_kind: int = 1,
) -> list[Perturbation]:
    """Perturbations of ``caption``: at most ``max_per_kind`` of each kind in ``kinds`` (in
    :data:`PERTURBATION_KINDS` order), chosen with ``random.Random(seed)``; each differs from the
    caption's tokens, and ``changed`` lists the new text's tokens that differ."""
    if not isinstance(caption, str):
        raise PerturbError(f"perturb expects a str caption, got {type(caption).__name__}")
    unknown = set(kinds) - set(PERTURBATION_KINDS)
    if unknown:
        raise PerturbError(f"unknown perturbation kinds {sorted(unknown)}; {PERTURBATION_KINDS}")
    rng = random.Random(seed)
    text = _Text(caption)
    p = _Perturber(text, words or WordLists(), rng)
    out: list[Perturbation] = []
    seen = {tuple(text.tokens)}
    for kind in PERTURBATION_KINDS:
        if kind not in kinds:
            continue
        cands = getattr(p, kind)()
        rng.shuffle(cands)
        taken = 0
        for edits, note in cands:
            if taken >= max_per_kind:
                break
            new_text, new_toks = text.edit(edits)
            if tuple(new_toks) in seen:
                continue
            changed = _changed(text.tokens, new_toks)
            if not changed:
                continue
            seen.add(tuple(new_toks))
            out.append(Perturbation(kind, new_text, changed, note))
            taken += 1
    return out


__all__ = [
    "PERTURBATION_KINDS",
    "Perturbation",
    "PerturbError",
    "WordLists",
    "perturb",
    "pluralize",
    "singularize",
]
