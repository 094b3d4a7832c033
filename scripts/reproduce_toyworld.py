#!/usr/bin/env python
"""Reproduce the shipped toy-world models with ONE command.

Stages (each timed): generate the toy world → train the toy Faster R-CNN from scratch → extract
region features of train/dev/test with that detector (not ground-truth boxes) → train SHAN →
evaluate retrieval on test (R@1/5/10, rSum; 1000 images × 5 captions in the full run) →
ablations → detector mAP@0.5 and colour accuracy → word grounding → hard-negative accuracy →
write ``checkpoints/shan``, ``checkpoints/detector``, ``assets/`` examples,
``checkpoints/metrics.json`` and the model card ``checkpoints/README.md``.

Full run on a GPU (the shipped models: one H200, 16 CPU cores, 10000/1000/1000 images; 435 s)::

    python scripts/reproduce_toyworld.py --device cuda --out /tmp/tw  # budget 505 s, det share 0.5

CPU-only run (a 2-core machine; 4000/1000/1000 images, budgeted to finish within 2 hours)::

    python scripts/reproduce_toyworld.py --device cpu --out /tmp/tw_cpu --ckpt-dir /tmp/tw_cpu/ck \
        --assets-dir /tmp/tw_cpu/assets

The sizes and budgets come from a preset chosen by the device (``gpu`` for cuda, ``cpu``, or
``quick``); every flag overrides its preset value.

The budget is shared out at run time: the detector trains for ``--det-share`` of it (its cosine
schedule follows wall-clock progress), SHAN's first epoch is timed and training resumes for as
many epochs as fit before ``--eval-reserve`` seconds remain (lr decay at 2/3 of them).

Smoke test (tiny sizes, CPU, a couple of minutes; writes only under ``--out``)::

    python scripts/reproduce_toyworld.py --quick --device cpu --out /tmp/toy_quick

Ablations: ``--ablations switch`` (default) scores the test set with each step of the trained
full model alone (its own step score); ``--ablations train`` additionally trains one model per
single step (L2L only / G2L only / G2G only) for ``--ablation-epochs`` and evaluates it — the
honest comparison, at the cost of three more trainings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shan import toyworld  # noqa: E402
from shan.config import DataConfig, ModelConfig, TrainConfig, to_dict  # noqa: E402
from shan.detect.base import stack_regions  # noqa: E402
from shan.detect.toy import ToyDetector, ToyDetectorConfig, train_detector  # noqa: E402
from shan.extract import extract_images  # noqa: E402
from shan.toyworld_eval import (  # noqa: E402
    detection_metrics_from_precomp,
    grounding_accuracy,
    hard_negative_accuracy,
    image_captions,
    load_precomp_split,
    retrieval_metrics,
    step_sims,
)

DATA_NAME = "toyworld"
SPLITS = ("train", "dev", "test")


class Timer:
    """Collects wall-clock seconds per stage and prints them as they finish."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.t_start = time.time()

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> _Stage:
        self.t0 = time.time()
        print(f"\n=== {self.name} ===", flush=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        dt = time.time() - self.t0
        self.timer.times[self.name] = round(dt, 1)
        print(f"=== {self.name}: {dt:.1f}s (total {time.time() - self.timer.t_start:.1f}s)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/toyworld", help="working directory (data, runs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test on CPU")
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--dev-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="processes / loader workers")
    p.add_argument("--det-epochs", type=int, default=None)
    p.add_argument("--det-batch", type=int, default=None)
    p.add_argument("--det-lr", type=float, default=2e-3)
    p.add_argument(
        "--det-mosaic",
        type=int,
        default=None,
        help="train the detector on m x m tiles of scenes (m^2 more scenes/s on a GPU, where "
        "torchvision's per-image overhead bounds speed); --det-batch counts tiled images",
    )
    p.add_argument("--min-regions", type=int, default=2)
    p.add_argument("--max-regions", type=int, default=8)
    p.add_argument("--extract-batch", type=int, default=None)
    p.add_argument("--shan-epochs", type=int, default=None)
    p.add_argument("--shan-batch", type=int, default=None)
    p.add_argument("--shan-lr", type=float, default=5e-4)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--word-dim", type=int, default=128)
    p.add_argument("--ablations", choices=["switch", "train", "none"], default="switch")
    p.add_argument("--ablation-epochs", type=int, default=None)
    p.add_argument("--grounding-images", type=int, default=None)
    p.add_argument("--num-examples", type=int, default=6)
    p.add_argument(
        "--ckpt-dir", default=None, help="default: checkpoints/ (quick: <out>/checkpoints)"
    )
    p.add_argument("--assets-dir", default=None, help="default: assets/ (quick: <out>/assets)")
    p.add_argument("--reuse", action="store_true", help="reuse generated data / trained detector")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for the whole run (gpu preset 505, cpu 6900, quick: none); the detector "
        "gets --det-share of it, SHAN as many epochs as fit in what is left minus --eval-reserve",
    )
    p.add_argument("--det-share", type=float, default=None)
    p.add_argument("--eval-reserve", type=float, default=None)
    p.add_argument("--val-images", type=int, default=None, help="dev images validated per epoch")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    gpu = {
        "train_images": 10000,
        "dev_images": 1000,
        "test_images": 1000,
        "image_size": 256,
        "det_epochs": 10,
        "det_batch": 16,
        "extract_batch": 128,
        "shan_epochs": 10,
        "shan_batch": 128,
        "ablation_epochs": 6,
        "grounding_images": 300,
        "time_budget": 505.0,
        "det_share": 0.5,
        "det_mosaic": 2,
        "eval_reserve": 45.0,
        "val_images": 1000,
    }
    # A 2-core CPU (measured run: 102 min): ~0.15 s per detector training scene, ~27 ms per SHAN
    # training caption (with validation), so fewer training images, and the detector on single
    # scenes (mosaics only pay off on a GPU, where per-image overhead, not arithmetic, bounds it).
    cpu = {
        "train_images": 4000,
        "dev_images": 1000,
        "test_images": 1000,
        "image_size": 256,
        "det_epochs": 40,
        "det_batch": 4,
        "extract_batch": 16,
        "shan_epochs": 12,
        "shan_batch": 128,
        "ablation_epochs": 4,
        "grounding_images": 300,
        "time_budget": 6900.0,
        "det_share": 0.55,
        "det_mosaic": 1,
        "eval_reserve": 300.0,
        "val_images": 1000,
    }
    quick = {
        "train_images": 64,
        "dev_images": 12,
        "test_images": 12,
        "image_size": 128,
        "det_epochs": 1,
        "det_batch": 2,
        "extract_batch": 8,
        "shan_epochs": 1,
        "shan_batch": 32,
        "ablation_epochs": 1,
        "grounding_images": 6,
        "det_share": 0.33,
        "det_mosaic": 2,
        "eval_reserve": 45.0,
        "val_images": 12,
    }
    args.preset = "quick" if args.quick else ("gpu" if args.device == "cuda" else "cpu")
    preset = {"quick": quick, "gpu": gpu, "cpu": cpu}[args.preset]
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.det_seconds = args.time_budget * args.det_share if args.time_budget else None
    if args.workers is None:
        args.workers = max(1, min(16, os.cpu_count() or 1))
    out = Path(args.out)
    args.ckpt_dir = Path(
        args.ckpt_dir or (out / "checkpoints" if args.quick else ROOT / "checkpoints")
    )
    args.assets_dir = Path(args.assets_dir or (out / "assets" if args.quick else ROOT / "assets"))
    return args


