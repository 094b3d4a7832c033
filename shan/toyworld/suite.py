"""The compositional test suite: does a model prefer the truth over a minimal change of it?

Two kinds of minimal pairs, both from the toy world's truth evaluator (every negative is checked
false for its scene):

* **caption negatives** (t2i direction, one row per type of
  :data:`~shan.toyworld.negatives.NEGATIVE_TYPES`): for an image and one of its true captions, the
  caption edited in one way (colours exchanged, relation reversed, a count changed, ...). A pair is
  won when ``S(image, true caption) > S(image, negative)``;
* **distractor images** (i2t direction, one row per kind of
  :data:`~shan.toyworld.negatives.DISTRACTOR_TYPES`): the scene changed in one way (mirrored,
  bindings exchanged, an object added or removed) and drawn again. For every caption of the image
  that the change makes false, a pair is won when ``S(image, caption) > S(distractor, caption)``.

Every row is reported for the total score and for each step's own score (``l2l``, ``g2l``,
``g2g``); **ties count as failures** (a model that cannot tell the two apart has not won).
:data:`TARGET_GROUPS` gathers rows into the categories the shipped model's targets name.

One command runs the suite (and, from the same files, retrieval, grounding, the pooling sanity
check and the detector's mAP per background type) on a directory written by
``scripts/reproduce_toyworld.py``::

    python -m shan.toyworld.suite --checkpoint checkpoints/shan --data runs/toyworld

Distractor images are extracted with the checkpoint's detector the first time (split
``test_distractors`` beside the test split's features).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shan.data.precomp import CAPS_PER_IMAGE
from shan.errors import ShanError
from shan.evaluation import negative_accuracy, pair_accuracy, score_pairs, uses_geometry
from shan.toyworld.metrics import ToySplit, load_toy_split
from shan.toyworld.negatives import (
    ABSENT,
    COLOUR_SWAP,
    COUNT,
    DISTRACTOR_TYPES,
    NEGATIVE_TYPES,
    PATTERN_SWAP,
    RELATION_OPPOSITE,
    RELATION_SWAP,
    SHAPE_SWAP,
    SIZE_SWAP,
    WORD_ORDER,
)

STEPS = ("total", "l2l", "g2l", "g2g")
#: the suite's categories, as the shipped model's targets name them -> the rows they pool
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "relations": (RELATION_SWAP, RELATION_OPPOSITE),
    "counts": (COUNT,),
    "bindings": (COLOUR_SWAP, SHAPE_SWAP, SIZE_SWAP, PATTERN_SWAP),
    "word order": (WORD_ORDER,),
    "absent object": (ABSENT,),
}
#: the target for each of :data:`TARGET_GROUPS` (total score)
TARGET_ACCURACY = 0.9
DISTRACTOR_SPLIT_SUFFIX = "_distractors"
DATA_NAME = "toyworld"  # reproduce_toyworld.py's <out>/precomp/toyworld_precomp


class SuiteError(ShanError, ValueError):
    """A suite that cannot run on the files given (the message says what is missing)."""


# ----------------------------------------------------------------------------------------------
# Scoring minimal pairs
# ----------------------------------------------------------------------------------------------


def _rows(result: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every row of ``names`` in order (a row without pairs: ``n = 0`` and NaN accuracies)."""
    empty = {"n": 0, **dict.fromkeys(STEPS, math.nan)}
    return {name: dict(result.get(name, empty)) for name in names}


def _n_rows(split: ToySplit, max_images: int | None) -> int:
    return len(split.records) if max_images is None else min(max_images, len(split.records))


