#!/usr/bin/env python
"""Reproduce the shipped toy-world models with ONE command.

Stages (each timed): generate toy world 2 → train the toy Faster R-CNN from scratch → extract
region features (boxes, image sizes) of train/dev/test and of the test split's distractor images
with that detector, and the typed negatives of every caption → train SHAN (region geometry + typed
hard negatives) → evaluate (the compositional suite, retrieval per step, grounding, text-pooling
sanity, detector mAP per background type; calibration saved into the checkpoint) → choose the
app's examples (minimal pairs) → write the model card → install into ``checkpoints/`` and
``assets/``. The work is done by the library (:mod:`shan.toyworld`, :mod:`shan.train`,
:mod:`shan.extract`); this script only wires the stages and writes the card.

Presets (``--preset``; ``auto`` picks ``gpu`` with CUDA, else ``cpu``); every flag overrides its
preset value::

    python scripts/reproduce_toyworld.py --preset cpu --out runs/toyworld   # 2-core CPU, <= 2 h
    python scripts/reproduce_toyworld.py --preset gpu --out runs/toyworld   # one GPU
    python scripts/reproduce_toyworld.py --preset quick --out /tmp/tw_quick # tiny smoke test

The time budget is shared out at run time: the detector trains for ``--det-share`` of it (its
cosine schedule follows wall-clock progress), SHAN's first epoch is timed and training resumes for
as many epochs as fit before ``--eval-reserve`` seconds remain.

Ablations, on the SAME extracted features (``--reuse`` keeps data, detector and features)::

    python scripts/reproduce_toyworld.py --preset cpu --out runs/toyworld --reuse --ablations-only

trains, for each of ``--ablation-seeds`` seeds and ``--ablation-epochs`` epochs, the four-model
comparison (paper SHAN, + geometry, + hard negatives, both) and the single-step models (L2L / G2L /
G2G only, with both switches), evaluates each on the suite and retrieval, and adds mean ± std to
``metrics.json`` and the model card. ``--ablations`` runs them after the main model instead.

``--reuse`` reuses generated data only when its :class:`~shan.toyworld.WorldConfig`, seed and sizes
are the ones asked for, the detector only when its config is, and features only when both were
reused.
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
from shan.data.precomp import write_negatives  # noqa: E402
from shan.detect.toy import ToyDetector, ToyDetectorConfig  # noqa: E402
from shan.errors import ShanError  # noqa: E402
from shan.extract import extract_images  # noqa: E402
from shan.files import write_text  # noqa: E402
from shan.toyworld.detector_train import train_detector  # noqa: E402
from shan.toyworld.examples import choose_examples  # noqa: E402
from shan.toyworld.metrics import (  # noqa: E402
    drop_whole_image_region,
    load_toy_split,
)
from shan.toyworld.report import (  # noqa: E402
    ABLATION_MODELS,
    NO_WHOLE,
    capabilities,
    card_facts,
    retrieval_cells,
    summarise_ablations,
    targets,
    write_model_card,
)
from shan.toyworld.suite import (  # noqa: E402
    DISTRACTOR_SPLIT_SUFFIX,
    caption_negative_rows,
    distractor_ids,
    distractor_rows,
    extract_distractors,
    full_report,
    group_rows,
)

DATA_NAME = "toyworld"
SPLITS = ("train", "dev", "test")

PRESETS: dict[str, dict[str, Any]] = {
    # One GPU (not measured with this world yet): more images, detector on 2 x 2 mosaics (the
    # per-image overhead of torchvision's detector, not arithmetic, bounds it on a GPU).
    "gpu": {
        "train_images": 10000,
        "dev_images": 1000,
        "test_images": 1000,
        "image_size": 256,
        "det_epochs": 12,
        "det_batch": 16,
        "det_mosaic": 2,
        "extract_batch": 128,
        "shan_epochs": 12,
        "shan_batch": 128,
        "ablation_epochs": 6,
        "grounding_images": 300,
        "pooling_images": 200,
        "time_budget": 1200.0,
        "det_share": 0.5,
        "eval_reserve": 120.0,
        "val_images": 1000,
    },
    # A 2-core CPU, the whole run within 2 hours (6900 s budget + install).
    "cpu": {
        "train_images": 4000,
        "dev_images": 1000,
        "test_images": 1000,
        "image_size": 256,
        "det_epochs": 40,
        "det_batch": 4,
        "det_mosaic": 1,
        "extract_batch": 16,
        "shan_epochs": 12,
        "shan_batch": 128,
        "ablation_epochs": 2,
        "grounding_images": 300,
        "pooling_images": 200,
        "time_budget": 6900.0,
        "det_share": 0.5,
        "eval_reserve": 420.0,
        "val_images": 500,
    },
    "quick": {
        "train_images": 64,
        "dev_images": 12,
        "test_images": 12,
        "image_size": 128,
        "det_epochs": 1,
        "det_batch": 2,
        "det_mosaic": 2,
        "extract_batch": 8,
        "shan_epochs": 1,
        "shan_batch": 32,
        "ablation_epochs": 1,
        "grounding_images": 6,
        "pooling_images": 6,
        "time_budget": None,
        "det_share": 0.33,
        "eval_reserve": 45.0,
        "val_images": 12,
    },
}
# Settings shared by every preset (flags override them).
DEFAULTS: dict[str, Any] = {
    "det_lr": 2e-3,
    "det_brightness": 0.3,
    "det_contrast": 0.3,
    "det_dark_weight": 1.5,
    "per_image_norm": True,
    "whole_image_region": True,
    "geometry": True,
    "hard_negatives": "typed",
    "ablation_seeds": 3,
    "shan_set": [],
}


def _shown_path(path: Path) -> str:
    """A path as recorded in metrics.json: relative to the repository when inside it (a model
    card must not carry the paths of the machine that trained it)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


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


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    on_off = argparse.BooleanOptionalAction
    p.add_argument("--out", default="runs/toyworld", help="working directory (data, runs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--preset", default="auto", choices=["auto", "cpu", "gpu", "quick"])
    p.add_argument("--quick", action="store_true", help="same as --preset quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--dev-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="processes / loader workers")
    p.add_argument("--det-epochs", type=int, default=None)
    p.add_argument("--det-batch", type=int, default=None)
    p.add_argument("--det-lr", type=float, default=None)
    p.add_argument("--det-mosaic", type=int, default=None, help="train on m x m tiles of scenes")
    p.add_argument("--det-brightness", type=float, default=None, help="brightness jitter")
    p.add_argument("--det-contrast", type=float, default=None, help="contrast jitter")
    p.add_argument(
        "--det-dark-weight",
        type=float,
        default=None,
        help="sampling weight of dark-background scenes (others 1)",
    )
    p.add_argument(
        "--per-image-norm",
        action=on_off,
        default=None,
        help="detector input normalised per image (ToyDetectorConfig.per_image_norm)",
    )
    p.add_argument(
        "--whole-image-region",
        action=on_off,
        default=None,
        help="one more region per image: the whole picture (scene-level facts)",
    )
    p.add_argument("--min-regions", type=int, default=2)
    p.add_argument("--max-regions", type=int, default=8)
    p.add_argument("--extract-batch", type=int, default=None)
    p.add_argument("--shan-epochs", type=int, default=None)
    p.add_argument("--shan-batch", type=int, default=None)
    p.add_argument("--shan-lr", type=float, default=5e-4)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--word-dim", type=int, default=128)
    p.add_argument(
        "--geometry",
        action=on_off,
        default=None,
        help="SHAN with region geometry (ModelConfig.use_geometry)",
    )
    p.add_argument(
        "--hard-negatives",
        default=None,
        help="TrainConfig.hard_negatives of the shipped model (typed, swap, none)",
    )
    p.add_argument(
        "--shan-set",
        action="append",
        default=None,
        metavar="SECTION.KEY=VALUE",
        help="any SHAN config field for every SHAN trained here, as shan-train's --set "
        "(e.g. train.negatives_per_caption=4); the ablation switches stay the variant's",
    )
    p.add_argument("--ablations", action="store_true", help="also train the ablation grid")
    p.add_argument(
        "--ablations-only",
        action="store_true",
        help="only the ablation grid, on the features of an earlier run (--reuse)",
    )
    p.add_argument("--ablation-seeds", type=int, default=None)
    p.add_argument(
        "--ablation-models",
        default=None,
        help="comma-separated subset of the ablation grid (default: all of "
        f"{', '.join([*ABLATION_MODELS, NO_WHOLE])})",
    )
    p.add_argument("--ablation-epochs", type=int, default=None)
    p.add_argument("--grounding-images", type=int, default=None)
    p.add_argument("--pooling-images", type=int, default=None)
    p.add_argument("--num-examples", type=int, default=6)
    p.add_argument(
        "--ckpt-dir", default=None, help="default: checkpoints/ (quick: <out>/checkpoints)"
    )
    p.add_argument("--assets-dir", default=None, help="default: assets/ (quick: <out>/assets)")
    p.add_argument("--reuse", action="store_true", help="reuse matching data / detector / features")
    p.add_argument("--time-budget", type=float, default=None, help="seconds for the whole run")
    p.add_argument("--det-share", type=float, default=None)
    p.add_argument("--eval-reserve", type=float, default=None)
    p.add_argument("--val-images", type=int, default=None, help="dev images validated per epoch")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if args.quick:
        args.preset = "quick"
    if args.preset == "auto":
        args.preset = "gpu" if args.device == "cuda" else "cpu"
    for k, v in {**DEFAULTS, **PRESETS[args.preset]}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.ablations_only and not args.reuse:
        p.error("--ablations-only trains on an earlier run's features: add --reuse")
    grid = [*ABLATION_MODELS, NO_WHOLE]
    args.ablation_models = (
        [x.strip() for x in args.ablation_models.split(",") if x.strip()]
        if args.ablation_models
        else grid
    )
    unknown = [x for x in args.ablation_models if x not in grid]
    if unknown:
        p.error(f"--ablation-models: unknown {unknown}; choose from {grid}")
    args.det_seconds = args.time_budget * args.det_share if args.time_budget else None
    if args.workers is None:
        args.workers = max(1, min(16, os.cpu_count() or 1))
    out = Path(args.out)
    quick = args.preset == "quick"
    args.ckpt_dir = Path(args.ckpt_dir or (out / "checkpoints" if quick else ROOT / "checkpoints"))
    args.assets_dir = Path(args.assets_dir or (out / "assets" if quick else ROOT / "assets"))
    return args


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def world_config(args: argparse.Namespace) -> toyworld.WorldConfig:
    """The world of this run: toy world 2 at ``--image-size``."""
    return toyworld.WorldConfig(image_size=args.image_size)


def data_matches(path: Path, n: int, cfg: toyworld.WorldConfig, seed: int) -> bool:
    """Whether ``path`` (an ``annotations.json``) holds ``n`` images of world ``cfg`` from ``seed``.

    The world config is compared field by field (not only sizes): data of another world is
    regenerated, never silently reused.
    """
    if not path.is_file():
        return False
    try:
        ann = toyworld.load_annotations(path)
        same_world = toyworld.world_config(ann).to_dict() == cfg.to_dict()
    except toyworld.ToyWorldError:
        return False
    return same_world and len(ann["images"]) == n and ann.get("seed") == seed


def stage_generate(args: argparse.Namespace, data_dir: Path) -> dict[str, dict]:
    sizes = {"train": args.train_images, "dev": args.dev_images, "test": args.test_images}
    cfg = world_config(args)
    anns = {}
    args.reused_data = True
    for split, n in sizes.items():
        path = data_dir / split / "annotations.json"
        if not (args.reuse and data_matches(path, n, cfg, args.seed)):
            args.reused_data = False
            if (data_dir / split).exists():
                shutil.rmtree(data_dir / split)
            toyworld.generate_split(data_dir / split, split, n, args.seed, args.workers, config=cfg)
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
        # RoIAlign sees their outline.
        strides=(2, 2, 1, 1),
        min_regions=args.min_regions,
        max_regions=args.max_regions,
        per_image_norm=args.per_image_norm,
        whole_image_region=args.whole_image_region,
    )