def _sizes_match(path: Path, n: int, image_size: int, seed: int) -> bool:
    if not path.is_file():
        return False
    ann = json.loads(path.read_text())
    return len(ann["images"]) == n and ann["image_size"] == image_size and ann["seed"] == seed


def stage_generate(args: argparse.Namespace, data_dir: Path) -> dict[str, dict]:
    sizes = {"train": args.train_images, "dev": args.dev_images, "test": args.test_images}
    anns = {}
    args.reused_data = True
    for split, n in sizes.items():
        path = data_dir / split / "annotations.json"
        if not (args.reuse and _sizes_match(path, n, args.image_size, args.seed)):
            args.reused_data = False
            if (data_dir / split).exists():
                shutil.rmtree(data_dir / split)
            toyworld.generate_split(
                data_dir / split, split, n, args.seed, args.workers, args.image_size
            )
        anns[split] = toyworld.load_annotations(path)
        print(f"{split}: {n} images")
    return anns


def detector_config(args: argparse.Namespace) -> ToyDetectorConfig:
    scale = args.image_size / 256
    base = ToyDetectorConfig()
    return ToyDetectorConfig(
        classes=list(toyworld.SHAPES),
        attributes=list(toyworld.COLOURS),
        image_size=args.image_size,
        anchor_sizes=tuple(max(4, round(a * scale)) for a in base.anchor_sizes),
        # Stride 4 (not 8): small objects (24-38 px) then span 6-9 feature cells, so the 7x7
        # RoIAlign sees their outline; learned faster in a CPU A/B (mAP 0.094 vs 0.063 after
        # 200 steps at 128 px).
        strides=(2, 2, 1, 1),
        min_regions=args.min_regions,
        max_regions=args.max_regions,
    )


