"""Toy-world generation speed: images per second for a whole split written to disk.

A split is what ``python -m shan.toyworld`` writes: PNG images, ``annotations.json`` with captions,
typed negatives and distractor records, and (``--split test``, as in the default world) one PNG per
distractor scene. Also prints the per-stage cost of one scene on one process (sampling, drawing,
captions, negatives, distractors).

    python benchmarks/bench_toyworld.py                        # 400 train images, 1 and 2 workers
    python benchmarks/bench_toyworld.py --images 1000 --split test --workers 2
    python benchmarks/bench_toyworld.py --preset classic
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from shan.toyworld import WorldConfig, generate_split, image_seed, render_scene, sample_scene
from shan.toyworld.captions import make_captions
from shan.toyworld.negatives import make_distractors, typed_negatives


def stages(cfg: WorldConfig, n: int) -> dict[str, float]:
    """Milliseconds per scene for each generation stage (one process)."""
    t = dict.fromkeys(("sample", "render", "captions", "negatives", "distractors"), 0.0)
    for k in range(n):
        seed = image_seed(0, "train", k)
        t0 = time.perf_counter()
        scene = sample_scene(seed, cfg)
        t1 = time.perf_counter()
        render_scene(scene)
        t2 = time.perf_counter()
        rng = random.Random(seed + 2)
        caps = make_captions(scene, rng, cfg)
        t3 = time.perf_counter()
        for c in caps:
            typed_negatives(c, scene, rng, cfg)
        t4 = time.perf_counter()
        make_distractors(scene, caps, random.Random(seed + 3), cfg)
        t5 = time.perf_counter()
        for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            t[key] += dt
    return {k: 1000 * v / n for k, v in t.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--split", default="train", choices=["train", "dev", "test"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--preset", default="toyworld2")
    p.add_argument("--stage-scenes", type=int, default=100)
    args = p.parse_args()
    cfg = WorldConfig.preset(args.preset)
    per = stages(cfg, args.stage_scenes)
    total = sum(per.values())
    parts = ", ".join(f"{k} {v:.1f}" for k, v in per.items())
    print(f"world {cfg.name}: one scene on one process, ms: {parts} (total {total:.1f})")
    for w in args.workers:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            generate_split(d, args.split, args.images, seed=0, workers=w, config=cfg)
            dt = time.perf_counter() - t0
        print(f"{args.split} split, {args.images} images, {w} worker(s): {dt:.1f} s = "
              f"{args.images / dt:.1f} images/s")  # fmt: skip


if __name__ == "__main__":
    main()