@torch.no_grad()
def caption_negative_rows(
    model: torch.nn.Module,
    text: Any,
    split: ToySplit,
    device: Any = "cpu",
    group: int = 16,
    max_images: int | None = None,
) -> dict[str, dict[str, Any]]:
    """One row per negative type: ``{type: {"n", "total", "l2l", "g2l", "g2g"}}`` (accuracies; NaN
    for a step the model does not use).

    Each image's true captions and their typed negatives (annotation ``negatives[c]``) are scored
    against the image by :func:`shan.evaluation.negative_accuracy`, ``group`` images per call;
    ``max_images`` keeps the first images' negatives only.
    """
    if len(split.arrays.captions) != CAPS_PER_IMAGE * len(split.records):
        raise SuiteError(
            f"{split.arrays.path}: {len(split.arrays.captions)} captions for "
            f"{len(split.records)} annotated images (expected {CAPS_PER_IMAGE} each)"
        )
    n_rows = _n_rows(split, max_images)
    negatives: list[list[dict]] = []
    for i, rec in enumerate(split.records):
        negs = rec.get("negatives") or []
        for c in range(CAPS_PER_IMAGE):
            mine = negs[c] if i < n_rows and c < len(negs) else []
            negatives.append([n for n in mine if n.get("type") in NEGATIVE_TYPES])
    res = negative_accuracy(model, text, split.arrays, negatives, device, img_group=group)
    return _rows(res["per_type"], NEGATIVE_TYPES)


def distractor_ids(records: Sequence[dict]) -> list[tuple[int, int, str]]:
    """``(record row, distractor index, image id)`` of every distractor image, in order."""
    out = []
    for i, rec in enumerate(records):
        for k, d in enumerate(rec.get("distractors") or []):
            if d.get("file"):
                out.append((i, k, f"{rec['id']}#{k}"))
    return out


@torch.no_grad()
def distractor_rows(
    model: torch.nn.Module,
    text: Any,
    split: ToySplit,
    distractors: ToySplit,
    device: Any = "cpu",
    group: int = 16,
    max_images: int | None = None,
) -> dict[str, dict[str, Any]]:
    """One row per distractor kind: does the true image beat its distractor on the captions the
    distractor falsifies? ``distractors``: the extracted distractor images (ids ``<id>#<k>``).
    Both sides are scored by :func:`shan.evaluation.score_pairs`."""
    row_of = {d: j for j, d in enumerate(distractors.arrays.ids or [])}
    true_rows: list[int] = []
    fake_rows: list[int] = []
    captions: list[str] = []
    kinds: list[str] = []
    for i, rec in enumerate(split.records[: _n_rows(split, max_images)]):
        for k, d in enumerate(rec.get("distractors") or []):
            j = row_of.get(f"{rec['id']}#{k}")
            if j is None or d.get("type") not in DISTRACTOR_TYPES:
                continue
            for c in d.get("false_captions") or []:
                true_rows.append(i)
                fake_rows.append(j)
                captions.append(rec["captions"][int(c)]["text"])
                kinds.append(d["type"])

    def scores(side: ToySplit, rows: list[int]) -> dict[str, np.ndarray]:
        a = side.arrays
        boxes = a.normalized_boxes() if uses_geometry(model) else None
        return score_pairs(model, text, a.feats, a.masks, rows, captions, boxes, device, group)

    if not kinds:
        return _rows({}, DISTRACTOR_TYPES)
    found = pair_accuracy(model, scores(split, true_rows), scores(distractors, fake_rows), kinds)
    return _rows(found, DISTRACTOR_TYPES)


