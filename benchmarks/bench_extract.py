"""Time Bottom-Up-Attention region extraction per image at the real input size.

Random weights with the full ResNet-101 shapes cost exactly what the public weights cost, so no
download is needed. Images are 1000 x 600 (the size every photo is resized to), the recipe is the
public features' one (300 proposals through res5, per-class NMS over 1600 classes).

    python benchmarks/bench_extract.py                      # CPU, 1 warm-up + 3 timed images
    python benchmarks/bench_extract.py --device cuda --images 10 --batch 4
    python benchmarks/bench_extract.py --convention detectron2   # the .pkl file's RPN boxes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from shan.detect.butd import ButdExtractor, ButdNet
from shan.detect.butd_weights import ButdArch, module_name, random_weights
from shan.detect.caffe_ops import CONVENTIONS, default_cell_anchors


def build(device: str, res4_blocks: int, convention: str = "caffe") -> ButdExtractor:
    arch = ButdArch(res4_blocks=res4_blocks)
    with torch.device("meta"):
        net = ButdNet(arch, convention)
    state = {module_name(k): v for k, v in random_weights(arch).items()}
    state["cell_anchors"] = default_cell_anchors(convention)
    net.load_state_dict(state, strict=True, assign=True)
    return ButdExtractor(net, device, min_regions=10, max_regions=100)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=3, help="timed images (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1, help="images per extract() call")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--res4-blocks", type=int, default=23)
    ap.add_argument("--convention", choices=CONVENTIONS, default="caffe",
                    help="RPN anchors and boxes: caffe (.pth) or detectron2 (.pkl)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ex = build(args.device, args.res4_blocks, args.convention)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (600, 1000, 3), dtype=np.uint8))
    batch = [img] * args.batch
    for _ in range(args.warmup):
        ex.extract(batch)
    _sync(args.device)
    per_image = []
    n_calls = max(1, args.images // args.batch)
    for _ in range(n_calls):
        t = time.perf_counter()
        out = ex.extract(batch)
        _sync(args.device)
        per_image.append((time.perf_counter() - t) / len(batch))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"device={args.device} ({name}) threads={torch.get_num_threads()} batch={args.batch} "
        f"input=1000x600 res4_blocks={args.res4_blocks} convention={args.convention} "
        f"regions/image={len(out[0])}"
    )
    print(
        f"seconds/image: median {statistics.median(per_image):.3f}  "
        f"min {min(per_image):.3f}  max {max(per_image):.3f}  (n={len(per_image)} calls)"
    )


if __name__ == "__main__":
    main()
