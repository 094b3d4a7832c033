"""Splits on disk: images, ``annotations.json`` (with the world's config), distractor images; CLI.

::

    python -m shan.toyworld --seed 0 --split-sizes 10000,1000,1000 --out data/toyworld

writes ``<out>/<split>/images/*.png`` and ``<out>/<split>/annotations.json`` for train/dev/test, and
``<out>/<split>/distractors/*.png`` for the splits in ``WorldConfig.distractor_image_splits``.
Image ``i`` of a split depends only on ``(seed, split, i, WorldConfig)``, not on the worker count.

An annotation record holds the scene (background, objects with visible boxes), its captions with
grounded tokens, per caption the typed negatives (``negatives[c]``: a list of ``{"type", "text"}``),
the legacy ``hard_negative`` (caption 0's colour swap) and the distractor scenes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from shan.toyworld.captions import make_captions
from shan.toyworld.negatives import COLOUR_SWAP, apply_change, make_distractors, typed_negatives
from shan.toyworld.world import (
    COLOURS,
    IMAGE_SIZE,
    PATTERNS,
    SHAPES,
    SIZES,
    SPLITS,
    Background,
    Scene,
    ToyObject,
    ToyWorldError,
    WorldConfig,
    image_seed,
    render_scene,
    sample_scene,
    update_layout,
)


def annotate_scene(scene: Scene, config: WorldConfig | None = None) -> Scene:
    """Fill ``scene``'s captions, typed negatives, hard negative and distractors (from its seed)."""
    cfg = config or WorldConfig()
    rng = random.Random(scene.seed + 2)
    scene.captions = make_captions(scene, rng, cfg)
    negs = [typed_negatives(c, scene, rng, cfg) for c in scene.captions]
    scene.negatives = [[n.to_record() for n in per] for per in negs]
    scene.hard_negative = None
    for n in negs[0]:
        if n.type == COLOUR_SWAP:
            scene.hard_negative = {
                "type": n.type,
                "text": n.caption.text,
                "tokens": n.caption.tokens,
                "source_caption": 0,
                "objects": n.objects,
            }
    scene.distractors = [
        d.to_record()
        for d in make_distractors(scene, scene.captions, random.Random(scene.seed + 3), cfg)
    ]
    return scene


def generate_scene(
    seed: int, config: WorldConfig | None = None, image_size: int | None = None
) -> tuple[Image.Image, Scene]:
    """Image + full ground truth (visible boxes, captions, negatives, distractors) from one seed."""
    cfg = config or WorldConfig()
    if image_size is not None and image_size != cfg.image_size:
        cfg = WorldConfig.from_dict({**cfg.to_dict(), "image_size": image_size})
    scene = sample_scene(seed, cfg)
    return render_scene(scene), annotate_scene(scene, cfg)


def scene_record(scene: Scene, image_id: str, file: str) -> dict[str, Any]:
    """The JSON record of a scene (everything except caption plans)."""
    return {
        "id": image_id,
        "file": file,
        "seed": scene.seed,
        "image_size": scene.image_size,
        "background": asdict(scene.background),
        "objects": [asdict(o) for o in scene.objects],
        "captions": [c.to_record() for c in scene.captions],
        "negatives": scene.negatives,
        "hard_negative": scene.hard_negative,
        "distractors": scene.distractors,
    }


def scene_from_record(record: dict[str, Any]) -> Scene:
    """The scene of an annotation record (objects and background; captions stay records)."""
    try:
        bg = Background(**record["background"])
        objects = [ToyObject(**o) for o in record["objects"]]
        scene = Scene(int(record["seed"]), bg, objects, int(record.get("image_size", IMAGE_SIZE)))
    except (KeyError, TypeError) as e:
        raise ToyWorldError(f"not a toy-world scene record: {e}") from e
    update_layout(scene)
    return scene


def distractor_scene(record: dict[str, Any], k: int) -> Scene:
    """Distractor ``k`` of an annotation record, as a scene."""
    return apply_change(scene_from_record(record), record["distractors"][k])