def group_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:data:`TARGET_GROUPS` from per-type rows (pair-weighted accuracies)."""
    out = {}
    for name, types in TARGET_GROUPS.items():
        n = sum(rows[t]["n"] for t in types if t in rows)
        out[name] = {
            "n": n,
            **{
                s: (
                    sum(rows[t][s] * rows[t]["n"] for t in types if rows.get(t, {}).get("n")) / n
                    if n
                    else math.nan
                )
                for s in STEPS
            },
        }
    return out


def run_suite(
    model: torch.nn.Module,
    text: Any,
    split: ToySplit,
    distractors: ToySplit | None = None,
    device: Any = "cpu",
    max_images: int | None = None,
    group: int = 16,
) -> dict[str, Any]:
    """Both kinds of minimal pairs: ``{"negatives": rows, "groups": rows, "distractors": rows |
    None, "targets": {group: bool}}`` (see :func:`caption_negative_rows` / :func:`distractor_rows`).
    """
    negs = caption_negative_rows(model, text, split, device, group, max_images)
    groups = group_rows(negs)
    dis = None
    if distractors is not None:
        dis = distractor_rows(model, text, split, distractors, device, group, max_images)
    return {
        "negatives": negs,
        "groups": groups,
        "distractors": dis,
        "targets": {g: bool(r["total"] >= TARGET_ACCURACY) for g, r in groups.items() if r["n"]},
    }


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def rows_table(rows: dict[str, dict[str, Any]], first: str = "type") -> list[str]:
    """A markdown table: one line per row, columns n, total, l2l, g2l, g2g (percent)."""
    lines = [f"| {first} | pairs | total | L2L | G2L | G2G |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        cells = " | ".join(_pct(r[s]) for s in STEPS)
        lines.append(f"| {name} | {r['n']} | {cells} |")
    return lines


def suite_tables(result: dict[str, Any]) -> list[str]:
    """Markdown of a :func:`run_suite` result (caption negatives, target groups, distractors)."""
    lines = ["Caption negatives (true caption vs its negative, same image; ties fail):", ""]
    lines += rows_table(result["negatives"])
    lines += ["", f"Target categories (total ≥ {100 * TARGET_ACCURACY:.0f} %):", ""]
    lines += rows_table(result["groups"], "category")
    if result.get("distractors") is not None:
        lines += [
            "",
            "Distractor images (true image vs its changed copy, on the captions the "
            "change makes false; ties fail):",
            "",
        ]
        lines += rows_table(result["distractors"], "distractor")
    return lines


# ----------------------------------------------------------------------------------------------
# Distractor features, and the command line
# ----------------------------------------------------------------------------------------------


def extract_distractors(
    detector: Any,
    split_dir: str | Path,
    annotations: dict,
    precomp: str | Path,
    split: str = "test",
    batch_size: int = 16,
    num_loaders: int = 2,
) -> str:
    """Extract the split's distractor images into ``precomp/{split}_distractors_*`` (ids
    ``<image id>#<k>``) with :func:`shan.extract.extract_images`; returns that split name."""
    from shan.extract import extract_images

    ids = distractor_ids(annotations["images"])
    if not ids:
        raise SuiteError(
            f"split {split!r} has no distractor images (the world config draws them for "
            "distractor_image_splits only)"
        )
    recs = annotations["images"]
    paths = [Path(split_dir) / recs[i]["distractors"][k]["file"] for i, k, _ in ids]
    name = split + DISTRACTOR_SPLIT_SUFFIX
    extract_images(
        detector,
        paths,
        precomp,
        name,
        batch_size=batch_size,
        resume=False,
        ids=[x for _, _, x in ids],
        num_loaders=num_loaders,
        progress=False,
    )
    return name


def full_report(
    loaded: Any,
    split: ToySplit,
    distractors: ToySplit | None,
    classes: Sequence[str],
    device: Any = "cpu",
    grounding_images: int | None = 300,
    pooling_images: int | None = 200,
) -> dict[str, Any]:
    """Suite, retrieval per step, grounding, pooling sanity and detector mAP per background.

    The split's all-pairs scores are computed once; they give retrieval (total and each step
    alone) and ``"calibration"``: a :class:`shan.calibration.Calibration` of every step
    (:func:`shan.calibration.calibrate_scores`; save it with ``save_calibration``).
    """
    from shan.calibration import calibrate_scores, model_enabled_steps
    from shan.evaluation import metrics_from_sims
    from shan.toyworld.metrics import (
        detection_metrics_from_split,
        grounding_accuracy,
        pooling_sanity,
        step_sims,
    )

    model, text = loaded.model, loaded.text
    out: dict[str, Any] = {"n_images": split.n_images}
    out["suite"] = run_suite(model, text, split, distractors, device)
    sims = step_sims(model, text, split, device)
    out["retrieval"] = {
        k: {m: float(v) for m, v in metrics_from_sims(s).items()} for k, s in sims.items()
    }
    out["calibration"] = calibrate_scores(
        sims,
        enabled=model_enabled_steps(model),
        source={"split": split.arrays.split, "n_images": split.n_images, "toyworld": True},
    )
    out["grounding"] = grounding_accuracy(model, text, split, max_images=grounding_images)
    out["pooling"] = pooling_sanity(model, text, split, max_images=pooling_images)
    if split.regions is not None:
        out["detector"] = detection_metrics_from_split(split, classes)
    return out


