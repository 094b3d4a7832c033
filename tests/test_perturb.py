"""Text perturbations (shan.data.perturb): properties on any string, and on generated captions."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shan.data.perturb import (
    PERTURBATION_KINDS,
    Perturbation,
    PerturbError,
    WordLists,
    perturb,
    pluralize,
    singularize,
)
from shan.data.vocab import tokenize
from shan.toyworld import NEGATIVE_TYPES, SHAPES

SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
TOY = WordLists(nouns=SHAPES)


def _check(caption: str, out: list[Perturbation]) -> None:
    old = tokenize(caption)
    kinds = [p.kind for p in out]
    assert kinds == sorted(kinds, key=PERTURBATION_KINDS.index)
    texts = [tuple(tokenize(p.text)) for p in out]
    assert len(set(texts)) == len(texts)  # no duplicates
    for p in out:
        new = tokenize(p.text)
        assert new != old and p.text != caption
        assert p.changed and all(0 <= k < len(new) for k in p.changed)
        assert p.changed == sorted(set(p.changed))
        assert p.note
        # Tokens outside ``changed`` are the old tokens, in order.
        kept = [t for k, t in enumerate(new) if k not in set(p.changed)]
        it = iter(old)
        assert all(any(t == o for o in it) for t in kept)


@SETTINGS
@given(st.text(max_size=80), st.integers(0, 2**32))
def test_any_string_never_crashes_and_never_returns_itself(caption, seed):
    out = perturb(caption, seed=seed)
    _check(caption, out)
    assert perturb(caption, seed=seed) == out  # deterministic


WORDS = st.sampled_from(
    ["a", "an", "the", "two", "three", "red", "blue", "green", "small", "large", "circle",
     "square", "star", "circles", "squares", "left", "of", "right", "above", "below", "on",
     "under", "in", "front", "behind", "and", "is", "are", "dog", "man", ",", ".", "Two", "RED"]
)  # fmt: skip


@SETTINGS
@given(st.lists(WORDS, max_size=14), st.integers(0, 1000))
def test_caption_like_word_salads(words, seed):
    caption = " ".join(words)
    for lists in (None, TOY):
        _check(caption, perturb(caption, seed=seed, words=lists, max_per_kind=3))


NP = st.tuples(
    st.sampled_from(["a", "two", "three"]),
    st.sampled_from(["", "small ", "large "]),
    st.sampled_from(["", "red ", "blue ", "green "]),
    st.sampled_from(["circle", "square", "star", "heart"]),
)


def _np(t) -> str:
    det, size, colour, noun = t
    return f"{det} {size}{colour}{noun if det == 'a' else pluralize(noun)}"


@SETTINGS
@given(NP, st.sampled_from(["left of", "right of", "above", "below", "in front of", "behind"]),
       NP, st.integers(0, 100))  # fmt: skip
def test_relation_captions_get_every_kind_that_applies(a, rel, b, seed):
    caption = f"{_np(a)} {rel} {_np(b)}"
    _check(caption, perturb(caption, seed=seed, words=TOY))
    # One kind at a time (across kinds, a text already given is not repeated).
    out = {k: perturb(caption, seed=seed, words=TOY, kinds=[k]) for k in PERTURBATION_KINDS}
    out = {k: v[0] for k, v in out.items() if v}
    assert "relation_opposite" in out and "count" in out
    if _np(a) != _np(b):
        assert "relation_swap" in out
    if a[2] or b[2]:
        assert "colour_swap" in out
    if a[1] or b[1]:
        assert "size_swap" in out
    if a[3] != b[3]:
        assert "shape_swap" in out
    if bool(a[2]) != bool(b[2]):
        assert "word_order" in out
    # Counts keep plural agreement: a number word >= two goes with a plural noun.
    new = tokenize(out["count"].text)
    for k, t in enumerate(new[:-1]):
        if t in ("two", "three", "four"):
            rest = [w for w in new[k + 1 :] if w in {pluralize(s) for s in SHAPES} | set(SHAPES)]
            assert rest and rest[0] == pluralize(rest[0]), out["count"].text


@pytest.mark.parametrize(
    "caption, kind, expected",
    [
        ("a red circle left of a blue square", "colour_swap", "a blue circle left of a red square"),
        ("a red circle left of a blue square", "relation_swap",
         "a blue square left of a red circle"),
        ("a red circle left of a blue square", "relation_opposite",
         "a red circle right of a blue square"),
        ("a red circle to the left of a square", "word_order",
         "a circle to the left of a red square"),
        ("two dogs are playing on the grass.", "relation_opposite",
         "two dogs are playing under the grass."),
        ("a large star above two small hexagons", "size_swap",
         "a small star above two large hexagons"),
        ("there is a cat inside a box", "relation_opposite", "there is a cat outside a box"),
    ],
)  # fmt: skip
def test_known_perturbations(caption, kind, expected):
    out = {p.kind: p.text for p in perturb(caption, words=TOY)}
    assert out[kind] == expected


def test_count_agreement_on_real_captions():
    texts = {p.text for p in perturb("A dog is running on the beach.", max_per_kind=5)}
    assert "two dogs are running on the beach." in texts
    texts = {p.text for p in perturb("Two men are riding horses.", max_per_kind=5)}
    assert {"a man is riding horses.", "three men are riding horses."} <= texts
    texts = {p.text for p in perturb("there are two red circles", words=TOY, max_per_kind=5)}
    assert "there is a red circle" in texts


def test_changed_marks_the_new_words():
    (p,) = perturb("a red circle and a blue square", kinds=["colour_swap"], words=TOY)
    assert [tokenize(p.text)[k] for k in p.changed] == ["blue", "red"]


def test_kinds_share_the_negative_type_names():
    assert set(PERTURBATION_KINDS) <= set(NEGATIVE_TYPES)


def test_bad_input_is_refused_clearly():
    with pytest.raises(PerturbError, match="expects a str"):
        perturb(b"a red circle")  # type: ignore[arg-type]
    with pytest.raises(PerturbError, match="unknown perturbation kinds"):
        perturb("a red circle", kinds=["colour"])


@pytest.mark.parametrize(
    "singular, plural_",
    [("circle", "circles"), ("cross", "crosses"), ("man", "men"), ("puppy", "puppies"),
     ("box", "boxes"), ("rhombus", "rhombuses"), ("sheep", "sheep"), ("glass", "glasses")],
)  # fmt: skip
def test_plural_forms(singular, plural_):
    assert pluralize(singular) == plural_ and singularize(plural_) == singular
    assert pluralize(plural_) == plural_