def stage_detector(args: argparse.Namespace, data_dir: Path, det_dir: Path) -> ToyDetector:
    args.reused_detector = False
    cfg = detector_config(args)
    if args.reuse and args.reused_data and (det_dir / "detector.safetensors").is_file():
        det = ToyDetector.from_pretrained(det_dir, device=args.device)
        if dataclasses.asdict(det.cfg) == dataclasses.asdict(cfg):
            print(f"reusing {det_dir}")
            args.reused_detector = True
            return det
        print(f"{det_dir} has another detector config: training again")
    train_detector(
        data_dir / "train",
        det_dir,
        epochs=args.det_epochs,
        batch_size=args.det_batch,
        lr=args.det_lr,
        device=args.device,
        num_workers=min(args.workers, 8),
        cfg=cfg,
        seed=args.seed,
        max_seconds=args.det_seconds,
        mosaic=args.det_mosaic,
        brightness=args.det_brightness,
        contrast=args.det_contrast,
        tone_weights={"dark": args.det_dark_weight} if args.det_dark_weight != 1 else None,
    )
    return ToyDetector.from_pretrained(det_dir, device=args.device)  # exactly what ships


def stage_extract(
    args: argparse.Namespace, det: ToyDetector, data_dir: Path, anns: dict, precomp: Path
) -> dict[str, Any]:
    """Features of every split (+ sizes, ids, regions), typed negatives, distractor images."""
    info = {}
    reuse = args.reused_data and args.reused_detector
    for split in SPLITS:
        recs = anns[split]["images"]
        ids_file = precomp / f"{split}_ids.txt"
        if reuse and ids_file.is_file() and ids_file.read_text().split() == [r["id"] for r in recs]:
            info[split] = {"n_images": len(recs), "reused": True}
            print(f"{split}: reusing {precomp}")
        else:
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
                progress=False,
            )
            info[split] = {k: summary[k] for k in ("n_images", "n_failed", "k", "feature_dim")}
            print(f"{split}: {info[split]}")
        write_negatives(precomp, split, toyworld.caption_negatives(anns[split]))
    dname = "test" + DISTRACTOR_SPLIT_SUFFIX
    if distractor_ids(anns["test"]["images"]):
        if not (reuse and (precomp / f"{dname}_ims.npy").is_file()):
            extract_distractors(
                det,
                data_dir / "test",
                anns["test"],
                precomp,
                "test",
                batch_size=args.extract_batch,
                num_loaders=min(args.workers, 8),
            )
        info[dname] = {"n_images": len(distractor_ids(anns["test"]["images"]))}
    return info


