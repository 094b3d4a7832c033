"""Toy-world measurements that need ground truth: detector mAP per background type, colour accuracy,
word grounding, text-pooling sanity, and retrieval with every step's scores.

Everything reads a split extracted by :func:`shan.extract.extract_images` (detector boxes and
features, never ground-truth boxes) through :func:`shan.data.precomp.load_split_dir`, the format's
one reader, plus the toy world's ``annotations.json``; rows are matched to annotation records
through ``{split}_ids.txt``. All-pairs scoring is :func:`shan.evaluation.compute_step_sims`.

Models with region geometry (``ModelConfig.use_geometry``) get each region's box normalised by its
image size (:func:`image_inputs`, the one place that prepares a toy split's image inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from shan.data.precomp import SplitArrays, load_split_dir, read_regions
from shan.detect.toy import WHOLE_IMAGE_LABEL
from shan.errors import ShanError
from shan.evaluation import uses_geometry

GROUNDING_ROLES = ("shape", "colour")
_ROLE_ATTR = {"shape": "shape", "colour": "colour", "size": "size", "pattern": "pattern"}
#: word roles counted as content words by :func:`pooling_sanity` (the rest of the roles, the
#: article ``det`` and function words ``""``, are its function words)
CONTENT_ROLES = ("shape", "colour", "relation", "count")
FUNCTION_ROLES = ("", "det")
#: the background groupings detector metrics are reported by (annotation field -> grouping name)
BACKGROUND_GROUPINGS = ("tone", "hue", "texture")


class ToyEvalError(ShanError, ValueError):
    """Precomputed files and annotations that do not fit together."""


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass
class ToySplit:
    """One extracted toy-world split: the precomp arrays and each row's annotation record.

    ``boxes`` is read into memory (small; features stay memory-mapped); ``regions`` holds the
    detector's labels / attributes / scores per row (``{split}_regions.json``) or None.
    """

    arrays: SplitArrays
    records: list[dict]
    boxes: np.ndarray
    regions: list[dict] | None

    @property
    def n_images(self) -> int:
        return self.arrays.n_images


def load_toy_split(precomp: str | Path, split: str, annotations: dict | None = None) -> ToySplit:
    """Read ``precomp/{split}_*`` and match every row to its record in ``annotations``.

    ``annotations=None`` reads a split without records (e.g. distractor images; ``records`` is
    then empty).
    """
    d = Path(precomp)
    arrays = load_split_dir(d, split, require_captions=False)
    for part, have in (("boxes.npy", arrays.boxes), ("ids.txt", arrays.ids)):
        if have is None:
            raise ToyEvalError(f"missing extracted file for split {split!r} in {d}: {split}_{part}")
    records: list[dict] = []
    if annotations is not None:
        by_id = {r["id"]: r for r in annotations["images"]}
        by_file = {Path(r["file"]).name: r for r in annotations["images"]}
        for i in arrays.ids or []:
            rec = by_id.get(i) or by_file.get(i)
            if rec is None:
                raise ToyEvalError(f"image id {i!r} of {d}/{split}_ids.txt is not annotated")
            records.append(rec)
    regions = read_regions(d, split)
    if regions is not None and len(regions) != arrays.n_images:
        raise ToyEvalError(
            f"{d}/{split}_regions.json describes {len(regions)} of {arrays.n_images} images"
        )
    return ToySplit(arrays, records, np.array(arrays.boxes), regions)


def normalised_boxes(split: ToySplit, rows: Sequence[int] | slice) -> torch.Tensor:
    """``(n, k, 4)`` boxes of ``rows`` as fractions of their image (the geometry input)."""
    from shan.model.encoders import normalize_boxes  # with geometry models only

    if split.arrays.sizes is None:
        raise ToyEvalError(
            f"{split.arrays.path}/{split.arrays.split}_sizes.npy is missing: a model with region "
            "geometry needs each image's size (extract the split again)"
        )
    return normalize_boxes(split.boxes[rows], np.asarray(split.arrays.sizes[rows]))


def image_inputs(
    model: torch.nn.Module, split: ToySplit, rows: Sequence[int] | slice, device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``feats (n, k, D)``, ``mask (n, k)`` and — for geometry models — ``boxes (n, k, 4)``."""
    rows = list(rows) if not isinstance(rows, slice) else rows
    f = torch.from_numpy(np.array(split.arrays.feats[rows], dtype=np.float32)).to(device)
    m = torch.from_numpy(np.asarray(split.arrays.masks[rows])).to(device)
    b = normalised_boxes(split, rows).to(device) if uses_geometry(model) else None
    return f, m, b


