"""Toy-world measurements that need ground truth: detector mAP / colour accuracy, word grounding,
hard-negative accuracy, and retrieval with per-step (ablation-by-switch) scores.

Everything reads the SCAN-format files written by :func:`shan.extract.extract_images` (detector
boxes and features, not ground-truth boxes; read through :mod:`shan.data.precomp`, the format's one
reader) plus the toy world's ``annotations.json``; rows are matched to annotation records through
``{split}_ids.txt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from shan.data.precomp import load_split_dir, read_regions
from shan.errors import ShanError

GROUNDING_ROLES = ("shape", "colour")
_ROLE_ATTR = {"shape": "shape", "colour": "colour", "size": "size", "pattern": "pattern"}


class ToyEvalError(ShanError, ValueError):
    """Precomputed files and annotations that do not fit together."""


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_precomp_split(precomp: str | Path, split: str, annotations: dict) -> dict[str, Any]:
    """Arrays of one extracted split, with the annotation record of every row.

    Returns ``{"feats" (N,k,D), "boxes" (N,k,4), "nregions" (N,), "masks" (N,k) bool,
    "records": [annotation record per row], "regions": [labels/attributes/scores per row] | None}``.
    """
    d = Path(precomp)
    arrays = load_split_dir(d, split, require_captions=False)
    for part, have in (("boxes.npy", arrays.boxes), ("ids.txt", arrays.ids)):
        if have is None:
            raise ToyEvalError(f"missing extracted file for split {split!r} in {d}: {split}_{part}")
    feats, nreg, ids = arrays.feats, arrays.nregions, arrays.ids
    boxes = np.array(arrays.boxes)  # small: into memory (the features stay memory-mapped)
    by_id = {r["id"]: r for r in annotations["images"]}
    by_file = {Path(r["file"]).name: r for r in annotations["images"]}
    records = []
    for i in ids:
        rec = by_id.get(i) or by_file.get(i)
        if rec is None:
            raise ToyEvalError(f"image id {i!r} of {d}/{split}_ids.txt is not in the annotations")
        records.append(rec)
    regions = read_regions(d, split)
    if regions is not None and len(regions) != len(ids):
        raise ToyEvalError(
            f"{d}/{split}_regions.json describes {len(regions)} of {len(ids)} images"
        )
    masks = arrays.masks
    return {
        "feats": feats,
        "boxes": boxes,
        "nregions": nreg,
        "masks": masks,
        "records": records,
        "regions": regions,
    }


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
        records: the toy-world annotation record of each image (``objects`` with box/shape/colour).
        classes: the shape names (APs are averaged over classes with ground truth).

    Returns:
        ``{"map50", "ap": {class: AP}, "colour_acc", "colour_n", "recall50"}``. Colour accuracy is
        over ground-truth objects that some region overlaps with IoU ≥ ``iou_thresh`` (the region
        with the highest IoU); ``recall50`` is the fraction of objects with such a region.
    """
    aps: dict[str, float] = {}
    col_ok = col_n = found = total = 0
    ious = []
    for pb, rec in zip(pred_boxes, records):
        gt = torch.tensor([o["box"] for o in rec["objects"]], dtype=torch.float32).reshape(-1, 4)
        pbt = torch.as_tensor(np.asarray(pb), dtype=torch.float32).reshape(-1, 4)
        ious.append(
            box_iou(pbt, gt).numpy() if len(pbt) and len(gt) else np.zeros((len(pbt), len(gt)))
        )
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
            objs = rec_objs = records[i]["objects"]
            best, best_g = iou_thresh, -1
            for g, obj in enumerate(rec_objs):
                if obj["shape"] != c or (i, g) in taken:
                    continue
                if ious[i][r, g] >= best:
                    best, best_g = ious[i][r, g], g
            del objs
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
    }


