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
from shan.explain import (
    CREDIT_FRACTION,
    SAME_SCORE,
    STEP_KEYS,
    CaptionComparison,
    StepExplanation,
    credited_steps,
)
from shan.explain import SCORE_KEYS as SCORE_COLUMNS

# Function words: a word here is never called a content word.
STOPWORDS = frozenset(
    "a an the of on in at to and or is are with its it this that by for from as be plus well "
    "there along".split()
)
UNIFORM_RTOL = 0.02  # weights within 2 % of each other count as "all equal"
STEP_NAMES = {"l2l": "step 1 (S_L2L)", "g2l": "step 2 (S_G2L)", "g2g": "step 3 (S_G2G)"}
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


def gap_lines(
    margins: Mapping[str, float],
    gap: float,
    weights: Mapping[str, float],
    shares: Mapping[str, float] | None = None,
    pair: str = "these captions",
) -> list[str]:
    """Markdown lines on a score gap between two items: each step's part of it, which steps
    separate them (:func:`credited_steps`), which work the other way, and — given ``shares`` —
    a credited step whose share of the score itself is small.

    Args:
        margins: step → ``w_s (S_s(x) − S_s(y))``; gap: ``S(x) − S(y)``.
        weights: step → ``w_s`` (a step with weight 0 is switched off and left out).
    """
    credited = credited_steps(margins, gap)
    on = [k for k in STEP_KEYS if weights.get(k, 1.0) != 0.0]
    # "% of the gap" only reads well when every step pushes the same way
    same_way = all(margins[k] * gap >= 0 for k in on)
    parts = []
    for key in on:
        d = margins[key]
        pct = f" ({100.0 * d / gap:.0f}% of the gap)" if same_way else ""
        parts.append(f"{STEP_NAMES[key]} {d:+.3f}{pct}")
    lines = ["; ".join(parts) + "."]
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
                f"is what tells {pair} apart: a share of the score is not a share of "
                "the decision."
            )
    return lines


def margin_text(
    captions: Sequence[str],
    scores: np.ndarray,
    m: int,
    weights: Mapping[str, float],
    shares: Mapping[str, float] | None = None,
    noun: str = "caption",
) -> str:
    """Markdown: which step separates item ``m`` from its reference item, from margins.

    The items are captions (Match) or images (Search: ``noun="image"``, ``captions`` their
    names). A step is credited only when its margin points the way of the gap and makes at least
    :data:`CREDIT_FRACTION` of it; a step whose share of the *score* is large but whose margin is
    not is said to be so.
    """
    ref = reference_caption(scores, m)
    if ref is None:
        if noun == "caption":
            return (
                "Only one caption: add another (e.g. a hard negative with two colours swapped) "
                "to see which step tells them apart."
            )
        return f"Only one {noun}: add another to see which step tells them apart."
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    gap = float(sc[m, 0] - sc[ref, 0])
    margins = step_margins(sc, m, ref, weights)
    who = "the runner-up" if gap >= 0 else f"the best {noun}"
    head = f"**Against {who}** “{shorten(captions[ref], 60)}” (S {gap:+.3f}):"
    if abs(gap) < SAME_SCORE:
        return f"{head} the two {noun}s score the same; no step separates them."
    lines = gap_lines(margins, gap, weights, shares, pair=f"these {noun}s")
    lines[0] = head + " " + lines[0]
    return "\n\n".join(lines)