def encode_images(model: torch.nn.Module, split: ToySplit, rows: Any, device: Any = "cpu") -> Any:
    """``model.encode_images`` of ``rows`` (boxes passed only to geometry models)."""
    f, m, b = image_inputs(model, split, rows, device)
    return model.encode_images(f, m) if b is None else model.encode_images(f, m, b)


def drop_whole_image_region(src: str | Path, dst: str | Path, split: str) -> Path:
    """Copy an extracted split without its whole-image regions (ablation of that switch).

    A detector with ``whole_image_region`` puts that region last in every image, after the object
    regions, which it does not change; so the split a detector without the switch would give is
    this one with one region fewer per image. Written through
    :func:`shan.data.precomp.write_precomp` (typed negatives copied along). Raises
    :class:`ToyEvalError` if an image's last region is not a whole-image region.
    """
    from shan.data.precomp import read_negatives, write_negatives, write_precomp

    a = load_split_dir(src, split, require_captions=False)
    regions = read_regions(src, split)
    if regions is None or any(r["labels"][-1:] != [WHOLE_IMAGE_LABEL] for r in regions):
        raise ToyEvalError(f"{src}/{split}: not every image ends with a whole-image region")
    if int(a.nregions.min()) < 2:
        raise ToyEvalError(f"{src}/{split}: an image has no region besides the whole image")
    nreg = a.nregions - 1
    feats = np.array(a.feats)
    feats[np.arange(len(nreg)), nreg] = 0.0  # the dropped region becomes padding
    trimmed = [{k: v[:-1] if isinstance(v, list) else v for k, v in r.items()} for r in regions]
    write_precomp(
        dst,
        split,
        feats,
        a.captions or None,
        boxes=a.boxes,
        nregions=nreg,
        ids=a.ids,
        sizes=a.sizes,
        regions=trimmed,
    )
    negs = read_negatives(src, split)
    if negs is not None:
        write_negatives(dst, split, negs)
    return Path(dst)


