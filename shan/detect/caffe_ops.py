"""Box conventions of the two Bottom-Up-Attention ports, written out where torchvision's differ.

torchvision's ``AnchorGenerator`` rounds its anchors and orders them ratio-major, and its
``BoxCoder`` has no "+1" variant, so the few pieces are written out here; NMS itself is
``torchvision.ops.nms``, applied to boxes shifted so that its areas match Caffe's "+1" areas where
that convention applies.

Two conventions (``convention=`` argument of the RPN-stage functions):

``"caffe"`` (py-faster-rcnn / peteanderson80 bottom-up-attention / MILVLG's ``bua/caffe``; the
MILVLG ``.pth`` weights):

- a box ``x1, y1, x2, y2`` covers pixels ``x1..x2`` inclusive: width ``x2 - x1 + 1``;
- anchors: :func:`generate_anchors` (ratio-major: for each ratio, all scales), stride 16, offset 0;
- decoding: centre ``x1 + 0.5 w``, new box ``ctr ± 0.5 w'`` (no ``- 1``), ``dw``/``dh`` clamped
  at ``log(1000 / 16)``;
- clipping to ``[0, W - 1] x [0, H - 1]``; proposals narrower/lower than ``min_size`` dropped;
- NMS: intersection and areas with "+1", a box is suppressed when IoU > threshold.

``"detectron2"`` (detectron2's ``DefaultAnchorGenerator`` / ``Box2BoxTransform`` / ``Boxes``, used
by the airsplay port whose ``.pkl`` weights this project also reads):

- continuous boxes: width ``x2 - x1``;
- anchors: :func:`detectron2_cell_anchors` (size-major: for each size, all aspect ratios; centred on
  0, not rounded), stride 16, offset 0.0 (the port's config: sizes 64, 128, 256, 512);
- decoding: as above but with width ``x2 - x1``; same clamp ``log(1000 / 16)``, weights 1;
- clipping to ``[0, W] x [0, H]``; the size filter uses the "+0" width;
- NMS: plain areas (``torchvision.ops.nms``), suppressed when IoU > threshold.

The per-class NMS that picks the regions (:func:`class_nms_max_conf`) is the Caffe extraction
script's for both weight files: "+1" areas, on boxes in original-image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou, nms

CONVENTIONS = ("caffe", "detectron2")
#: detectron2 ``ANCHOR_GENERATOR`` of the airsplay port's VG configs (``SIZES``
#: ``[[64, 128, 256, 512]]`` with the default ``ASPECT_RATIOS [[0.5, 1.0, 2.0]]``, ``OFFSET 0.0``).
DETECTRON2_ANCHOR_SIZES = (64.0, 128.0, 256.0, 512.0)
DETECTRON2_ASPECT_RATIOS = (0.5, 1.0, 2.0)

SCALE_CLAMP = math.log(1000.0 / 16)


def generate_anchors(
    base_size: int = 16,
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    scales: Sequence[float] = (4, 8, 16, 32),
) -> torch.Tensor:
    """Caffe's ``generate_anchors``: ``(len(ratios) * len(scales), 4)`` float32, ratio-major.

    Starts from the box ``[0, 0, base_size - 1, base_size - 1]``; for each aspect ratio (h / w)
    the area is kept and the side lengths rounded (numpy's round-half-to-even), then each such box
    is scaled by every ``scale`` around the same centre.
    """
    base = np.array([0.0, 0.0, base_size - 1.0, base_size - 1.0])
    w, h, cx, cy = _whctrs(base)
    size = w * h
    out = []
    for ratio in ratios:
        ws = np.round(np.sqrt(size / ratio))
        hs = np.round(ws * ratio)
        for scale in scales:
            out.append(_mkanchor(ws * scale, hs * scale, cx, cy))
    return torch.tensor(np.array(out), dtype=torch.float32)


def _whctrs(box: np.ndarray) -> tuple[float, float, float, float]:
    w = box[2] - box[0] + 1
    h = box[3] - box[1] + 1
    return w, h, box[0] + 0.5 * (w - 1), box[1] + 0.5 * (h - 1)


def _mkanchor(w: float, h: float, cx: float, cy: float) -> list[float]:
    return [cx - 0.5 * (w - 1), cy - 0.5 * (h - 1), cx + 0.5 * (w - 1), cy + 0.5 * (h - 1)]


def detectron2_cell_anchors(
    sizes: Sequence[float] = DETECTRON2_ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = DETECTRON2_ASPECT_RATIOS,
) -> torch.Tensor:
    """detectron2's ``DefaultAnchorGenerator`` cell anchors: ``(len(sizes) * len(ratios), 4)``.

    Size-major (for each size, every aspect ratio h / w); each anchor keeps the area ``size ** 2``,
    ``w = sqrt(size ** 2 / ratio)``, ``h = ratio * w``, centred on ``(0, 0)`` with no rounding
    (computed in float64, stored as float32, as detectron2 does).
    """
    out = []
    for size in sizes:
        for ratio in aspect_ratios:
            w = math.sqrt(float(size) ** 2 / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out, dtype=torch.float64).float()


def check_convention(convention: str) -> str:
    """``convention`` if it is one of :data:`CONVENTIONS`, else ``ValueError``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown box convention {convention!r}; expected one of {CONVENTIONS}")
    return convention


def default_cell_anchors(convention: str) -> torch.Tensor:
    """The 12 cell anchors of a convention's BUTD weights: Caffe's or the detectron2 port's."""
    if check_convention(convention) == "caffe":
        return generate_anchors()
    return detectron2_cell_anchors()


def _extent(convention: str) -> float:
    """What a box's width adds to ``x2 - x1``: 1 in Caffe's pixel-inclusive boxes, else 0."""
    return 1.0 if check_convention(convention) == "caffe" else 0.0


def shift_anchors(
    cell_anchors: torch.Tensor, height: int, width: int, stride: int = 16
) -> torch.Tensor:
    """All anchors of a ``height x width`` feature map: ``(height * width * A, 4)``.

    Order is location-major (row, column), then the ``A`` cell anchors, which matches the
    ``(N, A, H, W) -> (N, H, W, A)`` flattening of the RPN outputs.
    """
    dev, dt = cell_anchors.device, cell_anchors.dtype
    sy = torch.arange(height, device=dev, dtype=dt) * stride
    sx = torch.arange(width, device=dev, dtype=dt) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (shifts + cell_anchors.reshape(1, -1, 4)).reshape(-1, 4)


def decode_boxes(
    boxes: torch.Tensor,
    deltas: torch.Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = SCALE_CLAMP,
    convention: str = "caffe",
) -> torch.Tensor:
    """Apply ``(dx, dy, dw, dh)`` deltas; widths are ``x2 - x1 + 1`` ("caffe") or ``x2 - x1``
    ("detectron2"), the rest is the same in both.

    Args:
        boxes: ``(N, 4)`` reference boxes (anchors or proposals).
        deltas: ``(N, 4 * K)`` one or ``K`` class-specific transforms per box.
    Returns:
        ``(N, 4 * K)`` decoded boxes (not clipped).
    """
    one = _extent(convention)
    boxes = boxes.to(deltas.dtype)
    widths = (boxes[:, 2] - boxes[:, 0] + one)[:, None]
    heights = (boxes[:, 3] - boxes[:, 1] + one)[:, None]
    ctr_x = boxes[:, 0:1] + 0.5 * widths
    ctr_y = boxes[:, 1:2] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=scale_clamp)
    dh = (deltas[:, 3::4] / wh).clamp(max=scale_clamp)
    pcx = dx * widths + ctr_x
    pcy = dy * heights + ctr_y
    pw = torch.exp(dw) * widths
    ph = torch.exp(dh) * heights
    out = torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=-1)
    return out.reshape(deltas.shape)


