"""Teaching texts generated from the numbers of one request (Markdown), one small pure function per
view. Unlike the fixed texts of :mod:`demo.texts`, every claim here is computed: the word named as
most weighted *is* the argmax, a step is said to separate two captions only when its margin does,
"all equal" is said only of equal weights. No Gradio here.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from demo.render import shorten
from shan.calibration import STEP_LABELS, Calibration
from shan.explain import STEP_KEYS, StepExplanation

# Function words: a word here is never called a content word.
STOPWORDS = frozenset(
    "a an the of on in at to and or is are with its it this that by for from as be plus well "
    "there along".split()
)
UNIFORM_RTOL = 0.02  # weights within 2 % of each other count as "all equal"
CREDIT_FRACTION = 0.2  # a step is credited with a gap when it makes at least 20 % of it
SAME_SCORE = 1e-3  # |S difference| below this: the two captions score the same
STEP_NAMES = {"l2l": "step 1 (S_L2L)", "g2l": "step 2 (S_G2L)", "g2g": "step 3 (S_G2G)"}
SCORE_COLUMNS = ("total", "l2l", "g2l", "g2g")  # the columns of a (M, 4) score table
NO_CALIBRATION = (
    "_No calibration saved with this model: a raw score can be compared with the other "
    "captions' scores, but not read on its own (no distribution of true and non-matching pairs "
    "to place it in)._"
)


def _q(word: str) -> str:
    return f"“{word}”"


def is_function_word(word: str) -> bool:
    """A stop word, or punctuation only (such a word is never called a content word)."""
    w = word.lower().rstrip("?")
    return w in STOPWORDS or (bool(w) and all(ch in string.punctuation for ch in w))


def is_uniform(weights: Any, rtol: float = UNIFORM_RTOL) -> bool:
    """All weights equal to within ``rtol`` of the largest (a single weight counts as uniform)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0:
        return True
    return float(w.max() - w.min()) <= rtol * max(abs(float(w.max())), 1e-12)