def stage_detector(args: argparse.Namespace, data_dir: Path, det_dir: Path) -> ToyDetector:
    args.reused_detector = False
    if args.reuse and (det_dir / "detector.safetensors").is_file():
        print(f"reusing {det_dir}")
        args.reused_detector = True
        det = ToyDetector.from_pretrained(det_dir, device=args.device)
        args.detector_training = dict(det.train_info)
        return det
    det = train_detector(
        data_dir / "train",
        det_dir,
        epochs=args.det_epochs,
        batch_size=args.det_batch,
        lr=args.det_lr,
        device=args.device,
        num_workers=min(args.workers, 8),
        cfg=detector_config(args),
        seed=args.seed,
        max_seconds=args.det_seconds,
        mosaic=args.det_mosaic,
    )
    args.detector_training = dict(getattr(det, "train_info", {}))
    return det


def stage_extract(
    args: argparse.Namespace, det: ToyDetector, data_dir: Path, anns: dict, precomp: Path
) -> dict[str, Any]:
    info = {}
    for split in SPLITS:
        recs = anns[split]["images"]
        ids_file = precomp / f"{split}_ids.txt"
        if args.reused_data and args.reused_detector and ids_file.is_file():
            if ids_file.read_text().split() == [r["id"] for r in recs]:
                ims = np.load(precomp / f"{split}_ims.npy", mmap_mode="r")
                info[split] = {
                    "n_images": len(recs),
                    "n_failed": 0,
                    "k": int(ims.shape[1]),
                    "feature_dim": int(ims.shape[2]),
                    "reused": True,
                }
                print(f"{split}: reusing {precomp}")
                continue
        summary = extract_images(
            det,
            [data_dir / split / r["file"] for r in recs],
            precomp,
            split,
            batch_size=args.extract_batch,
            captions=[[c["text"] for c in r["captions"]] for r in recs],
            resume=False,
            ids=[r["id"] for r in recs],
            num_loaders=min(args.workers, 8),
        )
        info[split] = {k: summary[k] for k in ("n_images", "n_failed", "k", "feature_dim")}
        print(f"{split}: {info[split]}")
    return info


def shan_configs(
    args: argparse.Namespace, img_dim: int, out_dir: Path, epochs: int, steps: tuple[bool, ...]
) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    mcfg = ModelConfig(
        img_dim=img_dim,
        embed_dim=args.embed_dim,
        word_dim=args.word_dim,
        max_words=64,
        use_l2l=steps[0],
        use_g2l=steps[1],
        use_g2g=steps[2],
    )
    dcfg = DataConfig(
        root=str(Path(args.out) / "precomp"), name=DATA_NAME, max_val_images=args.val_images
    )
    tcfg = TrainConfig(
        epochs=epochs,
        lr=args.shan_lr,
        lr_decay_epoch=max(1, int(round(epochs * 2 / 3))),
        batch_size=args.shan_batch,
        device=args.device,
        out_dir=str(out_dir),
        seed=args.seed,
        log_every=0,
    )
    return mcfg, dcfg, tcfg


