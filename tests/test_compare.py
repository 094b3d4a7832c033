"""Two captions of one image (Compare) and a caption's minimal pairs: the changed words, each
step's margin, which step caught the difference — data (shan.explain, demo.pipeline) and views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo import explain_text, render, views
from demo.pipeline import InputError
from shan.explain import (
    CREDIT_FRACTION,
    SAME_SCORE,
    STEP_KEYS,
    align_changes,
    compare_explanations,
    credited_steps,
    score_margins,
)
from tests.app_fixtures import make_pipeline, scene, synthetic_calibration

TRUE = "a red circle left of a blue square"
SWAPPED = "a blue circle left of a red square"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return make_pipeline(tmp_path_factory.mktemp("compare"))


@pytest.fixture(scope="module")
def compared(pipe):
    return pipe.compare(scene(), TRUE, SWAPPED)


# ---------------------------------------------------------------------------------------------
# Which words changed


def test_a_colour_swap_pairs_each_colour_with_its_replacement():
    a, b = TRUE.split(), SWAPPED.split()
    changed_a, changed_b, pairs = align_changes(a, b)
    assert changed_a == [1, 6] and changed_b == [1, 6]
    assert [(a[i], b[j]) for i, j in pairs] == [("red", "blue"), ("blue", "red")]


def test_a_moved_word_pairs_with_itself():
    a = "a red circle and a square".split()
    b = "a circle and a red square".split()
    changed_a, changed_b, pairs = align_changes(a, b)
    assert [a[i] for i in changed_a] == ["red"] and [b[j] for j in changed_b] == ["red"]
    assert pairs == [(1, 4)]


def test_added_and_dropped_words_pair_with_nothing():
    _, changed_b, pairs = align_changes(["a", "circle"], ["a", "big", "circle"])
    assert changed_b == [1] and pairs == [(None, 1)]
    changed_a, _, pairs = align_changes(["a", "big", "circle"], ["a", "circle"])
    assert changed_a == [1] and pairs == [(1, None)]
    assert align_changes(["a", "b"], ["a", "b"]) == ([], [], [])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "red", "blue", "circle", "of", "left"]), max_size=9),
    st.lists(st.sampled_from(["a", "red", "blue", "circle", "of", "square"]), max_size=9),
)
def test_unchanged_words_are_the_same_in_both_captions(a, b):
    changed_a, changed_b, pairs = align_changes(a, b)
    kept_a = [w for i, w in enumerate(a) if i not in changed_a]
    kept_b = [w for j, w in enumerate(b) if j not in changed_b]
    assert kept_a == kept_b  # what is not marked is a common subsequence
    assert (a == b) == (not changed_a and not changed_b)
    seen_a = [i for i, _ in pairs if i is not None]
    seen_b = [j for _, j in pairs if j is not None]
    assert sorted(seen_a) == changed_a and sorted(seen_b) == changed_b  # every change shown once


# ---------------------------------------------------------------------------------------------
# Which step caught it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3))
def test_credit_goes_to_steps_that_make_a_fifth_of_the_gap_its_way(parts):
    margins = dict(zip(STEP_KEYS, parts))
    gap = sum(parts)
    credited = credited_steps({"total": gap, **margins}, gap)
    for k in STEP_KEYS:
        makes_it = abs(gap) >= SAME_SCORE and margins[k] * np.sign(gap) >= CREDIT_FRACTION * abs(
            gap
        )
        assert (k in credited) == makes_it
    assert "total" not in credited


def test_comparison_margins_add_up_and_agree_with_the_scores(compared):
    cmp = compared.comparison
    s = compared.match.scores
    assert cmp.gap == pytest.approx(s[0, 0] - s[1, 0], abs=1e-6)
    assert sum(cmp.margins[k] for k in STEP_KEYS) == pytest.approx(cmp.gap, abs=1e-5)
    for c, k in enumerate(STEP_KEYS, start=1):
        assert cmp.margins[k] == pytest.approx(s[0, c] - s[1, c], abs=1e-6)  # weights 1
        assert cmp.prefers(k) == (
            0 if abs(cmp.margins[k]) < SAME_SCORE else np.sign(cmp.margins[k])
        )
    assert [cmp.a.words[i] for i in cmp.changed_a] == ["red", "blue"]


def test_explanations_of_other_regions_are_not_compared(pipe, compared):
    other = pipe.match(scene((200, 300), seed=3), TRUE, explain_all=True).explanations[0]
    with pytest.raises(ValueError, match="same image regions"):
        compare_explanations(compared.comparison.a, other)


# ---------------------------------------------------------------------------------------------
# The pipeline


def test_compare_explains_both_captions_on_one_detection(pipe):
    calls = pipe.extractor.calls
    res = pipe.compare(scene(), TRUE, SWAPPED)
    assert pipe.extractor.calls == calls + 1
    assert res.match.captions == [TRUE, SWAPPED]
    assert all(e is not None for e in res.match.explanations)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (TRUE, "  ", "enter the second caption"),
        (None, TRUE, "enter the first caption"),
        ("A red  circle", "a red circle", "the same as the model reads them"),
    ],
)
def test_compare_refuses_what_cannot_be_compared(pipe, a, b, message):
    with pytest.raises(InputError, match=message):
        pipe.compare(scene(), a, b)


def test_minimal_pairs_scored_against_the_caption(pipe):
    res = pipe.minimal_pairs(scene(), "two red circles left of a large blue square")
    kinds = [p.kind for p in res.perturbations]
    assert {"colour_swap", "relation_opposite", "count"} <= set(kinds)
    assert res.match.captions[1:] == [p.text for p in res.perturbations]
    s = res.match.scores
    np.testing.assert_allclose(res.margins, s[0] - s[1:], atol=1e-6)  # weights 1
    assert not [n for n in res.notices if "Caption" in n]  # perturbations' words not reported


def test_minimal_pairs_of_a_caption_nothing_applies_to(pipe):
    with pytest.raises(InputError, match="No minimal pair"):
        pipe.minimal_pairs(scene(), "hello")
    with pytest.raises(InputError, match="enter a caption"):
        pipe.minimal_pairs(scene(), "")


def test_score_margins_weigh_each_step():
    scores = np.array([[1.0, 0.1, 0.5, 0.4], [0.7, 0.2, 0.3, 0.2]])
    m = score_margins(scores, 0, {"l2l": 2.0, "g2l": 1.0, "g2g": 0.0})
    np.testing.assert_allclose(m[1], [-0.3, 0.2, -0.2, 0.0])
    np.testing.assert_allclose(m[0], 0.0)


# ---------------------------------------------------------------------------------------------
# The views


def test_compare_views(compared):
    v = views.compare_views(compared)
    changed = [t for t, label in v["words_a"] if label == "changed"]
    assert changed == ["red", "blue"]
    assert "".join(t for t, _ in v["words_b"]) == SWAPPED
    table = v["table"]
    assert list(table.columns) == views.COMPARE_HEADERS and len(table) == 4
    cmp = compared.comparison
    for row, key in zip(table.itertuples(index=False), ("total", *STEP_KEYS)):
        assert row[4] == {1: "A", -1: "B", 0: "neither"}[cmp.prefers(key)]
        assert (row[5] == "yes") == (key in cmp.credited)
    chart, pairs = v["chart"], v["pairs"]
    assert chart.dtype == np.uint8 and chart.shape[2] == 3 and chart.std() > 5
    assert pairs.shape[0] > 2 * 200  # two differing words, one above the other
    assert "Words that differ — in A: “red”, “blue”" in v["text"]


def test_compare_with_a_calibration_places_both_captions(pipe):
    cal = synthetic_calibration()
    plain = views.compare_views(pipe.compare(scene(), TRUE, SWAPPED))
    pipe.calibration = cal
    try:
        v = views.compare_views(pipe.compare(scene(), TRUE, SWAPPED))
    finally:
        pipe.calibration = None
    assert "As evidence" in v["text"] and "As evidence" not in plain["text"]
    purple = np.array([int(render.MATCH_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    count = lambda pic: int((np.abs(pic.astype(int) - purple).max(-1) <= 8).sum())  # noqa: E731
    assert count(v["chart"]) > 100 and count(plain["chart"]) == 0


def test_compare_text_says_who_wins_from_the_gap(compared):
    text = explain_text.compare_text(compared.comparison)
    gap = compared.comparison.gap
    if abs(gap) < SAME_SCORE:
        assert "score the same" in text
    else:
        winner = "A" if gap > 0 else "B"
        assert f"**{winner} scores higher" in text


def test_pairs_table_marks_the_changes_and_the_preferences(pipe):
    res = pipe.minimal_pairs(scene(), "a red circle left of a blue square")
    table = views.pairs_table(res)
    assert list(table.columns) == views.PAIRS_HEADERS and len(table) == len(res.perturbations)
    for row, pert, margin in zip(table.itertuples(index=False), res.perturbations, res.margins):
        bold = [w.strip("*") for w in row[1].split() if w.startswith("**")]
        words = res.match.display_words(res.perturbations.index(pert) + 1)
        assert bold == [words[j] for j in pert.changed]
        marks = row[6].split()[1::2]  # "S ✓ 1 ✗ 2 = 3 ✓"
        for mark, d in zip(marks, margin):
            assert mark == ("✓" if d > SAME_SCORE else "✗" if d < -SAME_SCORE else "=")
    styler = views.pairs_styled(table)._compute()  # the cell styles, as pandas renders them
    cells = {k: dict(v) for k, v in styler.ctx.items()}
    values = table[views.PAIRS_HEADERS[2:6]].to_numpy()
    for (r, c), style in cells.items():
        v = values[r, c - 2]
        want = views.PREFER_GOOD if v >= SAME_SCORE else views.PREFER_BAD
        assert abs(v) >= SAME_SCORE and style["background-color"] == want
    assert len(cells) == int((np.abs(values) >= SAME_SCORE).sum())
    text = views.pairs_views(res)["text"]
    right = int((res.margins[:, 0] >= SAME_SCORE).sum())
    assert f"{right} of its {len(res.perturbations)} minimal pairs" in text


def test_pair_heatmap_shows_two_panels_and_the_plain_photo_for_no_counterpart():
    img = scene()
    heat = np.zeros((10, 15))
    heat[:, :5] = 1.0
    both = render.pair_heatmap(img, [heat, heat], ["A", "B"])
    one = render.pair_heatmap(img, [heat, None], ["A", "B: none"])
    assert both.shape == one.shape
    half = both.shape[1] // 2
    # the right panel differs: a heatmap (greyed photo + map) versus the photo itself
    assert np.abs(both[:, half:].astype(int) - one[:, half:].astype(int)).mean() > 5
    np.testing.assert_array_equal(both[:, : half // 2], one[:, : half // 2])