def top_items(weights: Any, top: int = 3) -> list[tuple[int, float]]:
    """``[(index, weight)]`` of the ``top`` largest weights, largest first (ties: lower index)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    order = np.argsort(-w, kind="stable")[:top]
    return [(int(i), float(w[i])) for i in order]


# ---------------------------------------------------------------------------------------------
# Step 2


def step2_words_note(expl: StepExplanation) -> str:
    """One plain line for the step-2 word chart: the most weighted word, and the pooling."""
    words = expl.display_words
    (j, g), *_ = top_items(expl.gamma, 1)
    kind = "a function word" if is_function_word(expl.words[j]) else "a content word"
    pool = (
        f"text pooling: all equal (1/{len(words)} = {1 / len(words):.3f} each)"
        if is_uniform(expl.txt_pool)
        else f"text pooling peaks on {_q(words[top_items(expl.txt_pool, 1)[0][0]])}"
    )
    return f"Most weight (γ): {_q(words[j])} ({g:.2f}), {kind} · {pool}"


def step2_text(expl: StepExplanation) -> str:
    """Markdown for step 2: which words and regions actually got the weight.

    Names the argmax of γ and of δ with their values, says whether the most weighted word is a
    function word (and then which content word comes first), and calls pooling weights "all
    equal" only when they are.
    """
    words = expl.display_words
    tops = top_items(expl.gamma, 3)
    (j, g), rest = tops[0], tops[1:]
    then = ", then " + " and ".join(f"{_q(words[i])} ({w:.2f})" for i, w in rest) if rest else ""
    lines = [f"The image context attends most to **{_q(words[j])}** (γ = {g:.2f}){then}."]
    if is_function_word(expl.words[j]):
        content = [
            (i, w)
            for i, w in top_items(expl.gamma, len(words))
            if not is_function_word(expl.words[i])
        ]
        more = (
            f" The content word with the most weight is {_q(words[content[0][0]])} "
            f"(γ = {content[0][1]:.2f})."
            if content
            else ""
        )
        lines.append(
            f"{_q(words[j])} is a function word: the tall bars show where this model puts its "
            f"weight, which need not be what the sentence is about.{more}"
        )
    lines.append(_pooling_sentence("text", expl.txt_pool, [_q(w) for w in words], "words"))
    (r, d), *_ = top_items(expl.delta, 1)
    lines.append(
        f"The caption as a whole points most to region **#{r} {expl.region_labels[r]}** "
        f"(δ = {d:.2f})."
    )
    regions = [f"region #{i} {name}" for i, name in enumerate(expl.region_labels)]
    lines.append(_pooling_sentence("image", expl.img_pool, regions, "regions"))
    return "\n\n".join(lines)


def _pooling_sentence(kind: str, weights: Any, names: Sequence[str], plural: str) -> str:
    """ "all equal" only when the pooling weights are; else the one the context leans on most."""
    if is_uniform(weights):
        n = len(names)
        return (
            f"The {kind} pooling weights are all equal (1/{n} = {1 / n:.3f} each): the {kind} "
            f"context is a plain average of the {plural}; nothing is singled out."
        )
    (i, w), *_ = top_items(weights, 1)
    return f"The {kind} context leans most on {names[i]} (pooling weight {w:.2f})."


def pooling_title(kind: str, weights: Any, names: Sequence[str]) -> str:
    """A panel title for pooling weights that says so when they are all equal."""
    n = len(np.asarray(weights).reshape(-1))
    if is_uniform(weights):
        return f"{kind} pooling: all equal (1/{n} each) — nothing singled out"
    (i, w), *_ = top_items(weights, 1)
    return f"{kind} pooling weights (peak {w:.2f} on {names[i]})"


# ---------------------------------------------------------------------------------------------
# Step 3: shares of the score vs. margins between captions


def step_weights_of(expl: StepExplanation) -> dict[str, float]:
    """``w_s`` of each step, read back from ``contributions = w_s · S_s`` (0 for a step off)."""
    out = {}
    for key in STEP_KEYS:
        if not expl.enabled.get(key, True):
            out[key] = 0.0
            continue
        s = float(expl.scores.get(key, 0.0))
        out[key] = float(expl.contributions.get(key, s)) / s if s != 0.0 else 1.0
    return out


def reference_caption(scores: np.ndarray, m: int) -> int | None:
    """The caption to compare ``m`` with: the runner-up when ``m`` is the best, else the best."""
    total = np.asarray(scores, dtype=np.float64).reshape(-1, 4)[:, 0]
    if len(total) < 2:
        return None
    order = [int(i) for i in np.argsort(-total, kind="stable")]
    return order[1] if order[0] == m else order[0]


def step_margins(
    scores: np.ndarray, m: int, ref: int, weights: Mapping[str, float]
) -> dict[str, float]:
    """``w_s · (S_s[m] − S_s[ref])`` per step; they add up to the gap in the final score.

    Args:
        scores: ``(M, 4)`` columns ``total, l2l, g2l, g2g``.
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    return {
        key: float(weights.get(key, 1.0)) * float(sc[m, c] - sc[ref, c])
        for c, key in enumerate(SCORE_COLUMNS)
        if key != "total"
    }


def credited_steps(margins: Mapping[str, float], gap: float) -> list[str]:
    """Steps that separate the two captions: margin in the gap's direction and ≥ 20 % of it,
    largest first. Empty when the captions score the same."""
    if abs(gap) < SAME_SCORE:
        return []
    sign = 1.0 if gap > 0 else -1.0
    keep = [k for k, d in margins.items() if sign * d >= CREDIT_FRACTION * abs(gap)]
    return sorted(keep, key=lambda k: -sign * margins[k])


