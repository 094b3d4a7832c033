"""``shan-eval`` / ``python -m shan.cli.evaluate``: retrieval metrics of a checkpoint on a split.

Examples::

    shan-eval --checkpoint runs/f30k/best --data-root data --name f30k --split test
    shan-eval --checkpoint runs/coco/best --data-root data --name coco --split testall --fold5 \\
        --json coco_results.json

Prints R@1/5/10, median and mean rank in both directions and rSum (:mod:`shan.evaluation`). For
COCO ``testall`` (5000 images) ``--fold5`` prints COCO 1K (mean over five folds of 1000 images;
rSum from the mean recalls) and COCO 5K (all images at once) from one scoring pass. The ``--json``
path is checked before the checkpoint is loaded and written through a temporary file, so computed
metrics are never lost to an unwritable path.

``--calibrate`` scores every step in the same pass and saves where each step's scores of matching
and non-matching pairs lie (:mod:`shan.calibration`) as ``calibration.json`` in the checkpoint
directory (a local one; the directory is checked before scoring), or in ``--calibration-dir``. The
app reads it to say how a score compares with the evaluated pairs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from shan.calibration import save_calibration
from shan.checkpoint import load_checkpoint
from shan.cli.common import Parser, positive_int, run
from shan.device import resolve_device
from shan.evaluation import evaluate_split, format_metrics
from shan.files import check_writable_dir, check_writable_file, write_text

PROG = "shan-eval"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Image-text retrieval metrics of a SHAN checkpoint on a SCAN-format split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or Hub repo id")
    p.add_argument("--data-root", required=True, help="directory holding <name>_precomp/")
    p.add_argument("--name", default="f30k", help="dataset name (f30k, coco, ...)")
    p.add_argument("--split", default="test", help="split: test, testall, dev, ...")
    p.add_argument(
        "--fold5", action="store_true", help="also report the mean over 5 folds (COCO 1K)"
    )
    p.add_argument("--json", dest="json_out", help="write all metrics to this JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--max-images", type=positive_int, default=None, help="evaluate the first N images only"
    )
    p.add_argument("--chunk", type=positive_int, default=256, help="images per encoding chunk")
    p.add_argument(
        "--score-chunks",
        type=positive_int,
        nargs=2,
        metavar=("IMAGES", "CAPTIONS"),
        help="pairs scored at once by the model (memory grows with the product)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="also save each step's score distributions (calibration.json) for the app",
    )
    p.add_argument(
        "--calibration-dir",
        default=None,
        help="where --calibrate writes calibration.json (default: the checkpoint directory)",
    )
    return p


def report(result: dict[str, Any], name: str = "") -> str:
    """The printed summary of an :func:`~shan.evaluation.evaluate_split` result."""
    n, m = result["n_images"], result["n_captions"]
    blocks = []
    if "fold5" in result:
        fs = result["fold_size"]
        for i, fold in enumerate(result["folds"]):
            blocks.append(format_metrics(fold, f"fold {i} ({fs} images)"))
        label = f"{name} 1K" if name == "coco" and fs == 1000 else "5-fold mean"
        blocks.append(format_metrics(result["fold5"], f"{label}: mean over 5 folds of {fs} images"))
    label = f"{name} 5K" if name == "coco" and n == 5000 else "all"
    blocks.append(format_metrics(result["all"], f"{label}: {n} images, {m} captions"))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        if args.json_out:
            check_writable_file(args.json_out)  # before the work, so its result is not lost
        device = resolve_device(args.device)
        loaded = load_checkpoint(args.checkpoint, device=device)
        cal_dir = None
        if args.calibrate:
            cal_dir = check_writable_dir(args.calibration_dir or loaded.path)
        result = evaluate_split(
            loaded.model,
            loaded.text,
            args.data_root,
            args.name,
            args.split,
            fold5=args.fold5,
            device=device,
            max_images=args.max_images,
            chunk=args.chunk,
            progress=not args.no_progress,
            score_chunks=tuple(args.score_chunks) if args.score_chunks else None,
            calibrate=args.calibrate,
        )
        calibration = result.pop("calibration", None)
        result.update(
            {
                "checkpoint": str(args.checkpoint),
                "name": args.name,
                "data_root": str(args.data_root),
            }
        )
        print(report(result, args.name), flush=True)
        if calibration is not None and cal_dir is not None:
            print(f"wrote {save_calibration(calibration, cal_dir)}")
        if args.json_out:
            out = write_text(args.json_out, json.dumps(result, indent=2) + "\n")
            print(f"wrote {out}")
        return 0

    return run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