def _set_decay_epoch(last_dir: Path, decay_epoch: int) -> None:
    """Move the lr decay of a run that will be resumed to ``decay_epoch`` of the fitted length.

    ``shan.train`` restores its StepLR from ``last/train_state.pt``; the epoch count is only known
    after epoch 1 was timed, so the decay point is rewritten there (skipped with a note if the
    state does not look as expected).
    """
    from shan.train import TRAIN_STATE_NAME

    path = last_dir / TRAIN_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["scheduler"]["step_size"] = int(decay_epoch)
        torch.save(state, path)
        print(f"SHAN lr decay after epoch {decay_epoch}")
    except (OSError, KeyError, TypeError, RuntimeError) as e:
        print(f"note: lr decay point left unchanged ({type(e).__name__}: {e})")


def stage_train_shan(
    args: argparse.Namespace,
    img_dim: int,
    out_dir: Path,
    epochs: int,
    steps: tuple[bool, bool, bool] = (True, True, True),
    max_seconds: float | None = None,
) -> tuple[Path, int]:
    """Train SHAN with :func:`shan.train.train`; returns (best checkpoint dir, epochs trained).

    With ``max_seconds``, epoch 1 runs alone and is timed; training then resumes (from
    ``last/``) up to as many epochs as fit in the budget, at most ``epochs``.
    """
    from shan.checkpoint import detector_link
    from shan.train import train

    if out_dir.exists():
        shutil.rmtree(out_dir)
    mcfg, dcfg, tcfg = shan_configs(args, img_dim, out_dir, epochs, steps)
    # install() puts the checkpoint in <ckpt_dir>/shan beside its detector in <ckpt_dir>/detector
    extra = {"detector": detector_link("toy", "../detector"), "toyworld": True}
    if max_seconds is None or epochs <= 1:
        return train(mcfg, dcfg, tcfg, extra=extra, progress=False), epochs
    t0 = time.time()
    train(mcfg, dcfg, dataclasses.replace(tcfg, epochs=1), extra=extra, progress=False)
    per_epoch = time.time() - t0
    fit = int((max_seconds - per_epoch) // max(per_epoch, 1e-3)) + 1
    n_epochs = max(1, min(epochs, fit))
    print(f"SHAN epoch 1 took {per_epoch:.1f}s; budget {max_seconds:.0f}s -> {n_epochs} epochs")
    if n_epochs == 1:
        return out_dir / "best", 1
    _set_decay_epoch(out_dir / "last", max(1, round(n_epochs * 2 / 3)))
    resumed = dataclasses.replace(tcfg, epochs=n_epochs, resume=str(out_dir / "last"))
    return train(mcfg, dcfg, resumed, extra=extra, progress=False), n_epochs


def evaluate_model(ckpt: Path, data: dict, device: str) -> tuple[Any, dict[str, dict]]:
    from shan.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt, device=device)
    sims = step_sims(
        loaded.model,
        loaded.text,
        data["feats"],
        data["masks"],
        image_captions(data["records"]),
        device=device,
    )
    return loaded, {k: retrieval_metrics(v) for k, v in sims.items()}