def _work(args: tuple[str, str, int, int, dict[str, Any], bool]) -> dict[str, Any]:
    out_dir, split, seed, index, cfg_dict, distractor_images = args
    cfg = WorldConfig.from_dict(cfg_dict)
    img, scene = generate_scene(image_seed(seed, split, index), cfg)
    name = f"{split}_{index:06d}"
    img.save(Path(out_dir) / "images" / f"{name}.png", compress_level=1)
    rec = scene_record(scene, name, f"images/{name}.png")
    if distractor_images:
        for k, d in enumerate(rec["distractors"]):
            file = f"distractors/{name}_{k}_{d['type']}.png"
            render_scene(apply_change(scene, d)).save(Path(out_dir) / file, compress_level=1)
            d["file"] = file
    return rec


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def generate_split(
    out_dir: str | Path,
    split: str,
    num_images: int,
    seed: int = 0,
    workers: int = 1,
    image_size: int | None = None,
    config: WorldConfig | None = None,
) -> Path:
    """Write ``num_images`` PNGs under ``out_dir/images`` and ``out_dir/annotations.json``.

    ``image_size`` overrides ``config.image_size``. Returns the annotations path. Uses ``workers``
    processes; the output does not depend on it.
    """
    if num_images < 0:
        raise ToyWorldError(f"num_images must be >= 0, got {num_images}")
    image_seed(seed, split, 0)  # checks the split name
    cfg = config or WorldConfig()
    if image_size is not None and image_size != cfg.image_size:
        cfg = WorldConfig.from_dict({**cfg.to_dict(), "image_size": image_size})
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with_distractors = split in cfg.distractor_image_splits
    if with_distractors:
        (out / "distractors").mkdir(exist_ok=True)
    cfg_dict = cfg.to_dict()
    jobs = [(str(out), split, seed, i, cfg_dict, with_distractors) for i in range(num_images)]
    if workers > 1 and num_images > 1:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers) as pool:
            records = pool.map(_work, jobs, chunksize=max(1, num_images // (workers * 8)))
    else:
        records = [_work(j) for j in jobs]
    ann = {
        "split": split,
        "seed": seed,
        "image_size": cfg.image_size,
        "world": cfg_dict,
        "shapes": list(SHAPES),
        "colours": list(COLOURS),
        "sizes": list(SIZES),
        "patterns": list(PATTERNS),
        "images": records,
    }
    path = out / "annotations.json"
    _atomic_write(path, json.dumps(ann))
    return path


def generate_dataset(
    out_dir: str | Path,
    sizes: dict[str, int],
    seed: int = 0,
    workers: int = 1,
    image_size: int | None = None,
    config: WorldConfig | None = None,
) -> dict[str, Path]:
    """Generate every split in ``sizes`` (e.g. ``{"train": 10000, "dev": 1000, "test": 1000}``)."""
    return {
        split: generate_split(Path(out_dir) / split, split, n, seed, workers, image_size, config)
        for split, n in sizes.items()
    }


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Read a split's ``annotations.json`` (a directory holding one is accepted too)."""
    p = Path(path)
    if p.is_dir():
        p = p / "annotations.json"
    if not p.is_file():
        raise ToyWorldError(f"no toy-world annotations at {p} (generate them with shan.toyworld)")
    try:
        ann = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ToyWorldError(f"{p} is not valid JSON: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ToyWorldError(f"cannot read {p}: {e}") from e
    if not isinstance(ann, dict) or not isinstance(ann.get("images"), list):
        raise ToyWorldError(f"{p} has no 'images' list; is it a toy-world annotation file?")
    return ann


def world_config(annotations: dict[str, Any]) -> WorldConfig:
    """The :class:`WorldConfig` a split was generated with (``classic`` for files without one)."""
    if "world" not in annotations:
        return WorldConfig.classic(image_size=int(annotations.get("image_size", IMAGE_SIZE)))
    return WorldConfig.from_dict(annotations["world"])


def caption_negatives(annotations: dict[str, Any]) -> list[list[dict[str, str]]]:
    """Per caption, in caption order (image-major, 5 per image), its ``{"type", "text"}`` list —
    the rows of ``{split}_negs.jsonl``."""
    out = []
    for rec in annotations["images"]:
        negs = rec.get("negatives") or []
        for c in range(len(rec["captions"])):
            out.append(list(negs[c]) if c < len(negs) else [])
    return out


def _parse_sizes(text: str) -> dict[str, int]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise ToyWorldError(f"--split-sizes wants TRAIN,DEV,TEST (three numbers), got {text!r}")
    try:
        sizes = dict(zip(SPLITS, (int(p) for p in parts)))
    except ValueError as e:
        raise ToyWorldError(f"--split-sizes wants integers, got {text!r}") from e
    if min(sizes.values()) < 0:
        raise ToyWorldError(f"--split-sizes wants counts >= 0, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m shan.toyworld", description="Generate toy-world splits."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=1200, help="total; split 80/10/10")
    p.add_argument(
        "--split-sizes", default=None, help="TRAIN,DEV,TEST image counts (overrides --num-images)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 1)))
    p.add_argument("--image-size", type=int, default=None, help="overrides the world's (256)")
    p.add_argument("--preset", default="toyworld2", help="toyworld2 (default) or classic")
    p.add_argument("--world-config", default=None, help="a JSON file of WorldConfig fields")
    args = p.parse_args(argv)
    try:
        cfg = WorldConfig.preset(args.preset)
        if args.world_config:
            try:
                fields = json.loads(Path(args.world_config).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ToyWorldError(f"cannot read --world-config {args.world_config}: {e}") from e
            if not isinstance(fields, dict):
                raise ToyWorldError("--world-config must hold a JSON object of WorldConfig fields")
            cfg = WorldConfig.from_dict({**cfg.to_dict(), **fields})
        if args.split_sizes:
            sizes = _parse_sizes(args.split_sizes)
        else:
            n_dev = n_test = args.num_images // 10
            sizes = {"train": args.num_images - n_dev - n_test, "dev": n_dev, "test": n_test}
        t0 = time.time()
        total = 0
        for split, path in generate_dataset(
            args.out, sizes, args.seed, args.workers, args.image_size, cfg
        ).items():
            total += sizes[split]
            print(f"{split}: {sizes[split]} images -> {path}")
        dt = time.time() - t0
        print(f"done in {dt:.1f}s ({total / max(dt, 1e-9):.1f} images/s, {args.workers} workers)")
    except (ToyWorldError, TypeError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{p.prog}: error: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "annotate_scene",
    "generate_scene",
    "scene_record",
    "scene_from_record",
    "distractor_scene",
    "generate_split",
    "generate_dataset",
    "load_annotations",
    "world_config",
    "caption_negatives",
    "main",
]