def switch_fields(geometry: bool, hard_negatives: str) -> tuple[dict, dict, list[str]]:
    """``ModelConfig`` / ``TrainConfig`` fields of the two switches, and notes on switches this
    version of the library does not have (the run then trains without them and says so)."""
    m_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    t_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_kw: dict[str, Any] = {}
    train_kw: dict[str, Any] = {}
    notes = []
    if geometry:
        if "use_geometry" in m_fields:
            model_kw["use_geometry"] = True
        else:
            notes.append("region geometry asked for, but ModelConfig has no use_geometry")
    if hard_negatives and hard_negatives != "none":
        if "hard_negatives" in t_fields:
            train_kw["hard_negatives"] = hard_negatives
        else:
            notes.append("hard negatives asked for, but TrainConfig has no hard_negatives")
    return model_kw, train_kw, notes


def shan_configs(
    args: argparse.Namespace,
    img_dim: int,
    out_dir: Path,
    epochs: int,
    steps: tuple[bool, bool, bool] = (True, True, True),
    geometry: bool = True,
    hard_negatives: str = "typed",
    seed: int | None = None,
    data_root: Path | None = None,
) -> tuple[ModelConfig, DataConfig, TrainConfig, list[str]]:
    model_kw, train_kw, notes = switch_fields(geometry, hard_negatives)
    mcfg = ModelConfig(
        img_dim=img_dim,
        embed_dim=args.embed_dim,
        word_dim=args.word_dim,
        max_words=64,
        use_l2l=steps[0],
        use_g2l=steps[1],
        use_g2g=steps[2],
        **model_kw,
    )
    root = data_root or Path(args.out) / "precomp"
    dcfg = DataConfig(root=str(root), name=DATA_NAME, max_val_images=args.val_images)
    tcfg = TrainConfig(
        epochs=epochs,
        lr=args.shan_lr,
        lr_decay_epoch=max(1, int(round(epochs * 2 / 3))),
        batch_size=args.shan_batch,
        device=args.device,
        out_dir=str(out_dir),
        seed=args.seed if seed is None else seed,
        log_every=0,
        **train_kw,
    )
    if args.shan_set:  # the caller's own settings, then the variant's switches again on top
        from shan.train import apply_set_overrides

        mcfg, dcfg, tcfg = apply_set_overrides((mcfg, dcfg, tcfg), list(args.shan_set))
        step_kw = dict(zip(("use_l2l", "use_g2l", "use_g2g"), steps))
        mcfg = dataclasses.replace(mcfg, **step_kw, **model_kw)
        tcfg = dataclasses.replace(tcfg, **train_kw)
    return mcfg, dcfg, tcfg, notes


