"""Toy-world generation speed: images per second for a whole split written to disk.

A split is what ``python -m shan.toyworld`` writes: PNG images, ``annotations.json`` with captions,
typed negatives and distractor records, and (``--split test``, as in the default world) one PNG per
distractor scene. Also prints the per-stage cost of one scene on one process (sampling, drawing,
captions, negatives, distractors).

    python benchmarks/bench_toyworld.py                        # 400 train images, 1 and 2 workers
    python benchmarks/bench_toyworld.py --images 1000 --split test --workers 2
    python benchmarks/bench_toyworld.py --preset classic
    python benchmarks/bench_toyworld.py --pipeline --threads 2   # stage costs of the reproduce run

``--pipeline`` times the unit costs of ``scripts/reproduce_toyworld.py`` at the ``cpu`` preset's
settings on a few hundred scenes (detector training seconds per scene, extraction seconds per
image, SHAN training seconds per caption, suite seconds per test image) and prints what the preset's
time budget buys with them: detector scenes seen and SHAN epochs of its training set. The detector
is untrained (its cost does not depend on its weights); figures on a busy machine are slower.
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


def pipeline_costs(n_train: int, n_test: int, det_steps: int, workers: int) -> dict[str, float]:
    """Seconds per unit of each reproduce stage (cpu preset settings, see the module docstring)."""
    import importlib.util

    from shan.toyworld.metrics import load_toy_split
    from shan.toyworld.suite import full_report

    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_toyworld.py"
    spec = importlib.util.spec_from_file_location("reproduce_toyworld", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        args = mod.parse_args(
            [
                "--preset",
                "cpu",
                "--device",
                "cpu",
                "--out",
                str(root),
                "--train-images",
                str(n_train),
                "--dev-images",
                str(n_test),
                "--test-images",
                str(n_test),
                "--workers",
                str(workers),
                "--shan-epochs",
                "1",
                "--time-budget",
                "0",
            ]
        )
        args.reuse, args.det_seconds = False, None
        t0 = time.perf_counter()
        anns = mod.stage_generate(args, root / "data")
        n_gen = n_train + 2 * n_test
        n_gen += sum(len(r["distractors"]) for r in anns["test"]["images"])
        out["generate_s_per_image"] = (time.perf_counter() - t0) / n_gen
        args.det_epochs = 1000
        from shan.toyworld.detector_train import train_detector

        t0 = time.perf_counter()
        train_detector(
            root / "data" / "train",
            root / "det",
            epochs=1000,
            max_steps=det_steps,
            batch_size=args.det_batch,
            device="cpu",
            num_workers=min(workers, 8),
            cfg=mod.detector_config(args),
            mosaic=args.det_mosaic,
            log=lambda s: None,
            brightness=args.det_brightness,
            contrast=args.det_contrast,
        )
        out["detector_s_per_scene"] = (time.perf_counter() - t0) / (det_steps * args.det_batch)
        det = mod.ToyDetector.from_pretrained(root / "det")
        args.reused_detector = False
        pre = root / "precomp" / "toyworld_precomp"
        t0 = time.perf_counter()
        ext = mod.stage_extract(args, det, root / "data", anns, pre)
        out["extract_s_per_image"] = (time.perf_counter() - t0) / sum(
            v["n_images"] for v in ext.values()
        )
        t0 = time.perf_counter()
        best, _, _ = mod.train_shan(
            args,
            det.feature_dim,
            root / "shan",
            1,
            geometry=args.geometry,
            hard_negatives=args.hard_negatives,
        )
        out["shan_s_per_caption"] = (time.perf_counter() - t0) / (5 * n_train)
        from shan.checkpoint import load_checkpoint

        loaded = load_checkpoint(best)
        test = load_toy_split(pre, "test", anns["test"])
        dis = load_toy_split(pre, "test_distractors")
        t0 = time.perf_counter()
        full_report(loaded, test, dis, det.classes, "cpu", 50, 50)
        out["evaluate_s_per_test_image"] = (time.perf_counter() - t0) / n_test
    return out


def project(costs: dict[str, float]) -> list[str]:
    """What the cpu preset's budget buys at these costs."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_toyworld.py"
    spec = importlib.util.spec_from_file_location("reproduce_toyworld", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = mod.PRESETS["cpu"]
    n_test = p["test_images"]
    gen = costs["generate_s_per_image"] * (p["train_images"] + p["dev_images"] + 6 * n_test)
    det = p["time_budget"] * p["det_share"]
    ext = costs["extract_s_per_image"] * (p["train_images"] + p["dev_images"] + 6 * n_test)
    ev = costs["evaluate_s_per_test_image"] * n_test
    shan = p["time_budget"] - gen - det - ext - p["eval_reserve"]
    epoch = costs["shan_s_per_caption"] * 5 * p["train_images"]
    return [
        f"cpu preset ({p['train_images']} training images, budget {p['time_budget']:.0f} s): "
        f"generate {gen:.0f} s, detector {det:.0f} s = "
        f"{det / costs['detector_s_per_scene']:.0f} scenes seen, extract {ext:.0f} s, SHAN "
        f"{shan:.0f} s = {shan / epoch:.1f} epochs of {epoch:.0f} s, evaluate {ev:.0f} s "
        f"(reserve {p['eval_reserve']:.0f} s)",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--split", default="train", choices=["train", "dev", "test"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--preset", default="toyworld2")
    p.add_argument("--stage-scenes", type=int, default=100)
    p.add_argument("--pipeline", action="store_true", help="stage costs of the reproduce run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pipeline-images", type=int, default=200, help="training images")
    p.add_argument("--det-steps", type=int, default=20)
    args = p.parse_args()
    if args.pipeline:
        import torch

        torch.set_num_threads(args.threads)
        costs = pipeline_costs(
            args.pipeline_images, max(20, args.pipeline_images // 4), args.det_steps, args.threads
        )
        for k, v in costs.items():
            print(f"{k}: {v:.4f}")
        print("\n".join(project(costs)))
        return
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
        print(
            f"{args.split} split, {args.images} images, {w} worker(s): {dt:.1f} s = "
            f"{args.images / dt:.1f} images/s"
        )


if __name__ == "__main__":
    main()