def clip_boxes(
    boxes: torch.Tensor, height: int, width: int, convention: str = "caffe"
) -> torch.Tensor:
    """Clip ``(..., 4)`` boxes to ``[0, width - 1] x [0, height - 1]`` (Caffe's pixel grid) or
    ``[0, width] x [0, height]`` (detectron2's continuous boxes)."""
    one = _extent(convention)
    x = boxes[..., 0::2].clamp(0, width - one)
    y = boxes[..., 1::2].clamp(0, height - one)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def min_size_mask(boxes: torch.Tensor, min_size: float, convention: str = "caffe") -> torch.Tensor:
    """``(N,)`` bool: boxes whose width and height (with the convention's "+1" or not) are both
    ``>= min_size``."""
    one = _extent(convention)
    ws = boxes[:, 2] - boxes[:, 0] + one
    hs = boxes[:, 3] - boxes[:, 1] + one
    return (ws >= min_size) & (hs >= min_size)


def _plus1(boxes: torch.Tensor) -> torch.Tensor:
    """Shift ``x2, y2`` by one so the "+0" torchvision ops see Caffe's "+1" extents."""
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def box_iou_plus1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` IoU of ``(N, 4)`` and ``(M, 4)`` boxes with Caffe's "+1" areas."""
    return box_iou(_plus1(a), _plus1(b))


def nms_plus1(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms`` with "+1" areas: kept indices, by decreasing score."""
    return nms(_plus1(boxes.float()), scores.float(), iou_threshold)


def nms_boxes(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, convention: str = "caffe"
) -> torch.Tensor:
    """NMS with the convention's areas ("+1" for "caffe"): kept indices, by decreasing score."""
    if _extent(convention):
        return nms_plus1(boxes, scores, iou_threshold)
    return nms(boxes.float(), scores.float(), iou_threshold)


def rpn_proposals(
    anchors: torch.Tensor,
    fg_scores: torch.Tensor,
    deltas: torch.Tensor,
    height: int,
    width: int,
    min_size: float,
    pre_nms_topk: int = 6000,
    post_nms_topk: int = 300,
    nms_thresh: float = 0.7,
    convention: str = "caffe",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's proposal layer for one image (in resized-image pixels).

    Decode -> clip -> drop boxes under ``min_size`` (already multiplied by the image scale) ->
    top ``pre_nms_topk`` by foreground probability -> NMS ``nms_thresh`` -> first
    ``post_nms_topk``. The steps and their numbers are the Caffe recipe's for both conventions;
    ``convention`` (that of the anchors' origin) sets the box arithmetic of every step.

    Args:
        anchors: ``(N, 4)``; fg_scores: ``(N,)``; deltas: ``(N, 4)``.
    Returns:
        ``boxes (P, 4)``, ``scores (P,)`` with ``P <= post_nms_topk``, by decreasing score.
    """
    decoded = decode_boxes(anchors, deltas, convention=convention)
    boxes = clip_boxes(decoded, height, width, convention)
    keep = min_size_mask(boxes, min_size, convention)
    boxes, scores = boxes[keep], fg_scores[keep]
    k = min(pre_nms_topk, scores.numel())
    scores, order = scores.topk(k, sorted=True)
    boxes = boxes[order]
    keep = nms_boxes(boxes, scores, nms_thresh, convention)[:post_nms_topk]
    return boxes[keep], scores[keep]


def class_nms_max_conf(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.3,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-class NMS over shared boxes, then each box's best surviving class score ("max_conf").

    Equivalent to ``for c: keep = nms(boxes, scores[:, c]); max_conf[keep] = max(max_conf[keep],
    scores[keep, c])`` (the BUTD ``generate_tsv.py`` loop), but all classes (and images) advance
    together through one greedy pass, which is one loop of ``R`` small steps instead of ``C``
    NMS calls.

    Args:
        boxes: ``(B, R, 4)`` (or ``(R, 4)``) the proposals, "+1" convention, in original-image
            pixels as in the Caffe script (``rois / im_scale``): with "+1" areas the IoU depends
            on the frame, so NMS on resized-image boxes would flip borderline decisions.
        scores: ``(B, R, C)`` (or ``(R, C)``) foreground class probabilities (background dropped).
        iou_threshold: a box is suppressed by a kept, higher-scoring box with IoU above this.
        valid: ``(B, R)`` bool, ``False`` for padding rows (never kept, never suppress).
    Returns:
        ``(B, R)`` (or ``(R,)``) max_conf; 0 for padding rows.
    """
    squeeze = boxes.dim() == 2
    if squeeze:
        boxes, scores = boxes[None], scores[None]
        valid = None if valid is None else valid[None]
    bsz, r, c = scores.shape
    if valid is None:
        valid = torch.ones(bsz, r, dtype=torch.bool, device=scores.device)
    if r == 0:
        out = scores.new_zeros(bsz, 0)
        return out[0] if squeeze else out
    p = _plus1(boxes.float())
    over = torch.stack([box_iou(p[i], p[i]) for i in range(bsz)]) > iou_threshold  # (B, R, R)
    over &= valid[:, :, None] & valid[:, None, :]
    s = scores.float().masked_fill(~valid[:, :, None], -1.0).transpose(1, 2)  # (B, C, R)
    order = s.argsort(dim=2, descending=True, stable=True)  # (B, C, R)
    rank = torch.empty_like(order)
    ar = torch.arange(r, device=s.device).expand(bsz, c, r)
    rank.scatter_(2, order, ar)
    suppressed = torch.zeros(bsz, c, r, dtype=torch.bool, device=s.device)
    flat_over = over.reshape(bsz, r, r)
    for i in range(r):
        idx = order[:, :, i]  # (B, C): the i-th best box of every class
        alive = ~suppressed.gather(2, idx[:, :, None])  # (B, C, 1)
        rows = torch.gather(flat_over, 1, idx[:, :, None].expand(bsz, c, r))  # (B, C, R)
        suppressed |= alive & rows & (rank > i)
    kept = (~suppressed) & valid[:, None, :]
    max_conf = torch.where(kept, s, torch.zeros_like(s)).amax(dim=1).clamp(min=0)  # (B, R)
    return max_conf[0] if squeeze else max_conf


def select_boxes(
    max_conf: torch.Tensor, conf_thresh: float = 0.2, min_boxes: int = 10, max_boxes: int = 100
) -> torch.Tensor:
    """Which proposals become regions (BUTD ``generate_tsv.py``).

    Keep ``max_conf >= conf_thresh`` (in proposal order); if fewer than ``min_boxes`` pass, take the
    top ``min_boxes`` by max_conf; if more than ``max_boxes``, the top ``max_boxes`` (both in
    decreasing max_conf). ``min_boxes == max_boxes == 36`` gives the fixed "k36" count. Fewer
    proposals than ``min_boxes`` return all of them.

    Args:
        max_conf: ``(R,)``.
    Returns:
        ``(K,)`` long indices into the proposals.
    """
    if min_boxes > max_boxes:
        raise ValueError(f"min_boxes ({min_boxes}) must be <= max_boxes ({max_boxes})")
    keep = torch.nonzero(max_conf >= conf_thresh).flatten()
    if keep.numel() < min_boxes or keep.numel() > max_boxes:
        n = min_boxes if keep.numel() < min_boxes else max_boxes
        order = torch.argsort(max_conf, descending=True, stable=True)
        keep = order[:n]
    return keep