def margin_text(
    captions: Sequence[str],
    scores: np.ndarray,
    m: int,
    weights: Mapping[str, float],
    shares: Mapping[str, float] | None = None,
) -> str:
    """Markdown: which step separates caption ``m`` from its reference caption, from margins.

    A step is credited only when its margin points the way of the gap and makes at least
    :data:`CREDIT_FRACTION` of it; a step whose share of the *score* is large but whose margin is
    not is said to be so.
    """
    ref = reference_caption(scores, m)
    if ref is None:
        return (
            "Only one caption: add another (e.g. a hard negative with two colours swapped) to "
            "see which step tells them apart."
        )
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    gap = float(sc[m, 0] - sc[ref, 0])
    margins = step_margins(sc, m, ref, weights)
    who = "the runner-up" if gap >= 0 else "the best caption"
    head = f"**Against {who}** “{shorten(captions[ref], 60)}” (S {gap:+.3f}):"
    if abs(gap) < SAME_SCORE:
        return f"{head} the two captions score the same; no step separates them."
    credited = credited_steps(margins, gap)
    on = [k for k in STEP_KEYS if weights.get(k, 1.0) != 0.0]
    # "% of the gap" only reads well when every step pushes the same way
    same_way = all(margins[k] * gap >= 0 for k in on)
    parts = []
    for key in on:
        d = margins[key]
        pct = f" ({100.0 * d / gap:.0f}% of the gap)" if same_way else ""
        parts.append(f"{STEP_NAMES[key]} {d:+.3f}{pct}")
    lines = [head + " " + "; ".join(parts) + "."]
    if credited:
        names = " and ".join(STEP_NAMES[k] for k in credited)
        lines.append(f"What separates them: **{names}**.")
    else:
        lines.append("No step makes a fifth of the gap on its own.")
    against = [k for k in STEP_KEYS if margins[k] * gap < 0 and abs(margins[k]) >= SAME_SCORE]
    if against:
        lines.append("Working the other way: " + ", ".join(STEP_NAMES[k] for k in against) + ".")
    if shares:
        small = [k for k in credited if shares.get(k, 0.0) < CREDIT_FRACTION]
        for k in small:
            name = STEP_NAMES[k][0].upper() + STEP_NAMES[k][1:]
            lines.append(
                f"{name} is only {100 * shares[k]:.0f}% of the score itself, yet it "
                "is what tells these captions apart: a share of the score is not a share of "
                "the decision."
            )
    return "\n\n".join(lines)


def evidence_text(
    calibration: Calibration | None, scores: Mapping[str, float], steps: Sequence[str] = ()
) -> str:
    """Markdown: each step's score placed among the calibration split's pairs (or why not)."""
    if calibration is None:
        return NO_CALIBRATION
    src = calibration.source
    where = (
        f"the {src.get('split', 'test')} split ({src['n_images']} images)"
        if "n_images" in src
        else "the calibration split"
    )
    lines = [f"**As evidence**, against the matching and non-matching pairs of {where}:"]
    for key in steps or ("total", *STEP_KEYS):
        if key not in calibration.steps or key not in scores:
            continue
        ev = calibration.evidence(key, scores[key])
        lines.append(f"- {STEP_LABELS[key]} = {ev.score:.3f}: {ev.text}")
    return "\n".join(lines)


def step3_text(
    expl: StepExplanation,
    captions: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    m: int | None = None,
    calibration: Calibration | None = None,
) -> str:
    """Markdown under the step-3 chart: S_G2G, the sum, what separates the captions, evidence."""
    c, s = expl.contributions, expl.scores
    parts = ""
    for i, (k, name) in enumerate((("l2l", "L2L"), ("g2l", "G2L"), ("g2g", "G2G"))):
        v = c.get(k, 0.0)
        sign = ("−" if v < 0 else "") if i == 0 else (" − " if v < 0 else " + ")
        parts += f"{sign}{abs(v):.3f} ({name})"
    md = (
        f"**S_G2G = {s.get('g2g', 0.0):.3f}** — the whole image vs. the whole caption.\n\n"
        f"Final score **S = {parts} = {s.get('total', 0.0):.3f}**"
    )
    off = [k for k, on in expl.enabled.items() if not on]
    if off:
        md += f"\n\n(Steps switched off in this checkpoint: {', '.join(off)}.)"
    if captions is not None and scores is not None and m is not None:
        md += "\n\n" + margin_text(captions, scores, m, step_weights_of(expl), expl.shares)
    md += "\n\n" + evidence_text(calibration, s)
    return md


__all__ = [
    "NO_CALIBRATION",
    "STOPWORDS",
    "credited_steps",
    "evidence_text",
    "is_function_word",
    "is_uniform",
    "margin_text",
    "pooling_title",
    "reference_caption",
    "step2_text",
    "step2_words_note",
    "step3_text",
    "step_margins",
    "step_weights_of",
    "top_items",
]
