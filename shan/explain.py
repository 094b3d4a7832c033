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

No Gradio or matplotlib here: :mod:`demo.render` draws these numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
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


__all__ = [
    "STEP_KEYS",
    "STEP_NAMES",
    "StepExplanation",
    "box_heatmap",
    "from_model_explanation",
    "step_contributions",
]