def choose_examples(
    loaded: Any, det: ToyDetector, data_dir: Path, anns: dict, n: int, device: str
) -> tuple[list[dict], dict]:
    """Test images with a hard negative, 2–5 objects; keep those whose own captions win.

    Candidates are the first test images (in order) with a hard negative, cycling through object
    counts 2..5; an example is kept when, among the pooled captions of all candidates (true ones
    and hard negatives), the top-scoring caption is one of its own. Returns the examples and how
    many candidates were tried.
    """
    recs = [r for r in anns["test"]["images"] if r.get("hard_negative")]
    by_count: dict[int, list] = {}
    for r in recs:
        by_count.setdefault(len(r["objects"]), []).append(r)
    cands: list[dict] = []
    order = [c for c in (3, 2, 4, 5) if by_count.get(c)]
    while len(cands) < 3 * n and any(by_count.get(c) for c in order):
        for c in order:
            if by_count.get(c) and len(cands) < 3 * n:
                cands.append(by_count[c].pop(0))
    if not cands:
        return [], {"candidates": 0, "kept": 0}
    from PIL import Image

    images = [Image.open(data_dir / "test" / r["file"]).convert("RGB") for r in cands]
    regs = det.extract(images)
    pool = [(i, c["text"]) for i, r in enumerate(cands) for c in r["captions"]]
    pool += [(-1, r["hard_negative"]["text"]) for r in cands]
    model = loaded.model
    feats, mask = stack_regions(regs)
    with torch.no_grad():
        img = model.encode_images(feats.to(device), mask.to(device))
        batch = loaded.text.encode_batch([t for _, t in pool], model.cfg.max_words)
        txt = model.encode_captions(batch.tokens.to(device), batch.lengths.to(device))
        total = model.score(img, txt).total.float().cpu()
    kept: list[dict] = []
    failed: list[dict] = []
    for i, r in enumerate(cands):
        top = int(total[i].argmax())
        neg_idx = len(pool) - len(cands) + i
        src = r["hard_negative"]["source_caption"]
        src_idx = [j for j, (o, _) in enumerate(pool) if o == i][src]
        ex = {
            "image": "",
            "source": r["id"],
            "captions": [c["text"] for c in r["captions"]],
            "hard_negative": pool[neg_idx][1],
            "hard_negative_source": src,
            "top_caption_is_own": pool[top][0] == i,
            "true_beats_negative": bool(total[i, src_idx] > total[i, neg_idx]),
            "objects": [
                {k2: o[k2] for k2 in ("shape", "colour", "size", "pattern", "box")}
                for o in r["objects"]
            ],
            "_file": str(data_dir / "test" / r["file"]),
        }
        (kept if ex["top_caption_is_own"] else failed).append(ex)
    n_ok = len(kept)
    # The demo needs examples even from a weak model; failures are marked (and fail the
    # shipped-model test), never hidden.
    kept = (kept + failed)[: max(n, 0)] if n_ok < 3 else kept[:n]
    for j, ex in enumerate(kept):
        ex["image"] = f"toy_{j + 1:02d}.png"
    return kept, {"candidates": len(cands), "kept": len(kept), "own_caption_first": n_ok}


