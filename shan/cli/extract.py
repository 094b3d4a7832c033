"""``shan-extract`` / ``python -m shan.cli.extract``: detector region features → SCAN-format files.

Example::

    shan-extract --detector butd --weights weights/bua-caffe-frcn-r101_with_attributes.pth \\
        --images my_photos/ --out data/myphotos_precomp --split test --num-regions 36

The extraction, its resumable shards and the files written are described in :mod:`shan.extract`.
``--out`` is checked for writability before the detector is loaded. Under ``torchrun`` every rank
takes a strided share of the batches and rank 0 writes the result.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from shan.cli.common import Parser, positive_int, run
from shan.device import resolve_device
from shan.extract import extract_images, list_images, read_captions
from shan.files import check_writable_dir

PROG = "shan-extract"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Detector region features -> SCAN-format precomp files.")
    p.add_argument("--detector", choices=["toy", "butd"], required=True)
    p.add_argument("--weights", required=True, help="toy: detector dir; butd: weights file")
    p.add_argument("--images", required=True, help="an image directory or a list file")
    p.add_argument("--out", required=True, help="output <name>_precomp directory")
    p.add_argument("--split", required=True)
    p.add_argument("--captions", default=None, help=".txt (5 lines per image) or .json")
    p.add_argument("--captions-per-image", type=positive_int, default=5)
    p.add_argument("--num-regions", type=positive_int, default=None, help="fixed k (min = max)")
    p.add_argument("--min-regions", type=positive_int, default=None)
    p.add_argument("--max-regions", type=positive_int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--no-resume", action="store_true", help="start over, ignoring finished shards")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    lo, hi = args.min_regions, args.max_regions
    if args.num_regions is not None:
        if lo is not None or hi is not None:
            p.error("give either --num-regions or --min-regions/--max-regions, not both")
        lo = hi = args.num_regions
    if lo is not None and hi is not None and lo > hi:
        p.error(f"--min-regions {lo} is more than --max-regions {hi}")

    def work() -> int:
        from shan.detect.factory import build_extractor

        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
        check_writable_dir(args.out)  # before the detector is loaded and the images are read
        paths = list_images(args.images)
        ids = [Path(x).name for x in paths]
        caps = read_captions(args.captions, ids, args.captions_per_image) if args.captions else None
        if world > 1 and not torch.distributed.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            extractor = build_extractor(args.detector, args.weights, str(device), lo, hi)
            summary = extract_images(
                extractor,
                paths,
                args.out,
                args.split,
                args.batch_size,
                caps,
                resume=not args.no_resume,
                ids=ids,
                progress=not args.quiet,
            )
        finally:
            if world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if summary.get("n_images") is not None:
            print(
                f"{args.split}: {summary['n_images']} images, k={summary['k']}, "
                f"D={summary['feature_dim']}, {summary['n_failed']} skipped, "
                f"{summary['seconds']:.1f}s -> {args.out}"
            )
        return 0

    return run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