def compare_text(cmp: CaptionComparison, calibration: Calibration | None = None) -> str:
    """Markdown for the Compare view: which caption wins, by how much, which step caught the
    difference (from the margins), the changed words, and both final scores as evidence."""
    a, b = cmp.a, cmp.b
    sa, sb = a.scores.get("total", 0.0), b.scores.get("total", 0.0)
    weights = step_weights_of(a)
    if abs(cmp.gap) < SAME_SCORE:
        lines = [
            f"**A and B score the same** (S = {sa:.3f} and {sb:.3f}): the model cannot tell "
            "these two captions apart."
        ]
    else:
        win, lose = ("A", "B") if cmp.gap > 0 else ("B", "A")
        lines = [
            f"**{win} scores higher than {lose} by {abs(cmp.gap):.3f}** "
            f"(S = {sa:.3f} for A, {sb:.3f} for B). Each step's part of A − B: "
            + gap_lines(cmp.margins, cmp.gap, weights)[0]
        ]
        lines += gap_lines(cmp.margins, cmp.gap, weights, a.shares, pair="the two captions")[1:]
    words_a = ", ".join(_q(a.display_words[j]) for j in cmp.changed_a) or "none"
    words_b = ", ".join(_q(b.display_words[j]) for j in cmp.changed_b) or "none"
    lines.append(f"Words that differ — in A: {words_a}; in B: {words_b}.")
    if calibration is not None and "total" in calibration.steps:
        evs = [calibration.evidence("total", v) for v in (sa, sb)]
        lines.append(
            f"As evidence (final score S among the saved pairs): A — {evs[0].text}; "
            f"B — {evs[1].text}"
        )
    return "\n\n".join(lines)


def pairs_text(
    caption: str,
    perturbations: Sequence[Any],
    margins: np.ndarray,
    weights: Mapping[str, float],
    kinds: Sequence[str] | None = None,
) -> str:
    """Markdown summing up a minimal-pairs table: how many pairs the final score gets right,
    how many each step does on its own, and which pairs the model gets wrong.

    Args:
        perturbations: ``P`` perturbations (``kind``, ``text``).
        margins: ``(P, 4)`` the true caption minus each pair (``total``, then the weighted
            steps): positive = that score prefers the true caption.
        kinds: display names of the perturbations' kinds (default: their ``kind``).
    """
    mg = np.asarray(margins, dtype=np.float64).reshape(-1, 4)
    n = len(mg)
    names = list(kinds) if kinds is not None else [p.kind for p in perturbations]
    right = int((mg[:, 0] >= SAME_SCORE).sum())
    lines = [
        f"For **“{shorten(caption, 70)}”** the model prefers the true caption over **{right} of "
        f"its {n} minimal pairs** (final score S)."
    ]
    per_step = [
        f"{STEP_NAMES[k]} {int((mg[:, c + 1] >= SAME_SCORE).sum())}"
        for c, k in enumerate(STEP_KEYS)
        if weights.get(k, 1.0) != 0.0
    ]
    lines.append("Each step on its own prefers it in: " + ", ".join(per_step) + f" (of {n}).")
    wrong = [i for i in range(n) if mg[i, 0] < SAME_SCORE]
    if wrong:
        said = "; ".join(
            f"{names[i]} (“{shorten(perturbations[i].text, 50)}”: "
            + (
                "the same score)"
                if abs(mg[i, 0]) < SAME_SCORE
                else f"{-mg[i, 0]:.3f} above the true caption)"
            )
            for i in wrong
        )
        lines.append(f"**Not told apart, or preferred over the true caption:** {said}.")
    caught = {}
    for i in range(n):
        margins_i = {k: float(mg[i, c + 1]) for c, k in enumerate(STEP_KEYS)}
        for k in credited_steps(margins_i, float(mg[i, 0])):
            if mg[i, 0] > 0:
                caught.setdefault(k, []).append(names[i])
    if caught:
        lines.append(
            "Which step caught them: "
            + "; ".join(f"{STEP_NAMES[k]}: {', '.join(v)}" for k, v in caught.items())
            + "."
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
    noun: str = "caption",
) -> str:
    """Markdown under the step-3 chart: S_G2G, the sum, what separates the captions (or the
    images of a Search: ``noun="image"``), evidence."""
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
        md += "\n\n" + margin_text(
            captions, scores, m, step_weights_of(expl), expl.shares, noun=noun
        )
    md += "\n\n" + evidence_text(calibration, s)
    return md


__all__ = [
    "NO_CALIBRATION",
    "STOPWORDS",
    "compare_text",
    "credited_steps",
    "gap_lines",
    "pairs_text",
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