# ----------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision-recall curve (VOC, all points)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    idx = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def detection_metrics(
    pred_boxes: Sequence[np.ndarray],
    pred_labels: Sequence[Sequence[str]],
    pred_scores: Sequence[Sequence[float]],
    pred_colours: Sequence[Sequence[str]],
    records: Sequence[dict],
    classes: Sequence[str],
    iou_thresh: float = 0.5,
) -> dict[str, Any]:
    """mAP@``iou_thresh`` over shape classes (VOC all-point AP) and colour accuracy.

    Args:
        pred_boxes: per image ``(R, 4)`` xyxy pixels; pred_labels/scores/colours: per image, R each.
            Regions labelled :data:`~shan.detect.toy.WHOLE_IMAGE_LABEL` are not detections and
            are skipped.
        records: the toy-world annotation record of each image (``objects`` with box/shape/colour).
        classes: the shape names (APs are averaged over classes with ground truth).

    Returns:
        ``{"map50", "ap": {class: AP}, "colour_acc", "colour_n", "recall50", "n_images",
        "n_objects"}``. Colour accuracy is over ground-truth objects that some region overlaps with
        IoU ≥ ``iou_thresh`` (the region with the highest IoU); ``recall50`` is the fraction of
        objects with such a region.
    """
    aps: dict[str, float] = {}
    col_ok = col_n = found = total = 0
    ious, keep = [], []
    for pb, lb, rec in zip(pred_boxes, pred_labels, records):
        k = np.array([x != WHOLE_IMAGE_LABEL for x in lb], dtype=bool)
        keep.append(k)
        gt = torch.tensor([o["box"] for o in rec["objects"]], dtype=torch.float32).reshape(-1, 4)
        pbt = torch.as_tensor(np.asarray(pb), dtype=torch.float32).reshape(-1, 4)
        iou = box_iou(pbt, gt).numpy() if len(pbt) and len(gt) else np.zeros((len(pbt), len(gt)))
        iou[~k[: len(iou)]] = 0.0
        ious.append(iou)
    for i, rec in enumerate(records):
        iou = ious[i]
        for g, obj in enumerate(rec["objects"]):
            total += 1
            if iou.shape[0] == 0:
                continue
            r = int(iou[:, g].argmax())
            if iou[r, g] >= iou_thresh:
                found += 1
                col_n += 1
                col_ok += int(pred_colours[i][r] == obj["colour"])
    for c in classes:
        n_gt = sum(o["shape"] == c for rec in records for o in rec["objects"])
        if n_gt == 0:
            continue
        dets = [
            (float(pred_scores[i][r]), i, r)
            for i in range(len(records))
            for r in range(len(pred_labels[i]))
            if pred_labels[i][r] == c
        ]
        dets.sort(key=lambda x: -x[0])
        taken: set[tuple[int, int]] = set()
        tp = np.zeros(len(dets))
        for d, (_, i, r) in enumerate(dets):
            best, best_g = iou_thresh, -1
            for g, obj in enumerate(records[i]["objects"]):
                if obj["shape"] != c or (i, g) in taken:
                    continue
                if ious[i][r, g] >= best:
                    best, best_g = ious[i][r, g], g
            if best_g >= 0:
                taken.add((i, best_g))
                tp[d] = 1
        ctp = np.cumsum(tp)
        cfp = np.cumsum(1 - tp)
        recall = ctp / n_gt
        precision = ctp / np.maximum(ctp + cfp, 1e-9)
        aps[c] = _voc_ap(recall, precision) if len(dets) else 0.0
    return {
        "map50": float(np.mean(list(aps.values()))) if aps else 0.0,
        "ap": aps,
        "colour_acc": col_ok / col_n if col_n else 0.0,
        "colour_n": col_n,
        "recall50": found / total if total else 0.0,
        "n_images": len(records),
        "n_objects": total,
    }


def background_group(record: dict, grouping: str) -> str:
    """The group of an image by its background: ``tone`` (dark / mid / light), ``hue`` (grey /
    colour) or ``texture`` (plain, gradient, ...). ``""`` for a record without that field."""
    bg = record.get("background") or {}
    if grouping == "hue":
        hue = bg.get("hue", "")
        return "" if not hue else ("grey" if hue == "grey" else "colour")
    if grouping not in BACKGROUND_GROUPINGS:
        raise ToyEvalError(f"unknown background grouping {grouping!r} ({BACKGROUND_GROUPINGS})")
    return str(bg.get(grouping, ""))