def _default_detector(ckpt: Path, extra: dict) -> Path | None:
    w = (extra or {}).get("detector", {}).get("weights")
    return (ckpt / w).resolve() if w else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m shan.toyworld.suite",
        description="Compositional test suite (+ retrieval, grounding, pooling, detector mAP) of a "
        "toy-world SHAN checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="a SHAN checkpoint directory")
    p.add_argument(
        "--data",
        required=True,
        help="a reproduce_toyworld.py working directory "
        "(<data>/data/<split>/annotations.json, <data>/precomp/toyworld_precomp)",
    )
    p.add_argument("--split", default="test")
    p.add_argument(
        "--detector",
        default=None,
        help="for distractor images (default: the checkpoint's linked detector)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--suite-only", action="store_true", help="skip retrieval/grounding/pooling")
    p.add_argument("--json", default=None, help="write the full result here")
    p.add_argument(
        "--save-calibration",
        action="store_true",
        help="write calibration.json (each step's score distributions) into the checkpoint",
    )
    args = p.parse_args(argv)
    try:
        from shan.checkpoint import load_checkpoint
        from shan.device import resolve_device
        from shan.toyworld.dataset import load_annotations
        from shan.toyworld.world import SHAPES

        device = resolve_device(args.device)
        data = Path(args.data)
        ann = load_annotations(data / "data" / args.split)
        precomp = data / "precomp" / f"{DATA_NAME}_precomp"
        split = load_toy_split(precomp, args.split, ann)
        loaded = load_checkpoint(args.checkpoint, device=device)
        dname = args.split + DISTRACTOR_SPLIT_SUFFIX
        distractors = None
        if distractor_ids(ann["images"]):
            if not (precomp / f"{dname}_ims.npy").is_file():
                det_path = args.detector or _default_detector(Path(args.checkpoint), loaded.extra)
                if det_path is None:
                    raise SuiteError("no detector for the distractor images: pass --detector DIR")
                from shan.detect.toy import ToyDetector

                det = ToyDetector.from_pretrained(det_path, device=device)
                extract_distractors(det, data / "data" / args.split, ann, precomp, args.split)
            distractors = load_toy_split(precomp, dname)
        if args.suite_only:
            result: dict[str, Any] = {
                "suite": run_suite(loaded.model, loaded.text, split, distractors, device)
            }
        else:
            result = full_report(loaded, split, distractors, SHAPES, device)
            cal = result.pop("calibration")
            if args.save_calibration:
                from shan.calibration import save_calibration

                print(f"wrote {save_calibration(cal, loaded.path)}")
    except ShanError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(suite_tables(result["suite"])))
    if "retrieval" in result:
        r = result["retrieval"]["total"]
        print(
            f"\nretrieval (total): i2t R@1 {r['i2t_r1']:.1f}  t2i R@1 {r['t2i_r1']:.1f}  "
            f"rSum {r['rsum']:.1f}"
        )
        print(
            f"grounding: {100 * result['grounding']['accuracy']:.1f} %  pooling content/"
            f"function: {result['pooling']['ratio']:.2f}"
        )
    if "detector" in result:
        d = result["detector"]
        print(
            f"detector mAP@0.5 {d['map50']:.3f} (weakest background: {d.get('min_group')} "
            f"{d.get('min_group_map50', math.nan):.3f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "DISTRACTOR_SPLIT_SUFFIX",
    "STEPS",
    "TARGET_ACCURACY",
    "TARGET_GROUPS",
    "SuiteError",
    "caption_negative_rows",
    "distractor_ids",
    "distractor_rows",
    "extract_distractors",
    "full_report",
    "group_rows",
    "rows_table",
    "run_suite",
    "suite_tables",
]
