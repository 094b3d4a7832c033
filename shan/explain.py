"""Attention → per-step explanation data for one image–caption pair (numbers, not pictures).

:meth:`shan.model.shan.SHAN.explain` returns the raw attention of SHAN's three steps for one pair.
This module turns it into what a viewer needs, still as plain numbers (numpy), so the demo's
renderer only has to draw:

* **Step 1 — local-to-local (L2L)**: ``beta[:, j]`` is word *j*'s attention over the *k* regions
  (word → region, sums to 1 over regions); ``alpha[i, :]`` is region *i*'s attention over the *n*
  words. :func:`box_heatmap` paints a per-region weight over the region boxes.
* **Step 2 — global-to-local (G2L)**: ``delta`` (text context → regions), ``gamma`` (image context
  → words) and the self-attention pooling weights that formed each context (``img_pool``,
  ``txt_pool``).
* **Step 3 — global-to-global (G2G)**: ``S_G2G`` and each step's contribution to the final score
  ``S = w1 S_L2L + w2 S_G2L + w3 S_G2G`` (:func:`step_contributions`).

And between two captions of one image (the Compare view, minimal pairs):

* :func:`align_changes` — which tokens differ (a word-level diff), paired up for side-by-side
  heatmaps (a replaced word with its replacement, a moved word with itself);
* :func:`compare_explanations` → :class:`CaptionComparison` — each step's part of the score gap
  ``w_s (S_s(a) − S_s(b))`` and which steps "caught" the difference (:func:`credited_steps`).

No Gradio or matplotlib here: :mod:`demo.render` draws these numbers.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

STEP_KEYS = ("l2l", "g2l", "g2g")
STEP_NAMES = {
    "l2l": "Step 1 · local-to-local",
    "g2l": "Step 2 · global-to-local",
    "g2g": "Step 3 · global-to-global",
}
SCORE_KEYS = ("total", *STEP_KEYS)  # the columns of an (M, 4) score table
CREDIT_FRACTION = 0.2  # a step is credited with a gap when it makes at least 20 % of it
SAME_SCORE = 1e-3  # |score difference| below this: the two captions score the same


def _np(x: Any) -> np.ndarray:
    """Tensor / array / sequence → float64 numpy array (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass
class StepExplanation:
    """Everything the demo shows about one image–caption pair.

    Attributes:
        caption: the caption text as scored.
        words: ``n`` displayed tokens (word-pieces for a transformer text encoder).
        unknown: ``n`` flags, ``True`` where the token is out of vocabulary (scored as ``<unk>``).
        truncated: whether the caption was cut to the model's ``max_words``.
        region_labels: ``k`` short region names (``"red ball"``).
        boxes: ``(k, 4)`` region boxes, ``x1, y1, x2, y2`` in pixels of the shown image.
        image_size: ``(width, height)`` of the shown image.
        alpha: ``(k, n)`` step 1, region → word attention (each row sums to 1).
        beta: ``(k, n)`` step 1, word → region attention (each column sums to 1).
        img_pool: ``(k,)`` step 2, pooling weights forming the image context ``v_c``.
        txt_pool: ``(n,)`` step 2, pooling weights forming the text context ``t_c``.
        gamma: ``(n,)`` step 2, image context → word attention.
        delta: ``(k,)`` step 2, text context → region attention.
        scores: ``total``, ``l2l``, ``g2l``, ``g2g`` (floats; a disabled step is 0).
        contributions: ``l2l``/``g2l``/``g2g`` → ``w_s · S_s``, the step's part of ``total``.
        shares: ``l2l``/``g2l``/``g2g`` → ``|w_s S_s| / Σ |w S|`` (sum 1, or all 0).
        enabled: which steps the model uses.
    """

    caption: str
    words: list[str]
    unknown: list[bool]
    truncated: bool
    region_labels: list[str]
    boxes: np.ndarray
    image_size: tuple[int, int]
    alpha: np.ndarray
    beta: np.ndarray
    img_pool: np.ndarray
    txt_pool: np.ndarray
    gamma: np.ndarray
    delta: np.ndarray
    scores: dict[str, float]
    contributions: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    enabled: dict[str, bool] = field(default_factory=dict)

    @property
    def display_words(self) -> list[str]:
        """Tokens with unknown ones marked ``word?``."""
        return [w + "?" if u else w for w, u in zip(self.words, self.unknown)]

    def top_regions(self, word: int, top: int = 3) -> list[tuple[int, float]]:
        """Step 1: the ``top`` regions word ``word`` attends to most, ``[(region, beta)]``."""
        col = self.beta[:, word]
        order = np.argsort(-col, kind="stable")[:top]
        return [(int(i), float(col[i])) for i in order]

    def top_words(self, region: int, top: int = 3) -> list[tuple[int, float]]:
        """Step 1: the ``top`` words region ``region`` attends to most, ``[(word, alpha)]``."""
        row = self.alpha[region]
        order = np.argsort(-row, kind="stable")[:top]
        return [(int(j), float(row[j])) for j in order]


def step_contributions(
    scores: dict[str, float],
    step_weights: Sequence[float] = (1.0, 1.0, 1.0),
    enabled: dict[str, bool] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Step 3's summary: how much each step adds to ``S = w1 S_L2L + w2 S_G2L + w3 S_G2G``.

    Args:
        scores: at least ``l2l``, ``g2l``, ``g2g`` (cosine-like values in [-1, 1]).
        step_weights: ``(w1, w2, w3)``.
        enabled: step → used; a disabled step contributes 0.

    Returns:
        ``(contributions, shares)``: ``w_s · S_s`` per step, and ``|w_s S_s| / Σ_t |w_t S_t|``
        (sums to 1 unless every contribution is 0, then all 0). Absolute values because a step
        can pull the score down (negative cosine): its share says how much it *moved* the score.
    """
    enabled = enabled or {}
    contrib = {}
    for key, w in zip(STEP_KEYS, step_weights):
        on = enabled.get(key, True)
        contrib[key] = float(w) * float(scores.get(key, 0.0)) if on else 0.0
    mass = sum(abs(v) for v in contrib.values())
    shares = {k: (abs(v) / mass if mass > 0 else 0.0) for k, v in contrib.items()}
    return contrib, shares


def from_model_explanation(
    expl: Any,
    *,
    caption: str,
    words: Sequence[str],
    unknown: Sequence[bool],
    truncated: bool,
    boxes: Any,
    region_labels: Sequence[str],
    image_size: tuple[int, int],
    step_weights: Sequence[float] = (1.0, 1.0, 1.0),
    enabled: dict[str, bool] | None = None,
) -> StepExplanation:
    """Wrap the model's raw :class:`Explanation` (tensors) into a :class:`StepExplanation`.

    Args:
        expl: has ``alpha``/``beta`` ``(k, n')``, ``img_pool``/``delta`` ``(k,)``, ``txt_pool``/
            ``gamma`` ``(n',)`` and ``scores`` (dict); ``n' >= n`` (padding is cut off).
        words, unknown: the ``n`` real tokens of the caption and their out-of-vocabulary flags.
        boxes: ``(k, 4)`` region boxes (pixels, xyxy).
        region_labels: ``k`` names.

    Raises:
        ValueError: the attention shapes do not match the regions / words given.
    """
    n = len(words)
    k = len(region_labels)
    alpha = _np(expl.alpha)
    beta = _np(expl.beta)
    if alpha.ndim != 2 or alpha.shape[0] != k or alpha.shape[1] < n or beta.shape != alpha.shape:
        raise ValueError(
            f"explanation shapes alpha {alpha.shape} / beta {beta.shape} do not fit "
            f"{k} regions × {n} words"
        )
    scores = {key: float(v) for key, v in dict(expl.scores).items()}
    contrib, shares = step_contributions(scores, step_weights, enabled)
    return StepExplanation(
        caption=caption,
        words=list(words),
        unknown=[bool(u) for u in unknown],
        truncated=bool(truncated),
        region_labels=list(region_labels),
        boxes=_np(boxes).reshape(-1, 4),
        image_size=(int(image_size[0]), int(image_size[1])),
        alpha=alpha[:, :n],
        beta=beta[:, :n],
        img_pool=_np(expl.img_pool)[:k],
        txt_pool=_np(expl.txt_pool)[:n],
        gamma=_np(expl.gamma)[:n],
        delta=_np(expl.delta)[:k],
        scores=scores,
        contributions=contrib,
        shares=shares,
        enabled={key: bool((enabled or {}).get(key, True)) for key in STEP_KEYS},
    )


def box_heatmap(
    weights: Any,
    boxes: Any,
    image_size: tuple[int, int],
    max_side: int = 256,
    normalize: bool = True,
    mode: str = "max",
    uncovered: float = 0.0,
) -> np.ndarray:
    """Paint per-region weights over their boxes: the picture behind every region heatmap.

    Computed on a grid whose longer side is ``max_side`` (the renderer stretches it over the
    image). Where boxes overlap, ``mode="max"`` keeps the larger weight (each box shows its own
    weight, so the brightest box *is* the most attended region); ``mode="sum"`` adds them up (a
    spot several attended regions share stands out more).

    Args:
        weights: ``(k,)`` non-negative region weights (e.g. ``beta[:, j]``, ``delta``).
        boxes: ``(k, 4)`` ``x1, y1, x2, y2`` in pixels of an image of ``image_size``.
        image_size: ``(width, height)``.
        max_side: longer side of the returned grid.
        normalize: divide by the maximum so the map lies in [0, 1] (all-zero stays zero).
        mode: ``"max"`` or ``"sum"``.
        uncovered: value of pixels outside every box (e.g. ``nan`` to tell "no region here"
            apart from "a region with weight 0").

    Returns:
        ``(h, w)`` float64 map with ``w / h ≈ width / height``.
    """
    wts = _np(weights).reshape(-1)
    bxs = _np(boxes).reshape(-1, 4)
    if wts.shape[0] != bxs.shape[0]:
        raise ValueError(f"{wts.shape[0]} weights for {bxs.shape[0]} boxes")
    if mode not in ("max", "sum"):
        raise ValueError(f"mode must be 'max' or 'sum', got {mode!r}")
    width, height = max(int(image_size[0]), 1), max(int(image_size[1]), 1)
    scale = min(1.0, max_side / max(width, height))
    gw, gh = max(1, round(width * scale)), max(1, round(height * scale))
    sx, sy = gw / width, gh / height
    x1 = np.clip(np.floor(bxs[:, 0] * sx), 0, gw - 1).astype(int)
    y1 = np.clip(np.floor(bxs[:, 1] * sy), 0, gh - 1).astype(int)
    x2 = np.maximum(np.clip(np.ceil(bxs[:, 2] * sx), 1, gw).astype(int), x1 + 1)
    y2 = np.maximum(np.clip(np.ceil(bxs[:, 3] * sy), 1, gh).astype(int), y1 + 1)
    heat = np.zeros((gh, gw), dtype=np.float64)
    covered = np.zeros((gh, gw), dtype=bool)
    for i in range(len(wts)):
        cell = heat[y1[i] : y2[i], x1[i] : x2[i]]
        covered[y1[i] : y2[i], x1[i] : x2[i]] = True
        if mode == "max":
            np.maximum(cell, wts[i], out=cell)
        else:
            cell += wts[i]
    if normalize:
        peak = heat.max()
        if peak > 0:
            heat = heat / peak
    heat[~covered] = uncovered
    return heat


# --------------------------------------------------------------------------------------------
# Two captions of one image


def align_changes(
    a: Sequence[str], b: Sequence[str], max_pairs: int | None = None
) -> tuple[list[int], list[int], list[tuple[int | None, int | None]]]:
    """Which tokens differ between captions ``a`` and ``b``, and how they pair up.

    A word-level diff (:class:`difflib.SequenceMatcher`, no junk heuristic): tokens outside the
    matching blocks are *changed*. Pairs, in the order of ``a``: a replaced stretch pairs its
    tokens position by position; a token deleted from ``a`` pairs with the same token inserted in
    ``b`` when there is one (a moved word: "a red circle and a square" → "a circle and a red
    square"); what is left pairs with ``None``.

    Args:
        a, b: the two captions' tokens (as the model reads them).
        max_pairs: keep at most this many pairs (default: all).

    Returns:
        ``(changed_a, changed_b, pairs)``: sorted token indices of ``a`` and of ``b``, and
        ``[(index in a or None, index in b or None)]``.
    """
    sm = difflib.SequenceMatcher(None, list(a), list(b), autojunk=False)
    changed_a: list[int] = []
    changed_b: list[int] = []
    pairs: list[tuple[int | None, int | None]] = []
    inserted: list[int] = []
    deleted: list[int] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        changed_a.extend(range(i1, i2))
        changed_b.extend(range(j1, j2))
        if tag == "replace":
            n = min(i2 - i1, j2 - j1)
            pairs.extend((i1 + t, j1 + t) for t in range(n))
            deleted.extend(range(i1 + n, i2))
            inserted.extend(range(j1 + n, j2))
        elif tag == "delete":
            deleted.extend(range(i1, i2))
        else:
            inserted.extend(range(j1, j2))
    for i in deleted:  # a moved word pairs with itself
        j = next((j for j in inserted if b[j] == a[i]), None)
        if j is not None:
            inserted.remove(j)
        pairs.append((i, j))
    pairs.extend((None, j) for j in inserted)
    pairs.sort(key=lambda p: (p[0] if p[0] is not None else len(a), p[1] or 0))
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    return sorted(changed_a), sorted(changed_b), pairs


def credited_steps(margins: Mapping[str, float], gap: float) -> list[str]:
    """Steps that separate two captions: margin in the gap's direction and at least
    :data:`CREDIT_FRACTION` of it, largest first. Empty when the captions score the same
    (``|gap|`` below :data:`SAME_SCORE`).

    Args:
        margins: step → ``w_s (S_s(a) − S_s(b))`` (keys of :data:`STEP_KEYS`; others ignored).
        gap: ``S(a) − S(b)``.
    """
    if abs(gap) < SAME_SCORE:
        return []
    sign = 1.0 if gap > 0 else -1.0
    keep = [
        k for k, d in margins.items() if k in STEP_KEYS and sign * d >= CREDIT_FRACTION * abs(gap)
    ]
    return sorted(keep, key=lambda k: -sign * margins[k])


def preference(margin: float, tol: float = SAME_SCORE) -> int:
    """``+1`` when a margin ``score(a) − score(b)`` prefers ``a``, ``-1`` for ``b``, 0 within
    ``tol``."""
    return 0 if abs(margin) < tol else (1 if margin > 0 else -1)


@dataclass
class CaptionComparison:
    """Two captions of the same image, side by side (caption ``a`` minus caption ``b``).

    Attributes:
        a, b: the two explanations (same regions).
        changed_a, changed_b: token indices that differ (see :func:`align_changes`).
        pairs: ``[(index in a | None, index in b | None)]`` — the differing words to show side
            by side.
        margins: ``total`` → ``S(a) − S(b)``; each step → ``w_s (S_s(a) − S_s(b))`` (they add up
            to the total).
        credited: the steps that "caught" the difference (:func:`credited_steps`), largest first.
    """

    a: StepExplanation
    b: StepExplanation
    changed_a: list[int]
    changed_b: list[int]
    pairs: list[tuple[int | None, int | None]]
    margins: dict[str, float]
    credited: list[str]

    @property
    def gap(self) -> float:
        """``S(a) − S(b)``."""
        return self.margins["total"]

    def prefers(self, key: str) -> int:
        """``+1``: step ``key`` (or ``total``) scores ``a`` higher, ``-1``: ``b``, 0: the same."""
        return preference(self.margins.get(key, 0.0))


def compare_explanations(
    a: StepExplanation, b: StepExplanation, max_pairs: int | None = None
) -> CaptionComparison:
    """Caption ``a`` against caption ``b`` on the same image: changed words and step margins.

    Raises:
        ValueError: the two explanations are not of the same regions.
    """
    if a.beta.shape[0] != b.beta.shape[0] or not np.array_equal(a.boxes, b.boxes):
        raise ValueError("the two explanations are not of the same image regions")
    changed_a, changed_b, pairs = align_changes(a.words, b.words, max_pairs)
    margins = {"total": float(a.scores.get("total", 0.0)) - float(b.scores.get("total", 0.0))}
    for key in STEP_KEYS:
        margins[key] = float(a.contributions.get(key, 0.0)) - float(b.contributions.get(key, 0.0))
    return CaptionComparison(
        a, b, changed_a, changed_b, pairs, margins, credited_steps(margins, margins["total"])
    )


def score_margins(
    scores: np.ndarray, ref: int, weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """Every caption's margins to caption ``ref``: ``(M, 4)`` with columns :data:`SCORE_KEYS`.

    ``out[m, 0] = S(m) − S(ref)``, ``out[m, s] = w_s (S_s(m) − S_s(ref))``.

    Args:
        scores: ``(M, 4)`` raw scores, columns :data:`SCORE_KEYS`.
        weights: step → ``w_s`` (default 1).
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    w = np.array([1.0] + [float((weights or {}).get(k, 1.0)) for k in STEP_KEYS])
    return (sc - sc[ref]) * w


__all__ = [
    "CREDIT_FRACTION",
    "SAME_SCORE",
    "SCORE_KEYS",
    "STEP_KEYS",
    "STEP_NAMES",
    "CaptionComparison",
    "StepExplanation",
    "align_changes",
    "box_heatmap",
    "compare_explanations",
    "credited_steps",
    "from_model_explanation",
    "preference",
    "score_margins",
    "step_contributions",
]