def detection_metrics_from_precomp(data: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """:func:`detection_metrics` on the regions the extraction stored (``{split}_regions.json``)."""
    if data["regions"] is None:
        raise ToyEvalError("the extraction did not store region labels ({split}_regions.json)")
    n = data["nregions"]
    boxes = [data["boxes"][i, : n[i]] for i in range(len(n))]
    regs = data["regions"]
    return detection_metrics(
        boxes,
        [r["labels"] for r in regs],
        [r["scores"] for r in regs],
        [r["attributes"] for r in regs],
        data["records"],
        classes,
    )


# ----------------------------------------------------------------------------------------------
# SHAN on the toy world
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def step_sims(
    model: torch.nn.Module,
    text: Any,
    feats: np.ndarray,
    masks: np.ndarray,
    captions: Sequence[str],
    device: torch.device | str = "cpu",
    img_chunk: int = 128,
    txt_chunk: int = 512,
) -> dict[str, np.ndarray]:
    """All image × caption scores of each step: ``{"total", "l2l", "g2l", "g2g"}`` → ``(N, M)``.

    Each step's own matrix is the "ablation by switch" of the trained model (that step alone).
    """
    device = torch.device(device)
    model.eval()
    n, m = int(feats.shape[0]), len(captions)
    img_parts = []
    for s in range(0, n, img_chunk):
        f = torch.from_numpy(np.array(feats[s : s + img_chunk], dtype=np.float32)).to(device)
        mk = torch.from_numpy(np.asarray(masks[s : s + img_chunk])).to(device)
        img_parts.append(model.encode_images(f, mk))
    out = {k: np.zeros((n, m), dtype=np.float32) for k in ("total", "l2l", "g2l", "g2g")}
    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    for t0 in range(0, m, txt_chunk):
        batch = text.encode_batch(list(captions[t0 : t0 + txt_chunk]), max_words)
        txt = model.encode_captions(batch.tokens.to(device), batch.lengths.to(device))
        for i0, img in zip(range(0, n, img_chunk), img_parts):
            sc = model.score(img, txt, img_chunk=img_chunk, txt_chunk=128)
            for k in out:
                out[k][i0 : i0 + img_chunk, t0 : t0 + len(batch.lengths)] = (
                    getattr(sc, k).float().cpu().numpy()
                )
    return out


def retrieval_metrics(sims: np.ndarray) -> dict[str, float]:
    """R@1/5/10 both ways + rSum via :func:`shan.evaluation.metrics_from_sims`."""
    from shan.evaluation import metrics_from_sims

    return {k: float(v) for k, v in metrics_from_sims(sims).items()}


@torch.no_grad()
def hard_negative_accuracy(
    model: torch.nn.Module,
    text: Any,
    data: dict[str, Any],
    device: torch.device | str = "cpu",
    chunk: int = 128,
) -> dict[str, Any]:
    """How often S(image, true caption) > S(image, its colour-swapped hard negative).

    The true caption is the hard negative's source caption (they differ only in two colour words).
    Returns ``{"accuracy", "n", "per_step": {step: accuracy}}``.
    """
    rows = [i for i, r in enumerate(data["records"]) if r.get("hard_negative")]
    if not rows:
        return {"accuracy": float("nan"), "n": 0, "per_step": {}}
    wins: dict[str, int] = {k: 0 for k in ("total", "l2l", "g2l", "g2g")}
    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    device = torch.device(device)
    for s in range(0, len(rows), chunk):
        idx = rows[s : s + chunk]
        recs = [data["records"][i] for i in idx]
        pos = [r["captions"][r["hard_negative"]["source_caption"]]["text"] for r in recs]
        neg = [r["hard_negative"]["text"] for r in recs]
        f = torch.from_numpy(np.array(data["feats"][idx], dtype=np.float32)).to(device)
        mk = torch.from_numpy(np.asarray(data["masks"][idx])).to(device)
        img = model.encode_images(f, mk)
        batch = text.encode_batch(pos + neg, max_words)
        txt = model.encode_captions(batch.tokens.to(device), batch.lengths.to(device))
        sc = model.score(img, txt, img_chunk=chunk, txt_chunk=128)
        b = len(idx)
        ar = torch.arange(b)
        for k in wins:
            m = getattr(sc, k).float().cpu()
            wins[k] += int((m[ar, ar] > m[ar, ar + b]).sum())
    n = len(rows)
    return {"accuracy": wins["total"] / n, "n": n, "per_step": {k: v / n for k, v in wins.items()}}


@torch.no_grad()
def grounding_accuracy(
    model: torch.nn.Module,
    text: Any,
    data: dict[str, Any],
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
    rows = range(
        len(data["records"]) if max_images is None else min(max_images, len(data["records"]))
    )
    max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    hits: dict[str, int] = {r: 0 for r in roles}
    counts: dict[str, int] = {r: 0 for r in roles}
    u_hits = u_counts = 0  # unambiguous words: no other object shares the word's attribute
    skipped = 0
    for i in rows:
        rec = data["records"][i]
        k = int(data["nregions"][i])
        feats = torch.from_numpy(np.array(data["feats"][i, :k], dtype=np.float32))
        boxes = torch.from_numpy(np.asarray(data["boxes"][i, :k], dtype=np.float32))
        gt = torch.tensor([o["box"] for o in rec["objects"]], dtype=torch.float32).reshape(-1, 4)
        iou = box_iou(boxes, gt)  # (k, G)
        caps = rec["captions"]
        batch = text.encode_batch([c["text"] for c in caps], max_words)
        for c, cap in enumerate(caps):
            length = int(batch.lengths[c])
            if list(batch.words[c]) != list(cap["tokens"][:length]):
                skipped += 1  # a text processor that splits differently (e.g. word pieces)
                continue
            ex = model.explain(feats, None, batch.tokens[c, :length], length)
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


def image_captions(records: Sequence[dict]) -> list[str]:
    """The 5 captions of every record, flattened in image order (caption c → image c // 5)."""
    return [c["text"] for r in records for c in r["captions"]]