def install(
    args: argparse.Namespace, best: Path, det_dir: Path, examples: list[dict], metrics: dict
) -> None:
    ck = Path(args.ckpt_dir)
    ck.mkdir(parents=True, exist_ok=True)
    for name, src in (("shan", best), ("detector", det_dir)):
        dst = ck / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train_state.pt"))
    assets = Path(args.assets_dir)
    assets.mkdir(parents=True, exist_ok=True)
    for old in assets.glob("toy_*.png"):
        old.unlink()
    public = []
    for ex in examples:
        shutil.copyfile(ex["_file"], assets / ex["image"])
        public.append({k: v for k, v in ex.items() if not k.startswith("_")})
    (assets / "examples.json").write_text(json.dumps(public, indent=2) + "\n")
    (ck / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(metrics, ck / "README.md")


def _fmt(m: dict[str, float]) -> str:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
    return " | ".join(f"{m.get(k, float('nan')):.1f}" for k in keys)


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def summarize_run(metrics: dict, label: str) -> dict[str, Any]:
    """The headline figures of one run's ``metrics.json`` (for the card's reproductions table)."""
    r = metrics["retrieval"]["total"]
    return {
        "label": label,
        "command": metrics["command"],
        "device": metrics["device"],
        "total_s": metrics["timings_s"].get("total"),
        "train_images": metrics["settings"]["train_images"],
        "map50": metrics["detector"]["map50"],
        "colour_acc": metrics["detector"]["colour_acc"],
        "i2t_r1": r["i2t_r1"],
        "t2i_r1": r["t2i_r1"],
        "rsum": r["rsum"],
        "grounding": metrics["grounding"]["accuracy"],
        "hard_negatives": metrics["hard_negatives"]["accuracy"],
    }


def _reproductions_section(runs: list[dict]) -> list[str]:
    """Other complete runs of this script (e.g. CPU-only), as measured; empty if none."""
    if not runs:
        return []
    lines = [
        "## Other complete runs (not shipped)",
        "| run | device | train images | total time | mAP@0.5 | colour | i2t R@1 | t2i R@1 "
        "| rSum | grounding | hard neg. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in runs:
        lines.append(
            f"| {x['label']} | {x['device']} | {x['train_images']} | "
            f"{x['total_s'] / 60:.1f} min | {x['map50']:.3f} | {x['colour_acc']:.3f} | "
            f"{x['i2t_r1']:.1f} | {x['t2i_r1']:.1f} | {x['rsum']:.1f} | "
            f"{100 * x['grounding']:.1f}% | {100 * x['hard_negatives']:.1f}% |"
        )
    for x in runs:
        lines.append(f"- {x['label']}: `{x['command']}`")
    lines.append("")
    return lines


def write_model_card(metrics: dict, path: Path) -> None:
    """``checkpoints/README.md`` from ``metrics.json`` (every number here is measured)."""
    r = metrics["retrieval"]
    s = metrics["settings"]
    ab = metrics.get("ablations", {})
    det = metrics["detector"]
    g = metrics["grounding"]
    hn = metrics["hard_negatives"]
    lines = [
        "# Toy-world SHAN + toy Faster R-CNN — model card",
        "",
        "Shipped offline models for the demo (`python app.py`). Everything here was produced by "
        "`scripts/reproduce_toyworld.py` in one run; the numbers below are copied from "
        "`checkpoints/metrics.json` by that script.",
        "",
        "## What they are",
        f"- `detector/`: torchvision Faster R-CNN trained **from scratch** on "
        f"{s['train_images']} synthetic toy-world images ({s['image_size']} px): small conv "
        f"backbone (stride {int(np.prod(s['detector_config'].get('strides', (8,))))}), 7×7 "
        f"RoIAlign, TwoMLPHead → {s['feature_dim']}-d region features, "
        f"shape classifier ({len(s['classes'])} shapes) and a colour (attribute) head. "
        f"Regions per image: {s['min_regions']}–{s['max_regions']}. Training: "
        f"{s.get('detector_training', {}).get('steps', '?')} steps, "
        f"{s.get('detector_training', {}).get('scenes', '?')} scenes seen (tiled "
        f"{s.get('detector_training', {}).get('mosaic', 1)}×"
        f"{s.get('detector_training', {}).get('mosaic', 1)} per training image).",
        f"- `shan/`: SHAN (GRU text encoder, d = {s['embed_dim']}, word dim {s['word_dim']}) "
        f"trained for {s.get('shan_epochs_trained', s['shan_epochs'])} epochs on the "
        "detector's region features of the training images (not ground-truth boxes), "
        "5 captions per image.",
        f"- Sizes: detector {metrics['sizes_mb']['detector']:.1f} MB, SHAN "
        f"{metrics['sizes_mb']['shan']:.1f} MB.",
        "",
        "## Data",
        "Scenes of 1–5 objects: 8 shapes × 8 colours × 2 sizes × 3 patterns on plain, gradient or "
        "noisy backgrounds, generated by `shan/data/toyworld.py` (seed "
        f"{s['seed']}; {s['train_images']}/{s['dev_images']}/{s['test_images']} "
        "train/dev/test images). Captions come from a small grammar (lists, counts, spatial "
        "relations, positions, synonyms). This is **not** natural-image data: the model "
        "understands only this world.",
        "",
        f"## Retrieval on test ({r['n_images']} images × 5 captions)",
        "| model | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rSum |",
        "|---|---|---|---|---|---|---|---|",
        f"| SHAN (all three steps) | {_fmt(r['total'])} |",
    ]
    mode = ab.get("mode", "none")
    if mode != "none":
        lines += [
            "",
            "## Ablations",
            (
                "Each row scores the test set with **one step of the fully trained model alone** "
                "(its own step score; ablation by switch, not retrained)."
                if mode == "switch"
                else "Switch rows score the test set with one step of the fully trained model "
                "alone; trained rows are **separately trained** models using only that step "
                f"({ab.get('epochs', {}).get('single_step', '?')} epochs each, the same data, "
                "features and settings), beside the full model trained the same way "
                f"({ab.get('epochs', {}).get('all_three', '?')} epochs)."
            ),
            "| model | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rSum |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in ab.get("switch", {}).items():
            lines.append(f"| {name} only (switch) | {_fmt(m)} |")
        lines.append(f"| all three (these checkpoints) | {_fmt(r['total'])} |")
        trained = ab.get("trained", {})
        for name, m in trained.items():
            if name != "all three":
                lines.append(f"| {name} only (trained) | {_fmt(m)} |")
        if trained:
            full = trained.get("all three", r["total"])
            lines.append(f"| all three (trained the same way) | {_fmt(full)} |")
            best = max(trained, key=lambda k: trained[k].get("rsum", float("-inf")))
            if best != "all three":
                gap = trained[best]["rsum"] - full["rsum"]
                lines += [
                    "",
                    f"Trained the same way, the full model does **not** have the best rSum: "
                    f"{best} only is {gap:.1f} higher.",
                ]
        if ab.get("note"):
            lines += ["", ab["note"]]
        if ab.get("command"):
            lines += ["", f"Trained rows from a separate run: `{ab['command']}`."]
    lines += [
        "",
        "## Detector (test)",
        f"- mAP@0.5 over shapes: **{det['map50']:.3f}**; colour accuracy of detected objects: "
        f"**{det['colour_acc']:.3f}** ({det['colour_n']} objects); objects found (IoU ≥ 0.5): "
        f"{det['recall50']:.3f}.",
        "",
        "## Word grounding (step 1)",
        f"For every shape noun and colour adjective of a test caption ({g['n']} words, first "
        f"{s['grounding_images']} test images), the region with the largest word→region weight β "
        f"overlaps the word's object with IoU ≥ 0.5: **{100 * g['accuracy']:.1f}%** "
        f"(shape words {100 * g['per_role'].get('shape', float('nan')):.1f}%, colour words "
        f"{100 * g['per_role'].get('colour', float('nan')):.1f}%). On the "
        f"{g.get('unambiguous_n', 0)} words whose shape/colour no other object shares (no "
        f"binding needed): {100 * g.get('unambiguous', float('nan')):.1f}%.",
        "",
        "## Hard negatives",
        f"Captions with the colours of two objects swapped ({hn['n']} test images): the true "
        f"caption scores higher in **{100 * hn['accuracy']:.1f}%** of cases "
        + ", ".join(
            f"{k} alone {100 * v:.1f}%" for k, v in hn.get("per_step", {}).items() if k != "total"
        )
        + ".",
        "",
        "## Reproduce",
        "```",
        metrics["command"],
        "```",
        "Stage timings (s): "
        + ", ".join(f"{k} {v}" for k, v in metrics["timings_s"].items())
        + f". Device: {metrics['device']}.",
        "",
        *_reproductions_section(metrics.get("reproductions", [])),
        "## Limits",
        "- Trained on synthetic shapes only; on photographs the detector's regions and the "
        "scores are meaningless.",
        "- Spatial words (left of, above, ...) are in the captions, but the region features carry "
        "little position information, so SHAN matches mostly on colours, shapes, sizes and "
        "patterns.",
        f"- Examples in `assets/` are test images with a hard negative, taken in order; for "
        f"{metrics['examples'].get('own_caption_first', 0)} of "
        f"{metrics['examples']['candidates']} candidates the shipped model ranks one of their own "
        "captions first among all candidates' captions and hard negatives; those are shipped "
        "(failures only if fewer than 3 pass, marked `top_caption_is_own: false`).",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, det_dir, precomp = (
        out / "data",
        out / "detector",
        out / "precomp" / f"{DATA_NAME}_precomp",
    )
    timer = Timer()
    cmd = "python scripts/reproduce_toyworld.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(f"device={args.device} preset={args.preset} out={out}")

    with timer.stage("1 generate"):
        anns = stage_generate(args, data_dir)
    with timer.stage("2 train detector"):
        det = stage_detector(args, data_dir, det_dir)
        det = ToyDetector.from_pretrained(det_dir, device=args.device)  # exactly what ships
    with timer.stage("3 extract regions"):
        ext = stage_extract(args, det, data_dir, anns, precomp)
    with timer.stage("4 train SHAN"):
        budget = None
        if args.time_budget:
            budget = args.time_budget - (time.time() - timer.t_start) - args.eval_reserve
            print(f"time left for SHAN: {budget:.0f}s")
        best, shan_epochs = stage_train_shan(
            args, det.feature_dim, out / "shan", args.shan_epochs, max_seconds=budget
        )
        args.shan_epochs_trained = shan_epochs
    test = load_precomp_split(precomp, "test", anns["test"])
    with timer.stage("5 evaluate retrieval"):
        loaded, step_metrics = evaluate_model(best, test, args.device)
        print("test (all steps): i2t R@1/5/10, t2i R@1/5/10, rSum:", _fmt(step_metrics["total"]))
    ablations: dict[str, Any] = {"mode": args.ablations}
    if args.ablations != "none":
        ablations["switch"] = {
            "L2L": step_metrics["l2l"],
            "G2L": step_metrics["g2l"],
            "G2G": step_metrics["g2g"],
        }
    if args.ablations == "train":
        with timer.stage("6 ablations (train single-step models)"):
            ablations["trained"] = {}
            ablations["epochs"] = {
                "single_step": args.ablation_epochs,
                "all_three": args.shan_epochs_trained,
            }
            for name, steps in (("L2L", (1, 0, 0)), ("G2L", (0, 1, 0)), ("G2G", (0, 0, 1))):
                flags = (bool(steps[0]), bool(steps[1]), bool(steps[2]))
                run_dir = out / f"shan_{name.lower()}"
                ck, _ = stage_train_shan(
                    args, det.feature_dim, run_dir, args.ablation_epochs, flags
                )
                _, m = evaluate_model(ck, test, args.device)
                ablations["trained"][name] = m["total"]
                print(f"{name} only (trained): {_fmt(m['total'])}")
            ablations["trained"]["all three"] = step_metrics["total"]
    with timer.stage("7 detector mAP / colour"):
        det_metrics = detection_metrics_from_precomp(test, det.classes)
        print(json.dumps({k: v for k, v in det_metrics.items() if k != "ap"}))
    with timer.stage("8 grounding + hard negatives"):
        ground = grounding_accuracy(
            loaded.model, loaded.text, test, max_images=args.grounding_images
        )
        hard = hard_negative_accuracy(loaded.model, loaded.text, test, device=args.device)
        print(f"grounding {ground}\nhard negatives {hard}")
    with timer.stage("9 examples + install"):
        examples, ex_info = choose_examples(
            loaded, det, data_dir, anns, args.num_examples, args.device
        )
        metrics = {
            "command": cmd,
            "device": torch.cuda.get_device_name(0)
            if args.device == "cuda"
            else platform.processor() or "cpu",
            "torch": torch.__version__,
            "settings": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "feature_dim": det.feature_dim,
                "classes": det.classes,
                "colours": det.attributes,
                "detector_config": dataclasses.asdict(det.cfg),
                "shan_config": to_dict(loaded.config),
            },
            "extraction": ext,
            "retrieval": {"n_images": len(test["records"]), **step_metrics},
            "ablations": ablations,
            "detector": det_metrics,
            "grounding": ground,
            "hard_negatives": hard,
            "examples": ex_info,
            "sizes_mb": {"detector": _size_mb(det_dir), "shan": _size_mb(best)},
            "timings_s": timer.times,
        }
        install(args, best, det_dir, examples, metrics)
    metrics["timings_s"] = timer.times
    metrics["timings_s"]["total"] = round(time.time() - timer.t_start, 1)
    (Path(args.ckpt_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(metrics, Path(args.ckpt_dir) / "README.md")
    print(
        f"\nwrote {args.ckpt_dir}/shan, {args.ckpt_dir}/detector, {args.assets_dir}/examples.json"
    )
    print("timings (s):", json.dumps(metrics["timings_s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