def _grouped(
    records: Sequence[dict], fn: Callable[[list[int]], dict[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for grouping in BACKGROUND_GROUPINGS:
        rows: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            g = background_group(r, grouping)
            if g:
                rows.setdefault(g, []).append(i)
        out[grouping] = {g: fn(idx) for g, idx in sorted(rows.items())}
    return out


def detection_by_background(
    boxes: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    colours: Sequence[Sequence[str]],
    records: Sequence[dict],
    classes: Sequence[str],
) -> dict[str, Any]:
    """:func:`detection_metrics` on all images and on each background group.

    Returns the overall metrics plus ``"by_background": {grouping: {group: metrics}}`` (see
    :func:`background_group`) and ``"min_group_map50"`` / ``"min_group"``: the weakest group.
    """

    def sub(idx: list[int]) -> dict[str, Any]:
        pick = [boxes[i] for i in idx], [labels[i] for i in idx], [scores[i] for i in idx]
        return detection_metrics(
            *pick, [colours[i] for i in idx], [records[i] for i in idx], classes
        )

    out = detection_metrics(boxes, labels, scores, colours, records, classes)
    out["by_background"] = _grouped(records, sub)
    groups = [
        (m["map50"], f"{g}/{name}")
        for g, d in out["by_background"].items()
        for name, m in d.items()
    ]
    if groups:
        out["min_group_map50"], out["min_group"] = min(groups)
    return out


def detection_metrics_from_split(split: ToySplit, classes: Sequence[str]) -> dict[str, Any]:
    """:func:`detection_by_background` on the regions an extraction stored."""
    if split.regions is None:
        raise ToyEvalError("the extraction did not store region labels ({split}_regions.json)")
    n = split.arrays.nregions
    regs = split.regions
    return detection_by_background(
        [split.boxes[i, : n[i]] for i in range(len(n))],
        [r["labels"] for r in regs],
        [r["scores"] for r in regs],
        [r["attributes"] for r in regs],
        split.records,
        classes,
    )


# ----------------------------------------------------------------------------------------------
# SHAN on the toy world
# ----------------------------------------------------------------------------------------------


def image_captions(records: Sequence[dict]) -> list[str]:
    """The 5 captions of every record, flattened in image order (caption c → image c // 5)."""
    return [c["text"] for r in records for c in r["captions"]]


def step_sims(
    model: torch.nn.Module, text: Any, split: ToySplit, device: Any = "cpu"
) -> dict[str, np.ndarray]:
    """Every step's all-pairs scores of the split's images × captions (image-major, 5 each).

    :func:`shan.evaluation.compute_step_sims`; geometry models also get the normalised boxes.
    """
    from shan.evaluation import compute_step_sims

    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    batch = text.encode_batch(image_captions(split.records), max_words)
    arrays = split.arrays
    if uses_geometry(model):
        boxes = normalised_boxes(split, slice(None)).numpy()
        return compute_step_sims(model, arrays.feats, arrays.masks, batch, device, boxes=boxes)
    return compute_step_sims(model, arrays.feats, arrays.masks, batch, device)


def retrieval_by_step(
    model: torch.nn.Module, text: Any, split: ToySplit, device: Any = "cpu"
) -> dict[str, dict[str, float]]:
    """R@1/5/10 both ways + rSum of the total score and of each step's own score alone."""
    from shan.evaluation import metrics_from_sims

    sims = step_sims(model, text, split, device)
    return {k: {m: float(v) for m, v in metrics_from_sims(s).items()} for k, s in sims.items()}


def _explain(model: torch.nn.Module, split: ToySplit, i: int, tokens: torch.Tensor, n: int) -> Any:
    k = int(split.arrays.nregions[i])
    feats = torch.from_numpy(np.array(split.arrays.feats[i, :k], dtype=np.float32))
    if uses_geometry(model):
        boxes = normalised_boxes(split, [i])[0, :k]
        return model.explain(feats, None, tokens, n, boxes=boxes)
    return model.explain(feats, None, tokens, n)


@torch.no_grad()
def grounding_accuracy(
    model: torch.nn.Module,
    text: Any,
    split: ToySplit,
    roles: Sequence[str] = GROUNDING_ROLES,
    max_images: int | None = 300,
    iou_thresh: float = 0.5,
) -> dict[str, Any]:
    """Word grounding of step 1: for each object word, is its highest-β region on its object?

    For every caption of the first ``max_images`` images and every token whose role is in
    ``roles`` (shape nouns and colour adjectives by default) and which refers to objects, the
    region with the largest word→region weight β (SHAN step 1) must overlap one of the word's
    objects with IoU ≥ ``iou_thresh`` (detector boxes vs ground truth).

    A colour word in a scene with two red objects can only be grounded right by binding it to its
    noun (context); ``unambiguous`` is the accuracy over words whose attribute value belongs to
    exactly the word's objects (bag-of-words grounding suffices there).

    Returns ``{"accuracy", "n", "per_role": {role: accuracy}, "unambiguous", "unambiguous_n",
    "skipped_captions"}``.
    """
    n_rows = len(split.records) if max_images is None else min(max_images, len(split.records))
    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    hits: dict[str, int] = {r: 0 for r in roles}
    counts: dict[str, int] = {r: 0 for r in roles}
    u_hits = u_counts = 0  # unambiguous words: no other object shares the word's attribute
    skipped = 0
    for i in range(n_rows):
        rec = split.records[i]
        k = int(split.arrays.nregions[i])
        boxes = torch.from_numpy(np.asarray(split.boxes[i, :k], dtype=np.float32))
        gt = torch.tensor([o["box"] for o in rec["objects"]], dtype=torch.float32).reshape(-1, 4)
        iou = box_iou(boxes, gt)  # (k, G)
        caps = rec["captions"]
        batch = text.encode_batch([c["text"] for c in caps], max_words)
        for c, cap in enumerate(caps):
            length = int(batch.lengths[c])
            if list(batch.words[c]) != list(cap["tokens"][:length]):
                skipped += 1  # a text processor that splits differently (e.g. word pieces)
                continue
            ex = _explain(model, split, i, batch.tokens[c, :length], length)
            best = ex.beta[:k].argmax(0)  # (n,) region with the largest β per word
            for j in range(length):
                role, objs = cap["token_roles"][j], cap["token_objects"][j]
                if role not in hits or not objs:
                    continue
                hit = int(bool((iou[int(best[j]), objs] >= iou_thresh).any()))
                counts[role] += 1
                hits[role] += hit
                attr = _ROLE_ATTR.get(role)
                if attr is not None:
                    value = rec["objects"][objs[0]][attr]
                    sharing = [g for g, o in enumerate(rec["objects"]) if o[attr] == value]
                    if sorted(sharing) == sorted(objs):
                        u_counts += 1
                        u_hits += hit
    n = sum(counts.values())
    return {
        "accuracy": sum(hits.values()) / n if n else float("nan"),
        "n": n,
        "per_role": {r: hits[r] / counts[r] if counts[r] else float("nan") for r in roles},
        "unambiguous": u_hits / u_counts if u_counts else float("nan"),
        "unambiguous_n": u_counts,
        "skipped_captions": skipped,
    }


@torch.no_grad()
def pooling_sanity(
    model: torch.nn.Module, text: Any, split: ToySplit, max_images: int | None = 200
) -> dict[str, Any]:
    """Step 2's text pooling weights by word role: do content words outweigh function words?

    For every caption of the first ``max_images`` images (with its true image), the pooling weight
    of each word (``Explanation.txt_pool``, summing to 1 over the caption) is multiplied by the
    caption's length, so 1.0 means "an average word"; the mean is taken per role.

    Returns ``{"content", "function", "ratio" (content / function), "by_role": {role: mean},
    "n_captions"}``; content words are :data:`CONTENT_ROLES` (colours, shapes, relations, numbers),
    function words :data:`FUNCTION_ROLES` (articles and words that refer to nothing). A model
    without step 2 has no pooling: ``ratio`` is NaN.
    """
    n_rows = len(split.records) if max_images is None else min(max_images, len(split.records))
    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    n_caps = 0
    for i in range(n_rows):
        caps = split.records[i]["captions"]
        batch = text.encode_batch([c["text"] for c in caps], max_words)
        for c, cap in enumerate(caps):
            length = int(batch.lengths[c])
            if list(batch.words[c]) != list(cap["tokens"][:length]):
                continue
            pool = _explain(model, split, i, batch.tokens[c, :length], length).txt_pool
            if pool.numel() < length or not bool(torch.isfinite(pool[:length]).all()):
                continue
            w = pool[:length].float() * length
            n_caps += 1
            for j in range(length):
                role = cap["token_roles"][j]
                sums[role] = sums.get(role, 0.0) + float(w[j])
                counts[role] = counts.get(role, 0) + 1

    def mean(roles: Sequence[str]) -> float:
        n = sum(counts.get(r, 0) for r in roles)
        return sum(sums.get(r, 0.0) for r in roles) / n if n else float("nan")

    content, function = mean(CONTENT_ROLES), mean(FUNCTION_ROLES)
    ratio = content / function if function and np.isfinite(function) else float("nan")
    if not getattr(getattr(model, "cfg", None), "use_g2l", True):
        ratio = float("nan")
    return {
        "content": content,
        "function": function,
        "ratio": ratio,
        "by_role": {r: sums[r] / counts[r] for r in sorted(sums)},
        "n_captions": n_caps,
    }


__all__ = [
    "BACKGROUND_GROUPINGS",
    "CONTENT_ROLES",
    "FUNCTION_ROLES",
    "GROUNDING_ROLES",
    "ToyEvalError",
    "ToySplit",
    "background_group",
    "detection_by_background",
    "detection_metrics",
    "detection_metrics_from_split",
    "drop_whole_image_region",
    "encode_images",
    "grounding_accuracy",
    "image_captions",
    "image_inputs",
    "load_toy_split",
    "normalised_boxes",
    "pooling_sanity",
    "retrieval_by_step",
    "step_sims",
    "uses_geometry",
]