def _set_decay_epoch(last_dir: Path, decay_epoch: int) -> None:
    """Move the lr decay of a run that will be resumed to ``decay_epoch`` of the fitted length
    (``shan.train`` restores its StepLR from ``last/train_state.pt``)."""
    from shan.train import TRAIN_STATE_NAME

    path = last_dir / TRAIN_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["scheduler"]["step_size"] = int(decay_epoch)
        torch.save(state, path)
        print(f"SHAN lr decay after epoch {decay_epoch}")
    except (OSError, KeyError, TypeError, RuntimeError) as e:
        print(f"note: lr decay point left unchanged ({type(e).__name__}: {e})")


def train_shan(
    args: argparse.Namespace,
    img_dim: int,
    out_dir: Path,
    epochs: int,
    max_seconds: float | None = None,
    **variant: Any,
) -> tuple[Path, int, list[str]]:
    """Train SHAN with :func:`shan.train.train`: (best checkpoint, epochs trained, notes).

    With ``max_seconds``, epoch 1 runs alone and is timed; training then resumes (from ``last/``)
    for as many epochs as fit in the budget, at most ``epochs``.
    """
    from shan.checkpoint import detector_link
    from shan.train import train

    if out_dir.exists():
        shutil.rmtree(out_dir)
    mcfg, dcfg, tcfg, notes = shan_configs(args, img_dim, out_dir, epochs, **variant)
    for n in notes:
        print(f"note: {n}")
    # install() puts the checkpoint in <ckpt_dir>/shan beside its detector in <ckpt_dir>/detector
    extra = {"detector": detector_link("toy", "../detector"), "toyworld": True}
    if max_seconds is None or epochs <= 1:
        return train(mcfg, dcfg, tcfg, extra=extra, progress=False), epochs, notes
    t0 = time.time()
    train(mcfg, dcfg, dataclasses.replace(tcfg, epochs=1), extra=extra, progress=False)
    per_epoch = time.time() - t0
    n_epochs = max(1, min(epochs, int((max_seconds - per_epoch) // max(per_epoch, 1e-3)) + 1))
    print(f"SHAN epoch 1 took {per_epoch:.1f}s; budget {max_seconds:.0f}s -> {n_epochs} epochs")
    if n_epochs == 1:
        return out_dir / "best", 1, notes
    _set_decay_epoch(out_dir / "last", max(1, round(n_epochs * 2 / 3)))
    resumed = dataclasses.replace(tcfg, epochs=n_epochs, resume=str(out_dir / "last"))
    return train(mcfg, dcfg, resumed, extra=extra, progress=False), n_epochs, notes


# ----------------------------------------------------------------------------------------------
# Targets, examples, ablations
# ----------------------------------------------------------------------------------------------


def _has_whole_image_region(precomp: Path) -> bool:
    """Whether every test image of ``precomp`` ends with a whole-image region."""
    from shan.data.precomp import read_regions
    from shan.detect.toy import WHOLE_IMAGE_LABEL

    regions = read_regions(precomp, "test") if precomp.is_dir() else None
    return bool(regions) and all(r["labels"][-1:] == [WHOLE_IMAGE_LABEL] for r in regions)


def run_ablations(
    args: argparse.Namespace, img_dim: int, test: Any, distractors: Any, out: Path
) -> dict[str, Any]:
    """Train the ablation grid (:data:`ABLATION_MODELS` × seeds) and summarise mean ± std."""
    from shan.checkpoint import load_checkpoint
    from shan.evaluation import metrics_from_sims
    from shan.toyworld.metrics import step_sims

    runs: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    chosen = set(args.ablation_models)
    models: dict[str, tuple[dict, Path | None]] = {
        n: (v, None) for n, v in ABLATION_MODELS.items() if n in chosen
    }
    src = Path(args.out) / "precomp" / f"{DATA_NAME}_precomp"
    if NO_WHOLE in chosen and _has_whole_image_region(src):
        # The same features minus the whole-image region: does it help scene-level rows?
        root = Path(args.out) / "precomp_no_whole"
        for split in (*SPLITS, "test" + DISTRACTOR_SPLIT_SUFFIX):
            if (src / f"{split}_ims.npy").is_file():
                drop_whole_image_region(src, root / f"{DATA_NAME}_precomp", split)
        models[NO_WHOLE] = (ABLATION_MODELS["both (full)"], root)
    for name, (variant, root) in models.items():
        _, _, notes = switch_fields(variant["geometry"], variant["hard_negatives"])
        if notes:
            skipped[name] = "; ".join(notes)
            print(f"ablation {name}: skipped ({skipped[name]})")
            continue
        t_split, d_split = test, distractors
        if root is not None:
            pre = root / f"{DATA_NAME}_precomp"
            t_split = load_toy_split(pre, "test", {"images": test.records})
            if distractors is not None:
                d_split = load_toy_split(pre, "test" + DISTRACTOR_SPLIT_SUFFIX)
        for s in range(args.ablation_seeds):
            slug = name.replace(" ", "_").replace("+", "plus").replace(",", "")
            run_dir = out / "ablations" / f"{slug}_{s}"
            best, _, _ = train_shan(
                args, img_dim, run_dir, args.ablation_epochs, seed=s, data_root=root, **variant
            )
            loaded = load_checkpoint(best, device=args.device)
            m, t = loaded.model, loaded.text
            r = metrics_from_sims(step_sims(m, t, t_split, args.device)["total"])
            negs = caption_negative_rows(m, t, t_split, args.device)
            groups = group_rows(negs)
            dis = distractor_rows(m, t, t_split, d_split, args.device) if d_split else {}
            runs.setdefault(name, []).append(
                {
                    "seed": s,
                    "rsum": float(r["rsum"]),
                    "i2t_r1": float(r["i2t_r1"]),
                    "t2i_r1": float(r["t2i_r1"]),
                    "groups": {g: row["total"] for g, row in groups.items()},
                    "types": {g: row["total"] for g, row in negs.items()},
                    "distractors": {g: row["total"] for g, row in dis.items()},
                }
            )
            print(f"ablation {name} seed {s}: rSum {r['rsum']:.1f}")
    recipe = {
        "epochs": args.ablation_epochs,
        "seeds": args.ablation_seeds,
        "train_images": args.train_images,
        "batch": args.shan_batch,
        "lr": args.shan_lr,
        "features": "the shipped detector's, reused",
    }
    return summarise_ablations(runs, recipe, skipped)


# ----------------------------------------------------------------------------------------------
# Install
# ----------------------------------------------------------------------------------------------


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def install(
    args: argparse.Namespace,
    best: Path,
    det_dir: Path,
    data_dir: Path,
    examples: list[dict],
    metrics: dict,
) -> None:
    """Checkpoints (with ``extra.card``, the app's banner facts, and ``extra.capabilities``, every
    target's figure), assets, metrics and card."""
    ck = Path(args.ckpt_dir)
    ck.mkdir(parents=True, exist_ok=True)
    for name, src in (("shan", best), ("detector", det_dir)):
        dst = ck / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train_state.pt"))
    cfg_path = ck / "shan" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("extra", {})["capabilities"] = metrics["capabilities"]
    cfg["extra"]["card"] = card_facts(metrics["targets"])
    cfg["extra"]["world"] = metrics["settings"]["world"]
    write_text(cfg_path, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    assets = Path(args.assets_dir)
    assets.mkdir(parents=True, exist_ok=True)
    for old in assets.glob("toy_*.png"):
        old.unlink()
    public = []
    for ex in examples:
        shutil.copyfile(data_dir / "test" / ex["_file"], assets / ex["image"])
        shutil.copyfile(data_dir / "test" / ex["_mirror_file"], assets / ex["distractor"]["image"])
        public.append({k: v for k, v in ex.items() if not k.startswith("_")})
    (assets / "examples.json").write_text(json.dumps(public, indent=2) + "\n")
    write_text(ck / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n")
    write_model_card(metrics, ck / "README.md")


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except ShanError as e:  # bad settings or files: one line, nothing lost that was written
        print(f"reproduce_toyworld: error: {e}", file=sys.stderr)
        return 2


def run(argv: list[str] | None = None) -> int:
    """The pipeline (:func:`main` turns the library's errors into one-line messages)."""
    args = parse_args(argv)
    if args.shan_set:  # checked before hours of work, not after
        from shan.train import apply_set_overrides

        apply_set_overrides((ModelConfig(), DataConfig(), TrainConfig()), list(args.shan_set))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, det_dir = out / "data", out / "detector"
    precomp = out / "precomp" / f"{DATA_NAME}_precomp"
    timer = Timer()
    cmd = "python scripts/reproduce_toyworld.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(f"device={args.device} preset={args.preset} out={out}")

    with timer.stage("1 generate"):
        anns = stage_generate(args, data_dir)
    with timer.stage("2 train detector"):
        det = stage_detector(args, data_dir, det_dir)
    with timer.stage("3 extract regions"):
        ext = stage_extract(args, det, data_dir, anns, precomp)
    test = load_toy_split(precomp, "test", anns["test"])
    dname = "test" + DISTRACTOR_SPLIT_SUFFIX
    distractors = load_toy_split(precomp, dname) if dname in ext else None
    if args.ablations_only:
        metrics_path = Path(args.ckpt_dir) / "metrics.json"
        if not metrics_path.is_file():
            print(f"error: --ablations-only needs the main run's {metrics_path}", file=sys.stderr)
            return 2
        with timer.stage("ablations"):
            metrics = json.loads(metrics_path.read_text())
            metrics["ablations"] = run_ablations(args, det.feature_dim, test, distractors, out)
            metrics["ablations"]["command"] = cmd
            metrics["ablations"]["seconds"] = round(time.time() - timer.t_start, 1)
            metrics["targets"] = targets(metrics)
            metrics["capabilities"] = capabilities(metrics["targets"])
        best = Path(args.ckpt_dir) / "shan"
        cfg = json.loads((best / "config.json").read_text())
        cfg["extra"]["capabilities"] = metrics["capabilities"]
        cfg["extra"]["card"] = card_facts(metrics["targets"])
        write_text(best / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        write_text(metrics_path, json.dumps(metrics, indent=2, default=float) + "\n")
        write_model_card(metrics, Path(args.ckpt_dir) / "README.md")
        print(f"ablations added to {metrics_path}")
        return 0

    with timer.stage("4 train SHAN"):
        budget = None
        if args.time_budget:
            budget = args.time_budget - (time.time() - timer.t_start) - args.eval_reserve
            print(f"time left for SHAN: {budget:.0f}s")
        best, shan_epochs, notes = train_shan(
            args,
            det.feature_dim,
            out / "shan",
            args.shan_epochs,
            max_seconds=budget,
            geometry=args.geometry,
            hard_negatives=args.hard_negatives,
        )
        args.shan_epochs_trained = shan_epochs
    with timer.stage("5 evaluate"):
        from shan.calibration import save_calibration
        from shan.checkpoint import load_checkpoint
        from shan.toyworld.suite import suite_tables

        loaded = load_checkpoint(best, device=args.device)
        ev = full_report(
            loaded,
            test,
            distractors,
            det.classes,
            args.device,
            args.grounding_images,
            args.pooling_images,
        )
        save_calibration(ev.pop("calibration"), best)
        print("\n".join(suite_tables(ev["suite"])))
        print("test R@1/5/10 both ways, rSum:", retrieval_cells(ev["retrieval"]["total"]))
    model_kw, train_kw, _ = switch_fields(args.geometry, args.hard_negatives)
    metrics: dict[str, Any] = {
        "command": cmd,
        "device": torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "notes": notes,
        "switches": {"geometry": bool(model_kw), "hard_negatives": train_kw.get("hard_negatives")},
        "settings": {
            **{k: (_shown_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "world": world_config(args).to_dict(),
            "feature_dim": det.feature_dim,
            "classes": det.classes,
            "colours": det.attributes,
            "detector_config": dataclasses.asdict(det.cfg),
            "detector_training": dict(det.train_info),
            "shan_config": to_dict(loaded.config),
        },
        "extraction": ext,
        "evaluation": ev,
    }
    if args.ablations:
        with timer.stage("6 ablations"):
            metrics["ablations"] = run_ablations(args, det.feature_dim, test, distractors, out)
    with timer.stage("7 examples + install"):
        examples, metrics["examples"] = (
            choose_examples(loaded, test, distractors, args.num_examples, args.device)
            if distractors is not None
            else ([], {"candidates": 0, "kept": 0, "all_right": 0})
        )
        metrics["targets"] = targets(metrics)
        metrics["capabilities"] = capabilities(metrics["targets"])
        metrics["sizes_mb"] = {"detector": _size_mb(det_dir), "shan": _size_mb(best)}
        metrics["timings_s"] = timer.times
        install(args, best, det_dir, data_dir, examples, metrics)
    metrics["timings_s"]["total"] = round(time.time() - timer.t_start, 1)
    write_text(
        Path(args.ckpt_dir) / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n"
    )
    write_model_card(metrics, Path(args.ckpt_dir) / "README.md")
    print(
        f"\nwrote {args.ckpt_dir}/shan, {args.ckpt_dir}/detector, {args.assets_dir}/examples.json"
    )
    print("timings (s):", json.dumps(metrics["timings_s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
