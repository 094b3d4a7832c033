"""Retrieval metrics (SCAN-family convention) and all-pairs scoring of a split.

Conventions, identical to SCAN / VSE++ ``evaluation.py``:

* ``sims`` is ``(N, 5N)``: image ``i``'s ground-truth captions are columns ``5i .. 5i+4``.
* i2t: the rank of an image is the best (smallest) rank among its 5 captions.
  t2i: the rank of a caption is the rank of its image.
* Ranks are reported **1-based** (rank 1 = retrieved first). ``R@K`` = percentage of queries with
  rank ≤ K. ``medr`` = ``floor(median(rank))`` (SCAN's ``floor(median(rank0)) + 1``), ``meanr`` =
  mean rank. rSum = the sum of the six recalls (i2t and t2i R@1, R@5, R@10).
* **Ties.** SCAN orders candidates by ``np.argsort(scores)[::-1]``. With a *stable* ascending sort
  reversed, tied scores end up in *descending index order*: among equal scores the candidate with
  the larger column (caption) / row (image) index is ranked first. Here the rank of candidate ``j``
  is computed exactly that way: ``rank(j) = 1 + #{l : s_l > s_j} + #{l > j : s_l == s_j}``. (SCAN
  itself used numpy's default, unstable, quicksort, so its tie order was unspecified; this makes it
  deterministic and equal to SCAN's whenever quicksort happened to be stable.) Example: a row
  ``[1, 1, 1]`` ranks column 2 first, column 1 second, column 0 third.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shan.calibration import model_enabled_steps
from shan.data.precomp import CAPS_PER_IMAGE, DataError, SplitArrays, load_split_arrays
from shan.data.vocab import TokenBatch, TransformerTextProcessor, Vocabulary
from shan.errors import ShanError

Metrics = tuple[float, float, float, float, float]  # r1, r5, r10 (percent), medr, meanr (1-based)

# Measured on one H200 (1000 x 5000 pairs, k = 36, d = 1024, bf16-trained model scored in fp32):
# shan-eval end to end with the model's default (16, 32) chunks took 24 s; compute_sims alone took
# 5.9 s with (64, 128) at 6.6 GB peak and 5.5 s with (128, 512) at 41 GB.
CUDA_SCORE_CHUNKS = (64, 128)

RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
METRIC_KEYS = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "i2t_medr",
    "i2t_meanr",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "t2i_medr",
    "t2i_meanr",
)


class EvaluationError(ShanError, ValueError):
    """A similarity matrix or split that cannot be evaluated (message says why)."""


def _check_sims(sims: np.ndarray) -> np.ndarray:
    sims = np.asarray(sims)
    if sims.ndim != 2:
        raise EvaluationError(f"sims must be a 2-d (N, 5N) matrix, got shape {sims.shape}")
    n, m = sims.shape
    if n == 0 or m != CAPS_PER_IMAGE * n:
        raise EvaluationError(
            f"sims must be (N, {CAPS_PER_IMAGE}N) with N >= 1 (caption c belongs to image c // 5), "
            f"got shape {sims.shape}"
        )
    if not np.isfinite(sims).all():
        raise EvaluationError("sims contains NaN or infinite values")
    return sims


def _positions(scores: np.ndarray) -> np.ndarray:
    """0-based position of every column in each row's descending order (ties: larger index first).

    Args:
        scores: ``(R, C)``.

    Returns:
        ``(R, C)`` int64, ``pos[r, c]`` = rank0 of column ``c`` in row ``r``.
    """
    order = np.argsort(scores, axis=1, kind="stable")[:, ::-1]  # exactly SCAN's argsort[::-1]
    pos = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    pos[rows, order] = np.arange(scores.shape[1])[None, :]
    return pos


def _summarise(ranks0: np.ndarray) -> Metrics:
    """(r1, r5, r10, medr, meanr) from 0-based ranks (SCAN's formulas)."""
    n = len(ranks0)
    r1 = 100.0 * float((ranks0 < 1).sum()) / n
    r5 = 100.0 * float((ranks0 < 5).sum()) / n
    r10 = 100.0 * float((ranks0 < 10).sum()) / n
    medr = float(math.floor(np.median(ranks0)) + 1)
    meanr = float(ranks0.mean() + 1)
    return r1, r5, r10, medr, meanr


def i2t_ranks(sims: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """1-based i2t rank of every image (its best ground-truth caption). ``sims``: ``(N, 5N)``."""
    sims = _check_sims(sims)
    n = sims.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    for s in range(0, n, chunk):
        rows = np.arange(s, min(s + chunk, n))
        pos = _positions(sims[rows])
        gt = CAPS_PER_IMAGE * rows[:, None] + np.arange(CAPS_PER_IMAGE)[None, :]
        ranks[rows] = np.take_along_axis(pos, gt, axis=1).min(axis=1)
    return ranks + 1


def t2i_ranks(sims: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """1-based t2i rank of every caption (the rank of its image). ``sims``: ``(N, 5N)``."""
    sims = _check_sims(sims)
    m = sims.shape[1]
    ranks = np.empty(m, dtype=np.int64)
    for s in range(0, m, chunk):
        cols = np.arange(s, min(s + chunk, m))
        pos = _positions(np.ascontiguousarray(sims[:, cols].T))
        ranks[cols] = pos[np.arange(len(cols)), cols // CAPS_PER_IMAGE]
    return ranks + 1


def i2t(sims: np.ndarray, return_ranks: bool = False) -> Any:
    """Image → text retrieval: ``(r1, r5, r10, medr, meanr)`` (recalls in percent, ranks 1-based).

    Args:
        sims: ``(N, 5N)`` image × caption similarities.
        return_ranks: also return the ``(N,)`` 1-based ranks.
    """
    ranks = i2t_ranks(sims)
    out = _summarise(ranks - 1)
    return (out, ranks) if return_ranks else out


def t2i(sims: np.ndarray, return_ranks: bool = False) -> Any:
    """Text → image retrieval: ``(r1, r5, r10, medr, meanr)`` (recalls in percent, ranks 1-based).

    Args:
        sims: ``(N, 5N)`` image × caption similarities (not transposed).
        return_ranks: also return the ``(5N,)`` 1-based ranks.
    """
    ranks = t2i_ranks(sims)
    out = _summarise(ranks - 1)
    return (out, ranks) if return_ranks else out


def metrics_from_sims(sims: np.ndarray) -> dict[str, float]:
    """All ten metrics plus ``rsum`` as a flat dict (keys in :data:`METRIC_KEYS`)."""
    a, b = i2t(sims), t2i(sims)
    out = {f"i2t_{k}": v for k, v in zip(("r1", "r5", "r10", "medr", "meanr"), a)}
    out.update({f"t2i_{k}": v for k, v in zip(("r1", "r5", "r10", "medr", "meanr"), b)})
    out["rsum"] = sum(out[k] for k in RECALL_KEYS)
    return out


def fold5_summary(per_fold: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over folds, and rSum = the sum of the six *mean* recalls.

    (rSum of the means equals the mean of the per-fold rSums.) The known peer bug printed
    ``6 × mean(i2t recalls)`` as rSum and shifted the labels by one; this takes each metric by name.
    """
    if not per_fold:
        raise EvaluationError("fold5_summary needs at least one fold")
    out = {k: float(np.mean([f[k] for f in per_fold])) for k in METRIC_KEYS}
    out["rsum"] = sum(out[k] for k in RECALL_KEYS)
    return out


def format_metrics(m: dict[str, float], title: str = "") -> str:
    """Human-readable block: R@1/5/10, medr, meanr both ways, and rSum."""
    lines = [title] if title else []
    lines.append(
        "Image→Text: R@1 {i2t_r1:.1f}  R@5 {i2t_r5:.1f}  R@10 {i2t_r10:.1f}  "
        "medr {i2t_medr:.1f}  meanr {i2t_meanr:.1f}".format(**m)
    )
    lines.append(
        "Text→Image: R@1 {t2i_r1:.1f}  R@5 {t2i_r5:.1f}  R@10 {t2i_r10:.1f}  "
        "medr {t2i_medr:.1f}  meanr {t2i_meanr:.1f}".format(**m)
    )
    lines.append("rSum: {rsum:.1f}".format(**m))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Scoring a split with a model


def _pad_cat(vals: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding dim 1 (regions / words) to the widest part."""
    if vals[0].dim() >= 2:
        width = max(v.shape[1] for v in vals)
        pad = [(0, 0) * (v.dim() - 2) + (0, width - v.shape[1]) for v in vals]
        vals = [torch.nn.functional.pad(v, p) if p[-1] else v for v, p in zip(vals, pad)]
    return torch.cat(vals, dim=0)


def _cat_embeddings(parts: list[Any]) -> Any:
    """Concatenate ``ImageEmbeddings`` (a NamedTuple of tensors) along the image dimension."""
    if len(parts) == 1:
        return parts[0]
    return type(parts[0])(*(_pad_cat(list(vals)) for vals in zip(*parts)))


STEP_SCORE_KEYS = ("total", "l2l", "g2l", "g2g")  # the fields of the model's StepScores


def uses_geometry(model: torch.nn.Module) -> bool:
    """Whether ``model`` (a SHAN) reads region boxes (``ModelConfig.use_geometry``)."""
    return bool(getattr(getattr(model, "cfg", None), "use_geometry", False))


def _image_boxes(
    model: torch.nn.Module, boxes: np.ndarray | torch.Tensor | None
) -> np.ndarray | torch.Tensor | None:
    """``boxes`` for a geometry model (which cannot score without them), None for the others."""
    if not uses_geometry(model):
        return None
    if boxes is None:
        raise EvaluationError(
            "the model uses region geometry (use_geometry) but no boxes were given: pass the "
            "regions' boxes normalised to [0, 1] (SplitArrays.normalized_boxes)"
        )
    return boxes


def _encode_image_rows(
    model: torch.nn.Module,
    feats: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor | None,
    boxes: np.ndarray | torch.Tensor | None,
    rows: np.ndarray | slice,
    device: torch.device,
) -> Any:
    """``model.encode_images`` of the images ``rows`` (numpy memory maps are fine)."""
    f = torch.from_numpy(np.array(feats[rows], dtype=np.float32)).to(device)
    mk = None if masks is None else torch.as_tensor(np.asarray(masks[rows])).to(device)
    bx = None if boxes is None else torch.as_tensor(np.asarray(boxes[rows]), dtype=torch.float32)
    return model.encode_images(f, mk, None if bx is None else bx.to(device))


@torch.no_grad()
def _score_all(
    model: torch.nn.Module,
    feats: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor | None,
    text_batch: TokenBatch,
    keys: Sequence[str],
    device: torch.device | str = "cpu",
    chunk: int = 256,
    txt_chunk: int = 1024,
    progress: bool = False,
    score_chunks: tuple[int, int] | None = None,
    boxes: np.ndarray | torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The all-pairs scoring loop behind :func:`compute_sims` / :func:`compute_step_sims`.

    Returns:
        ``{key: (N, M) float32}`` for each of ``keys`` (fields of the model's ``StepScores``).
    """
    device = torch.device(device)
    if score_chunks is None and device.type == "cuda":
        score_chunks = CUDA_SCORE_CHUNKS
    boxes = _image_boxes(model, boxes)
    was_training = model.training
    model.eval()
    n = int(feats.shape[0])
    m = len(text_batch)
    img_parts = []
    for s in range(0, n, chunk):
        rows = slice(s, s + chunk)
        img_parts.append(_encode_image_rows(model, feats, masks, boxes, rows, device))
    img = _cat_embeddings(img_parts)
    out = {key: np.empty((n, m), dtype=np.float32) for key in keys}
    starts = range(0, m, txt_chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", unit="chunk")
    for s in starts:
        sub = text_batch.select(slice(s, s + txt_chunk)).to(device)
        txt = model.encode_captions(sub.tokens, sub.lengths)
        kw = dict(zip(("img_chunk", "txt_chunk"), score_chunks)) if score_chunks else {}
        scores = model.score(img, txt, **kw)
        for key in keys:
            out[key][:, s : s + len(sub)] = getattr(scores, key).float().cpu().numpy()
    model.train(was_training)
    return out


def compute_sims(
    model: torch.nn.Module,
    feats: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor | None,
    text_batch: TokenBatch,
    device: torch.device | str = "cpu",
    chunk: int = 256,
    txt_chunk: int = 1024,
    progress: bool = False,
    score_chunks: tuple[int, int] | None = None,
    boxes: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """All image × caption SHAN scores.

    Images are encoded once (in chunks of ``chunk``) and kept on ``device``; captions are encoded
    and scored ``txt_chunk`` at a time with ``model.score(img, txt, ...)``, which bounds its own
    memory by working on ``score_chunks = (images, captions)`` pairs at once (default: the
    model's own defaults on CPU, :data:`CUDA_SCORE_CHUNKS` on CUDA).

    Args:
        model: a SHAN model (``encode_images``, ``encode_captions``, ``score``).
        feats: ``(N, k, D)`` region features (numpy memory map is fine).
        masks: ``(N, k)`` bool valid regions, or None (all valid).
        text_batch: the ``M`` captions.
        device: where to compute.
        chunk: images per encoding chunk.
        txt_chunk: captions per encoding + scoring call.
        progress: show a tqdm bar over caption chunks.
        score_chunks: ``(img_chunk, txt_chunk)`` passed to ``model.score``; per-pair memory grows
            with their product.
        boxes: ``(N, k, 4)`` region boxes normalised to ``[0, 1]``; required by a model with
            ``use_geometry`` (:class:`EvaluationError` without them), ignored otherwise.

    Returns:
        ``(N, M)`` float32 numpy array of total scores.
    """
    return _score_all(
        model,
        feats,
        masks,
        text_batch,
        ("total",),
        device,
        chunk,
        txt_chunk,
        progress,
        score_chunks,
        boxes,
    )["total"]


def compute_step_sims(
    model: torch.nn.Module,
    feats: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor | None,
    text_batch: TokenBatch,
    device: torch.device | str = "cpu",
    chunk: int = 256,
    txt_chunk: int = 1024,
    progress: bool = False,
    score_chunks: tuple[int, int] | None = None,
    boxes: np.ndarray | torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Like :func:`compute_sims` (same arguments, same single scoring pass), but every step.

    Returns:
        ``{"total", "l2l", "g2l", "g2g"}`` → ``(N, M)`` float32 (a disabled step: zeros).
    """
    return _score_all(
        model,
        feats,
        masks,
        text_batch,
        STEP_SCORE_KEYS,
        device,
        chunk,
        txt_chunk,
        progress,
        score_chunks,
        boxes,
    )


def evaluate_arrays(
    model: torch.nn.Module,
    text: Vocabulary | TransformerTextProcessor,
    arrays: SplitArrays,
    fold5: bool = False,
    device: torch.device | str = "cpu",
    max_words: int | None = None,
    chunk: int = 256,
    progress: bool = False,
    score_chunks: tuple[int, int] | None = None,
    calibrate: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` on a loaded split (see :func:`evaluate_split` for the result).

    With ``calibrate``, every step is scored in the same single pass and ``result["calibration"]``
    holds the split's :class:`shan.calibration.Calibration` (each step's score distribution over
    matching and non-matching pairs; ``save_calibration(cal, checkpoint_dir)`` stores it).
    A model with ``use_geometry`` reads the split's boxes (:meth:`SplitArrays.normalized_boxes`;
    a split without boxes or image sizes raises :class:`DataError`).
    """
    if max_words is None:
        max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    boxes = arrays.normalized_boxes() if uses_geometry(model) else None
    batch = text.encode_batch(arrays.captions, max_words)
    score = compute_step_sims if calibrate else compute_sims
    out = score(
        model,
        arrays.feats,
        arrays.masks,
        batch,
        device=device,
        chunk=chunk,
        progress=progress,
        score_chunks=score_chunks,
        boxes=boxes,
    )
    sims = out["total"] if calibrate else out
    n = arrays.n_images
    result: dict[str, Any] = {
        "split": arrays.split,
        "n_images": n,
        "n_captions": len(arrays.captions),
        "all": metrics_from_sims(sims),
    }
    if calibrate:
        from shan.calibration import calibrate_scores

        result["calibration"] = calibrate_scores(
            out,
            enabled=model_enabled_steps(model),
            source={"split": arrays.split, "n_images": n, "n_captions": len(arrays.captions)},
        )
    if fold5:
        fold = n // 5
        if fold < 1:
            raise EvaluationError(f"fold5 needs at least 5 images, the split has {n}")
        folds = []
        for i in range(5):
            a, b = i * fold, (i + 1) * fold
            folds.append(metrics_from_sims(sims[a:b, CAPS_PER_IMAGE * a : CAPS_PER_IMAGE * b]))
        result["folds"] = folds
        result["fold5"] = fold5_summary(folds)
        result["fold_size"] = fold
    return result


def evaluate_split(
    model: torch.nn.Module,
    text: Vocabulary | TransformerTextProcessor,
    root: str | Path,
    name: str,
    split: str,
    fold5: bool = False,
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    chunk: int = 256,
    progress: bool = False,
    score_chunks: tuple[int, int] | None = None,
    calibrate: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``<root>/<name>_precomp/{split}``.

    Flickr30K test: 1000 images → ``result["all"]``. COCO ``testall`` with ``fold5``: the 5000 ×
    25000 matrix is scored once; ``result["fold5"]`` is COCO 1K (mean over the five 1000-image
    folds, rSum from the mean recalls), ``result["all"]`` is COCO 5K. In general ``fold5`` uses five
    folds of ``N // 5`` consecutive images.

    Returns:
        ``{"split", "n_images", "n_captions", "all": metrics, ["fold5": metrics, "folds": [...],
        "fold_size": int], ["calibration": Calibration]}``, metrics as in
        :func:`metrics_from_sims`; ``calibration`` with ``calibrate`` (see :func:`evaluate_arrays`).
    """
    img_dim = getattr(getattr(model, "cfg", None), "img_dim", None)
    arrays = load_split_arrays(root, name, split, img_dim=img_dim, max_images=max_images)
    return evaluate_arrays(
        model,
        text,
        arrays,
        fold5=fold5,
        device=device,
        chunk=chunk,
        progress=progress,
        score_chunks=score_chunks,
        calibrate=calibrate,
    )


def evaluate_checkpoint(
    ckpt: str | Path,
    data_root: str | Path,
    name: str,
    split: str,
    fold5: bool = False,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> dict[str, Any]:
    """Load a checkpoint (directory or Hub repo id) and :func:`evaluate_split` it."""
    from shan.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt, device=device)
    result = evaluate_split(
        loaded.model, loaded.text, data_root, name, split, fold5=fold5, device=device, **kwargs
    )
    result["checkpoint"] = str(loaded.path)
    return result


# ---------------------------------------------------------------------------------------------
# Scoring given (image, caption) pairs: minimal pairs, typed negatives


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module,
    text: Vocabulary | TransformerTextProcessor,
    feats: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor | None,
    image_index: Sequence[int] | np.ndarray,
    captions: Sequence[str],
    boxes: np.ndarray | torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    img_group: int = 8,
    max_words: int | None = None,
) -> dict[str, np.ndarray]:
    """Every step's score of given pairs: pair ``p`` is image ``image_index[p]`` (a row of
    ``feats``) with ``captions[p]``.

    The building block of minimal-pair tests (a true caption against its negatives on the same
    image, or one caption against an image and its distractor): pairs are grouped by image,
    ``img_group`` images at a time are scored against all their pairs' captions in one
    ``model.score`` call, and the pairs' entries are kept.

    Args:
        model: a SHAN; text: its caption processor.
        feats: ``(N, k, D)`` region features; masks: ``(N, k)`` bool or None.
        image_index: ``(P,)`` image row of each pair; captions: ``P`` caption strings.
        boxes: ``(N, k, 4)`` normalised boxes; required by a model with ``use_geometry``.
        device: where to compute. img_group: images per scoring call.
        max_words: caption truncation (default: the model's ``max_words``).

    Returns:
        ``{"total", "l2l", "g2l", "g2g"}`` → ``(P,)`` float32 (a disabled step: zeros).
    """
    device = torch.device(device)
    idx = np.asarray(image_index, dtype=np.int64).reshape(-1)
    if len(idx) != len(captions):
        raise EvaluationError(f"{len(idx)} image indices for {len(captions)} captions")
    n = int(feats.shape[0])
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise EvaluationError(f"image indices must lie in [0, {n}), got [{idx.min()}, {idx.max()}]")
    if max_words is None:
        max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    boxes = _image_boxes(model, boxes)
    out = {key: np.zeros(len(idx), dtype=np.float32) for key in STEP_SCORE_KEYS}
    if not len(idx):
        return out
    was_training = model.training
    model.eval()
    order = np.argsort(idx, kind="stable")
    images, starts = np.unique(idx[order], return_index=True)
    bounds = list(starts) + [len(order)]
    for g0 in range(0, len(images), max(1, int(img_group))):
        rows = images[g0 : g0 + img_group]
        pairs = order[bounds[g0] : bounds[g0 + len(rows)]]  # the group's pairs, image-sorted
        img = _encode_image_rows(model, feats, masks, boxes, rows, device)
        batch = text.encode_batch([captions[p] for p in pairs], max_words).to(device)
        scores = model.score(img, model.encode_captions(batch.tokens, batch.lengths))
        which = torch.as_tensor(np.searchsorted(rows, idx[pairs]), device=scores.total.device)
        cols = torch.arange(len(pairs), device=which.device)
        for key in STEP_SCORE_KEYS:
            out[key][pairs] = getattr(scores, key)[which, cols].float().cpu().numpy()
    model.train(was_training)
    return out


@torch.no_grad()
def negative_accuracy(
    model: torch.nn.Module,
    text: Vocabulary | TransformerTextProcessor,
    arrays: SplitArrays,
    negatives: Sequence[Sequence[dict[str, str]]],
    device: torch.device | str = "cpu",
    img_group: int = 8,
) -> dict[str, Any]:
    """How often each step prefers a true caption to its own hard negatives, per negative type.

    For every caption ``c`` of the split and every ``{"type", "text"}`` in ``negatives[c]`` (e.g.
    :func:`shan.data.precomp.read_negatives`, or word swaps from
    :func:`shan.data.precomp.swap_negatives`), the pair wins for a step when
    ``S(image c // 5, caption c) > S(image c // 5, negative)`` (a tie loses).

    Returns:
        ``{"per_type": {type: {"n": int, "total": acc, "l2l": acc, "g2l": acc, "g2g": acc}},
        "all": {...the same over every negative...}, "steps": [enabled step names]}`` with
        accuracies in ``[0, 1]``; a step the model does not use is NaN.
    """
    if len(negatives) != len(arrays.captions):
        raise EvaluationError(
            f"{len(negatives)} lists of negatives for {len(arrays.captions)} captions"
        )
    caps: list[str] = list(arrays.captions)
    owner: list[int] = [c // CAPS_PER_IMAGE for c in range(len(caps))]
    pos_of: list[int] = []  # for each negative, the pair index of its true caption
    types: list[str] = []
    for c, negs in enumerate(negatives):
        for neg in negs:
            caps.append(neg["text"])
            owner.append(c // CAPS_PER_IMAGE)
            pos_of.append(c)
            types.append(neg["type"])
    boxes = arrays.normalized_boxes() if uses_geometry(model) else None
    sc = score_pairs(model, text, arrays.feats, arrays.masks, owner, caps, boxes, device, img_group)
    n_true = len(arrays.captions)
    neg_scores = {key: v[n_true:] for key, v in sc.items()}
    pos_scores = {key: v[np.asarray(pos_of, dtype=np.int64)] for key, v in sc.items()}
    per_type = pair_accuracy(model, pos_scores, neg_scores, types)
    return {
        "per_type": per_type,
        "all": pair_accuracy(model, pos_scores, neg_scores, ["all"] * len(types)).get(
            "all", {"n": 0, **dict.fromkeys(STEP_SCORE_KEYS, float("nan"))}
        ),
        "steps": [k for k, on in model_enabled_steps(model).items() if on],
    }


def pair_accuracy(
    model: torch.nn.Module,
    pos: dict[str, np.ndarray],
    neg: dict[str, np.ndarray],
    groups: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """How often the first of each minimal pair scores higher, per group and step.

    Args:
        model: the SHAN that scored them (a step it does not use gets NaN).
        pos, neg: ``{"total", "l2l", "g2l", "g2g"}`` → ``(P,)`` scores of the true side and the
            changed side of ``P`` pairs (e.g. from :func:`score_pairs`).
        groups: ``P`` group names (e.g. each pair's negative type).

    Returns:
        ``{group: {"n": pairs, "total": acc, "l2l": ..., "g2l": ..., "g2g": ...}}`` in sorted group
        order; a pair is won only when strictly higher (**a tie loses**).
    """
    enabled = model_enabled_steps(model)
    names = np.asarray(list(groups), dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(set(names.tolist())):
        sel = names == g
        n = int(sel.sum())
        row: dict[str, Any] = {"n": n}
        for key in STEP_SCORE_KEYS:
            wins = np.asarray(pos[key])[sel] > np.asarray(neg[key])[sel]
            row[key] = float(wins.mean()) if enabled[key] and n else float("nan")
        out[g] = row
    return out


@torch.no_grad()
def text_pooling_by_word(
    model: torch.nn.Module,
    text: Vocabulary | TransformerTextProcessor,
    arrays: SplitArrays,
    captions: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Step 2's text pooling weights (``Explanation.txt_pool``) by word, on matching pairs.

    For each caption index in ``captions`` (default: every caption of the split) the caption is
    explained against its own image (:meth:`shan.model.SHAN.explain`); each word's weight is
    multiplied by the caption's length, so 1.0 means "the uniform share" (the pooling of an
    untrained model) and 2.0 twice that.

    Returns:
        ``{word: {"weight": mean relative weight, "n": occurrences}}``.
    """
    device = torch.device(device)
    boxes = arrays.normalized_boxes() if uses_geometry(model) else None
    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    idx = range(len(arrays.captions)) if captions is None else captions
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for c in idx:
        i = int(c) // CAPS_PER_IMAGE
        batch = text.encode_batch([arrays.captions[int(c)]], max_words)
        length = int(batch.lengths[0])
        ex = model.explain(
            torch.from_numpy(np.array(arrays.feats[i], dtype=np.float32)).to(device),
            torch.as_tensor(np.asarray(arrays.masks[i])),
            batch.tokens[0, :length],
            length,
            boxes=None if boxes is None else torch.from_numpy(boxes[i]),
        )
        for word, w in zip(batch.words[0], ex.txt_pool.tolist()):
            sums[word] = sums.get(word, 0.0) + w * length
            counts[word] = counts.get(word, 0) + 1
    return {w: {"weight": sums[w] / counts[w], "n": counts[w]} for w in sorted(sums)}


__all__ = [
    "DataError",
    "EvaluationError",
    "METRIC_KEYS",
    "RECALL_KEYS",
    "STEP_SCORE_KEYS",
    "compute_sims",
    "compute_step_sims",
    "evaluate_arrays",
    "evaluate_checkpoint",
    "evaluate_split",
    "fold5_summary",
    "format_metrics",
    "i2t",
    "i2t_ranks",
    "metrics_from_sims",
    "negative_accuracy",
    "pair_accuracy",
    "score_pairs",
    "t2i",
    "t2i_ranks",
    "text_pooling_by_word",
    "uses_geometry",
]
