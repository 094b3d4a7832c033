"""Measure the demo: one Match request (detector + SHAN + every picture), the other tabs'
requests (Compare, minimal pairs, Search) and app start-up time.

    python benchmarks/bench_app.py [--checkpoint checkpoints/shan] [--repeats 7] [--no-startup]

Uses the shipped checkpoint when it exists; otherwise a randomly initialised model of the paper's
size (d = 1024) with a randomly initialised toy detector (timings do not depend on the weights).
Prints the median of ``--repeats`` requests after 2 warm-up requests (wall and CPU time, and the
load average: others share the CPU), a per-stage breakdown, and the seconds from ``python app.py``
starting to the server answering HTTP.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAPTIONS = [
    "a red circle left of a blue square",
    "a green triangle above a yellow circle",
    "a blue square below a red circle",
    "two yellow triangles",
    "a red square next to a green circle",
]


def _random_checkpoint(root: Path) -> Path:
    """A paper-sized random SHAN (d = 1024, GRU) + random toy detector, laid out as shipped."""
    import torch

    from shan.checkpoint import save_checkpoint
    from shan.config import ModelConfig
    from shan.data.vocab import Vocabulary
    from shan.detect.toy import ToyDetector, ToyDetectorConfig
    from shan.model.shan import SHAN

    torch.manual_seed(0)
    det_cfg = ToyDetectorConfig(
        classes=["circle", "square", "triangle"],
        attributes=["red", "green", "blue", "yellow"],
    )
    ToyDetector(det_cfg).save_pretrained(root / "detector")
    vocab = Vocabulary.build(CAPTIONS)
    cfg = ModelConfig(img_dim=det_cfg.feature_dim, vocab_size=len(vocab))
    extra = {"detector": {"kind": "toy", "weights": "../detector"}}
    return save_checkpoint(root / "shan", SHAN(cfg), vocab, extra=extra)


def _image(path: Path | None):
    from PIL import Image, ImageDraw

    if path is not None:
        return str(path)
    img = Image.new("RGB", (256, 256), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((20, 30, 90, 100), fill=(220, 40, 40))
    d.rectangle((140, 40, 210, 110), fill=(40, 80, 220))
    d.polygon([(60, 230), (100, 160), (140, 230)], fill=(40, 180, 60))
    return img


def bench_request(checkpoint: Path, repeats: int, device: str = "auto") -> dict[str, float]:
    from demo.pipeline import DemoPipeline, load_examples
    from demo.views import match_views

    pipe = DemoPipeline.from_checkpoint(str(checkpoint), device=device)
    examples = load_examples(REPO / "assets" / "examples.json")
    image = _image(Path(examples[0].image) if examples else None)
    totals, cpu, stages = [], [], {"detect": [], "score": [], "explain": [], "render": []}
    for i in range(repeats + 2):
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = pipe.match(image, CAPTIONS)
        t1 = time.perf_counter()
        match_views(result)
        t2 = time.perf_counter()
        if i >= 2:  # warm-up done
            totals.append(t2 - t0)
            cpu.append(time.process_time() - c0)
            for key in ("detect", "score", "explain"):
                stages[key].append(result.timings[key])
            stages["render"].append(t2 - t1)
    out = {"request_median_s": statistics.median(totals), "cpu_median_s": statistics.median(cpu)}
    out.update({f"{k}_median_s": statistics.median(v) for k, v in stages.items()})
    out["device"] = str(pipe.device)
    return out


def bench_tabs(checkpoint: Path, repeats: int, device: str = "auto") -> dict[str, float]:
    """Median seconds of the other tabs' requests, pictures included: Compare (1 image, a caption
    and its hard negative), minimal pairs (a caption and its perturbations) and Search (3 images,
    the best one explained)."""
    from demo import views
    from demo.pipeline import DemoPipeline, load_examples

    pipe = DemoPipeline.from_checkpoint(str(checkpoint), device=device)
    examples = load_examples(REPO / "assets" / "examples.json")
    image = _image(Path(examples[0].image) if examples else None)
    images = [_image(Path(ex.image)) for ex in examples[:3]] or [image] * 3
    jobs = {
        "compare": lambda: views.compare_views(pipe.compare(image, CAPTIONS[0], CAPTIONS[2])),
        "minimal_pairs": lambda: views.pairs_views(pipe.minimal_pairs(image, CAPTIONS[0])),
        "search_3_images": lambda: views.search_views(pipe.search(images, CAPTIONS[0])),
    }
    out = {}
    for name, job in jobs.items():
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            job()
            if i:
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def compare_with_cpu(checkpoint: Path, device: str) -> float:
    """Largest |score difference| between ``device`` and the CPU on one match + one search."""
    import numpy as np

    from demo.pipeline import DemoPipeline

    pipes = [DemoPipeline.from_checkpoint(str(checkpoint), device=d) for d in (device, "cpu")]
    image = _image(None)
    diffs = []
    results = [p.match(image, CAPTIONS, explain_all=True) for p in pipes]
    diffs.append(np.abs(results[0].scores - results[1].scores).max())
    for a, b in zip(results[0].explanations, results[1].explanations):
        diffs.append(np.abs(a.beta - b.beta).max())
        diffs.append(np.abs(a.delta - b.delta).max())
    searches = [p.search([image, image.rotate(90)], CAPTIONS[0]) for p in pipes]
    diffs.append(np.abs(searches[0].scores - searches[1].scores).max())
    return float(max(diffs))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_startup(checkpoint: Path, timeout: float = 120.0) -> float:
    """Seconds from starting ``python app.py`` to the page answering HTTP 200."""
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--checkpoint", str(checkpoint)]
        + ["--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("app.py did not answer in time")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "shan"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-startup", action="store_true")
    p.add_argument("--no-tabs", action="store_true", help="only the Match request (and start-up)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="as app.py: 0 = cores / concurrency")
    p.add_argument(
        "--compare-cpu", action="store_true", help="also check scores/attention equal the CPU's"
    )
    args = p.parse_args()
    ckpt = Path(args.checkpoint)
    import torch

    from demo.pipeline import cpu_threads
    from demo.ui import CONCURRENCY_LIMIT

    threads = args.threads if args.threads > 0 else cpu_threads(CONCURRENCY_LIMIT)
    torch.set_num_threads(threads)
    print(f"torch CPU threads: {threads} (as app.py sets them)")
    with tempfile.TemporaryDirectory() as tmp:
        label = "shipped checkpoint"
        if not (ckpt / "config.json").is_file():
            ckpt = _random_checkpoint(Path(tmp))
            label = "random paper-sized SHAN (d=1024) + random toy detector"
        print(f"model: {label} ({ckpt})")
        res = bench_request(ckpt, args.repeats, args.device)
        print(
            f"match request, 1 image + 5 captions, all pictures ({res['device']}): "
            f"median {res['request_median_s']:.3f} s over {args.repeats} (target <= 1.5 s); "
            f"CPU time {res['cpu_median_s']:.3f} s, load average {os.getloadavg()[0]:.1f}"
        )
        for key in ("detect", "score", "explain", "render"):
            print(f"  {key:8s} {res[f'{key}_median_s']:.3f} s")
        if not args.no_tabs:
            for name, sec in bench_tabs(ckpt, max(3, args.repeats // 2), args.device).items():
                print(f"{name} request, pictures included: median {sec:.3f} s")
        if args.compare_cpu:
            diff = compare_with_cpu(ckpt, args.device)
            print(f"{args.device} vs cpu: largest |difference| in scores/attention {diff:.2e}")
        if not args.no_startup:
            s = bench_startup(ckpt)
            print(f"start-up: python app.py -> serving HTTP in {s:.1f} s (target <= 20 s)")


if __name__ == "__main__":
    main()
