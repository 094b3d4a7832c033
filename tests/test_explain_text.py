"""demo.explain_text: the generated teaching texts say what the numbers say, and nothing else."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo import explain_text as et
from shan.explain import StepExplanation, step_contributions

CONTENT = ["red", "circle", "blue", "square", "green", "triangle", "left", "tiny"]
FUNCTION = ["a", "and", "of", "plus", "the", "with", "as"]


def _expl(
    words,
    gamma,
    txt_pool=None,
    delta=(0.6, 0.3, 0.1),
    img_pool=None,
    scores=None,
    weights=(1.0, 1.0, 1.0),
    enabled=None,
) -> StepExplanation:
    n, k = len(words), len(delta)
    scores = scores or {"l2l": 0.05, "g2l": 0.78, "g2g": 0.95}
    enabled = enabled or {"l2l": True, "g2l": True, "g2g": True}
    contrib, shares = step_contributions(scores, weights, enabled)
    scores = {**scores, "total": sum(contrib.values())}
    return StepExplanation(
        caption=" ".join(words),
        words=list(words),
        unknown=[False] * n,
        truncated=False,
        region_labels=["red circle", "blue square", "green triangle"][:k],
        boxes=np.zeros((k, 4)),
        image_size=(100, 100),
        alpha=np.full((k, n), 1 / n),
        beta=np.full((k, n), 1 / k),
        img_pool=np.full(k, 1 / k) if img_pool is None else np.asarray(img_pool, float),
        txt_pool=np.full(n, 1 / n) if txt_pool is None else np.asarray(txt_pool, float),
        gamma=np.asarray(gamma, float),
        delta=np.asarray(delta, float),
        scores=scores,
        contributions=contrib,
        shares=shares,
        enabled=enabled,
    )


def _named_words(text: str) -> list[str]:
    return re.findall(r"“([^”]+)”", text)


# ---------------------------------------------------------------------------------------------
# Step 2


def test_step2_names_the_real_argmax_even_when_it_is_a_function_word():
    words = ["a", "red", "circle", "and", "a", "blue", "square"]
    gamma = [0.0, 0.05, 0.02, 0.6, 0.0, 0.03, 0.3]
    md = et.step2_text(_expl(words, gamma))
    assert _named_words(md)[0] == "and"  # the most weighted word is named first
    assert "γ = 0.60" in md
    assert "function word" in md and "need not be what the sentence is about" in md
    # the first content word by weight is named as such
    assert "The content word with the most weight is “square” (γ = 0.30)" in md
    assert "tall bars are the ones the sentence" not in md
    note = et.step2_words_note(_expl(words, gamma))
    assert note.startswith("Most weight (γ): “and” (0.60), a function word")


def test_step2_says_all_equal_only_when_the_pooling_weights_are():
    words = ["a", "red", "circle"]
    flat = et.step2_text(_expl(words, [0.2, 0.5, 0.3]))
    assert "text pooling weights are all equal (1/3 = 0.333 each)" in flat
    assert "image pooling weights are all equal" in flat
    peaked = et.step2_text(
        _expl(words, [0.2, 0.5, 0.3], txt_pool=[0.1, 0.7, 0.2], img_pool=[0.2, 0.2, 0.6])
    )
    assert "all equal" not in peaked
    assert "leans most on “red” (pooling weight 0.70)" in peaked
    assert "region #2 green triangle (pooling weight 0.60)" in peaked
    assert et.pooling_title("image", [1 / 3] * 3, ["#0", "#1", "#2"]).endswith(
        "nothing singled out"
    )
    assert "peak 0.60 on #2" in et.pooling_title("image", [0.2, 0.2, 0.6], ["#0", "#1", "#2"])


words_st = st.lists(st.sampled_from(CONTENT + FUNCTION), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), words=words_st)
def test_step2_text_agrees_with_any_weights(data, words):
    n = len(words)
    # integers, not st.floats: the fused CPU kernel (built with -ffast-math) turns on
    # flush-to-zero for the whole process once loaded, and st.floats refuses to run then
    raw = data.draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    gamma = np.asarray(raw, dtype=np.float64) + 1e-6
    gamma = gamma / gamma.sum()
    uniform_pool = data.draw(st.booleans())
    pool = None if uniform_pool else np.linspace(1.0, 2.0, n) / np.linspace(1.0, 2.0, n).sum()
    e = _expl(words, gamma, txt_pool=pool)
    md = et.step2_text(e)
    j = int(np.argmax(gamma))
    assert _named_words(md)[0] == words[j]  # named first = the argmax (ties: the first)
    assert f"(γ = {gamma[j]:.2f})" in md
    function = et.is_function_word(words[j])
    assert ("is a function word" in md) == function
    if function and any(not et.is_function_word(w) for w in words):
        content = max(
            (i for i in range(n) if not et.is_function_word(words[i])), key=lambda i: gamma[i]
        )
        assert f"The content word with the most weight is “{words[content]}”" in md
    assert ("text pooling weights are all equal" in md) == (uniform_pool or n == 1)


# ---------------------------------------------------------------------------------------------
# Step 3: margins, not shares, say which step separates two captions


def test_a_small_share_step_that_makes_the_gap_gets_the_credit():
    # the case: step 1 is ~3 % of the score, yet the only step that differs
    true = {"l2l": 0.05, "g2l": 0.78, "g2g": 0.95}
    neg = {"l2l": -0.25, "g2l": 0.78, "g2g": 0.95}
    e = _expl(["a", "red", "circle"], [0.2, 0.5, 0.3], scores=true)
    assert e.shares["l2l"] < 0.05
    scores = np.array(
        [[sum(true.values()), *true.values()], [sum(neg.values()), *neg.values()]], float
    )
    md = et.margin_text(["true", "negative"], scores, 0, et.step_weights_of(e), e.shares)
    assert "What separates them: **step 1 (S_L2L)**." in md
    assert "Step 1 (S_L2L) is only 3% of the score itself" in md
    assert "step 3" not in md.split("What separates them")[1]  # G2G: 50 % of S, not credited
    s3_md = et.step3_text(e, ["true", "negative"], scores, 0)
    assert s3_md.startswith("**S_G2G = 0.950**") and "step 1 (S_L2L)**" in s3_md


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.integers(-1000, 1000)] * 3), min_size=2, max_size=6
    ),  # thousandths (see above on st.floats)
    st.integers(0, 5),
)
def test_credit_follows_the_margins(rows, m):
    m = m % len(rows)
    rows = [tuple(v / 1000 for v in r) for r in rows]
    sc = np.array([[sum(r), *r] for r in rows])
    ref = et.reference_caption(sc, m)
    assert ref is not None and ref != m
    if m != int(np.argmax(sc[:, 0])):
        assert sc[ref, 0] == sc[:, 0].max()  # compared with the best caption
    margins = et.step_margins(sc, m, ref, {"l2l": 1.0, "g2l": 1.0, "g2g": 1.0})  # weights 1
    gap = sc[m, 0] - sc[ref, 0]
    assert sum(margins.values()) == pytest.approx(gap, abs=1e-9)
    credited = et.credited_steps(margins, gap)
    for k in credited:
        assert margins[k] * gap > 0 and abs(margins[k]) >= et.CREDIT_FRACTION * abs(gap)
    for k in set(margins) - set(credited):
        assert margins[k] * np.sign(gap) < et.CREDIT_FRACTION * abs(gap) or abs(gap) < 1e-3
    ones = {"l2l": 1.0, "g2l": 1.0, "g2g": 1.0}
    md = et.margin_text([f"c{i}" for i in range(len(rows))], sc, m, ones)
    if credited:
        named = md.split("What separates them: **")[1].split("**")[0]
        assert named == " and ".join(et.STEP_NAMES[k] for k in credited)
    else:
        assert "What separates them" not in md
    if any(margins[k] * gap < 0 for k in margins):
        assert "% of the gap" not in md  # percentages above 100 % would mislead


def test_equal_scores_and_a_single_caption():
    sc = np.array([[1.0, 0.2, 0.4, 0.4], [1.0, 0.4, 0.2, 0.4]])
    md = et.margin_text(["a", "b"], sc, 0, {"l2l": 1, "g2l": 1, "g2g": 1})
    assert "score the same; no step separates them" in md
    assert "Only one caption" in et.margin_text(["a"], sc[:1], 0, {})


def test_switched_off_steps_are_left_out_and_said():
    e = _expl(
        ["a", "red"],
        [0.5, 0.5],
        scores={"l2l": 0.1, "g2l": 0.7, "g2g": 0.0},
        enabled={"l2l": True, "g2l": True, "g2g": False},
    )
    w = et.step_weights_of(e)
    assert w == {"l2l": 1.0, "g2l": 1.0, "g2g": 0.0}
    sc = np.array([[0.8, 0.1, 0.7, 0.0], [0.3, -0.2, 0.5, 0.0]])
    md = et.step3_text(e, ["x", "y"], sc, 0)
    assert "switched off in this checkpoint: g2g" in md
    assert "step 3 (S_G2G) +" not in md


def test_step_weights_are_read_back_from_the_contributions():
    e = _expl(["a"], [1.0], scores={"l2l": 0.2, "g2l": 0.5, "g2g": -0.4}, weights=(2.0, 1.0, 0.5))
    assert et.step_weights_of(e) == pytest.approx({"l2l": 2.0, "g2l": 1.0, "g2g": 0.5})


# ---------------------------------------------------------------------------------------------
# Evidence


def test_evidence_text_without_and_with_a_calibration():
    from shan.calibration import calibrate_scores

    assert et.evidence_text(None, {"total": 1.0}) == et.NO_CALIBRATION
    rng = np.random.default_rng(0)
    n = 20
    match = (np.arange(5 * n)[None, :] // 5) == np.arange(n)[:, None]
    l2l = rng.normal(-0.3, 0.05, match.shape)
    l2l[match] += 0.35
    cal = calibrate_scores(
        {"l2l": l2l, "g2g": np.zeros_like(l2l)}, source={"split": "test", "n_images": n}
    )
    md = et.evidence_text(cal, {"total": 1.0, "l2l": 0.05, "g2g": 0.0})
    lines = md.splitlines()
    assert lines[0].startswith("**As evidence**") and "test split (20 images)" in lines[0]
    assert lines[1] == f"- S_L2L = 0.050: {cal.verdict('l2l', 0.05)}"
    assert lines[1].split(": ", 1)[1].startswith("typical of a true pair")
    assert lines[2] == "- S_G2G = 0.000: S_G2G is switched off"
    assert len(lines) == 3  # no line for a step without calibration ("total" here)
