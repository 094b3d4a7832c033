"""Region-feature extraction: images → SCAN-format precomputed files (CLI: :mod:`shan.cli.extract`).

Any :class:`~shan.detect.base.RegionExtractor` (the toy-world detector or Bottom-Up-Attention) is
run over a list of images and the results are written (by :class:`shan.data.precomp.SplitWriter`,
the one writer of the format) as::

    {split}_ims.npy       (N, k, D) float32, zero-padded to k = the most regions of any image
    {split}_boxes.npy     (N, k, 4) float32, x1 y1 x2 y2 in original pixels
    {split}_nregions.npy  (N,) int64, real regions per image
    {split}_sizes.npy     (N, 2) int64, image width and height
    {split}_ids.txt       N image ids (file names unless given)
    {split}_regions.json  per image: class labels, scores, attributes (for inspection and the demo)
    {split}_caps.txt      5 captions per image, in image order (only when captions are given)
    {split}_failed.txt    unreadable images that were skipped: ``path<TAB>reason``

Work is done in batches; each finished batch is saved as a shard under ``.{split}_parts/`` so an
interrupted run resumes where it stopped. Under ``torchrun`` every rank takes a strided slice of the
batches and rank 0 merges. Corrupt or unreadable images are reported and skipped, never fatal.

CLI::

    shan-extract --detector toy --weights checkpoints/detector --images DIR \\
        --out data/toy_precomp --split test --captions caps.txt --min-regions 2 --max-regions 8
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from shan.data.precomp import SplitWriter
from shan.detect.base import RegionExtractor, Regions
from shan.errors import ShanError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ExtractError(ShanError, ValueError):
    """Bad extraction arguments (missing images, captions that do not fit the images, ...)."""


def _load_image(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def _try_load(path: str | Path) -> tuple[Image.Image | None, str]:
    try:
        return _load_image(path), ""
    except Exception as e:  # noqa: BLE001 - any decoding failure means "skip this image"
        return None, f"{type(e).__name__}: {e}"


def list_images(source: str | Path) -> list[Path]:
    """A directory (its image files, sorted, recursively) or a text file with one path per line.

    Relative paths in a list file are resolved against the list file's directory.
    """
    src = Path(source)
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise ExtractError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {src}")
        return paths
    if src.is_file():
        try:
            text = src.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ExtractError(f"--images {src} is not a UTF-8 text file of image paths") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return [p if p.is_absolute() else src.parent / p for p in map(Path, lines)]
    raise ExtractError(f"--images {src} is neither a directory nor a list file")


def read_captions(path: str | Path, ids: Sequence[str], per_image: int = 5) -> list[list[str]]:
    """Captions per image from a ``.txt`` (``per_image`` lines per image, in order) or a ``.json``.

    JSON: ``{image_id_or_file_name: [captions]}`` or a list of caption lists in image order.
    """
    p = Path(path)
    if not p.is_file():
        raise ExtractError(f"captions file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExtractError(f"cannot read captions file {p}: {e}") from None
    if p.suffix.lower() == ".json":
        if isinstance(data, list) and all(isinstance(c, list) for c in data):
            caps = [[str(x) for x in c] for c in data]
        elif not isinstance(data, dict):
            raise ExtractError(f"{p}: expected {{image id: [captions]}} or a list of caption lists")
        else:
            missing = [i for i in ids if i not in data]
            if missing:
                raise ExtractError(
                    f"{p} has no captions for {len(missing)} images, e.g. {missing[0]}"
                )
            caps = [[str(x) for x in data[i]] for i in ids]
    else:
        lines = [ln.rstrip("\n") for ln in text.splitlines()]
        if len(lines) != per_image * len(ids):
            raise ExtractError(
                f"{p} has {len(lines)} lines; expected {per_image} per image × {len(ids)} images"
            )
        caps = [lines[i * per_image : (i + 1) * per_image] for i in range(len(ids))]
    if len(caps) != len(ids):
        raise ExtractError(f"{p} gives captions for {len(caps)} images, but there are {len(ids)}")
    return caps


def _manifest(paths: Sequence[str], batch_size: int, extractor: RegionExtractor) -> dict:
    h = hashlib.sha1("\n".join(paths).encode()).hexdigest()
    return {
        "n": len(paths),
        "batch_size": batch_size,
        "paths_sha1": h,
        "feature_dim": int(extractor.feature_dim),
        "extractor": type(extractor).__name__,
    }


def _shard_name(b: int) -> str:
    return f"batch_{b:07d}.pt"


def _save_shard(path: Path, start: int, results: list[tuple[int, Regions | None, str]]) -> None:
    counts, feats, boxes, sizes, kept, failed = [], [], [], [], [], []
    meta: list[dict[str, Any]] = []
    for idx, reg, err in results:
        if reg is None:
            failed.append([idx, err])
            continue
        kept.append(idx)
        counts.append(len(reg))
        feats.append(reg.features.detach().float().cpu())
        boxes.append(reg.boxes.detach().float().cpu().reshape(-1, 4))
        sizes.append(list(reg.image_size))
        meta.append(
            {
                "labels": list(reg.labels),
                "attributes": list(reg.attributes),
                "scores": [round(float(s), 4) for s in reg.scores.reshape(-1)],
                "attribute_scores": [round(float(s), 4) for s in reg.attribute_scores.reshape(-1)],
            }
        )
    shard = {
        "start": start,
        "kept": torch.tensor(kept, dtype=torch.long),
        "counts": torch.tensor(counts, dtype=torch.long),
        "features": torch.cat(feats) if feats else torch.zeros(0, 0),
        "boxes": torch.cat(boxes) if boxes else torch.zeros(0, 4),
        "sizes": torch.tensor(sizes, dtype=torch.long).reshape(-1, 2),
        "meta": json.dumps(meta),
        "failed": json.dumps(failed),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(shard, tmp)
    os.replace(tmp, path)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def extract_images(
    extractor: RegionExtractor,
    image_paths: Sequence[str | Path],
    out_dir: str | Path,
    split: str,
    batch_size: int = 16,
    captions: Sequence[Sequence[str]] | None = None,
    resume: bool = True,
    ids: Sequence[str] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    num_loaders: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``extractor`` over ``image_paths`` and write ``{split}_*`` precomp files in ``out_dir``.

    Args:
        extractor: any :class:`~shan.detect.base.RegionExtractor`.
        image_paths: the images, in the order the output rows will have.
        out_dir: the ``<name>_precomp`` directory (created).
        split: file prefix (``train``, ``dev``, ``test``, ...).
        batch_size: images per ``extractor.extract`` call (and per resumable shard).
        captions: optional captions per image (same order); written as ``{split}_caps.txt`` for the
            images that could be read. Each image must have the same number of captions.
        resume: keep finished shards of an earlier, interrupted run with the same inputs.
        ids: image ids for ``{split}_ids.txt`` (default: file names).
        rank, world_size: strided share of the batches (default: from ``torch.distributed``).
        num_loaders: threads decoding images while the extractor runs.
        progress: show a tqdm bar.

    Returns:
        ``{"n_images", "n_failed", "k", "feature_dim", "files": {...}}`` (on every rank; only rank 0
        writes the merged files, other ranks return after their shards are done).
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in image_paths]
    if not paths:
        raise ExtractError("no images to extract")
    if batch_size < 1:
        raise ExtractError(f"batch_size must be >= 1, got {batch_size}")
    ids = [Path(p).name for p in paths] if ids is None else [str(i) for i in ids]
    if len(ids) != len(paths):
        raise ExtractError(f"{len(ids)} ids for {len(paths)} images")
    if captions is not None:
        if len(captions) != len(paths):
            raise ExtractError(f"captions for {len(captions)} images, but {len(paths)} images")
        per = {len(c) for c in captions}
        if len(per) != 1 or 0 in per:
            raise ExtractError(f"every image needs the same number of captions, got {sorted(per)}")
        for c in captions:
            for cap in c:
                if "\n" in cap:
                    raise ExtractError(f"captions must be single lines, got {cap!r}")
    d_rank, d_world = _dist_info()
    rank = d_rank if rank is None else rank
    world = d_world if world_size is None else world_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = out / f".{split}_parts"
    manifest = _manifest(paths, batch_size, extractor)
    mpath = parts / "manifest.json"
    if rank == 0 and parts.exists():
        stale = mpath.is_file() and json.loads(mpath.read_text()) != manifest
        if not resume or stale:  # shards of other inputs (or a fresh start): drop them
            shutil.rmtree(parts)
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    parts.mkdir(parents=True, exist_ok=True)
    mpath.write_text(json.dumps(manifest))

    n_batches = (len(paths) + batch_size - 1) // batch_size
    mine = [b for b in range(n_batches) if b % world == rank]
    todo = [b for b in mine if not (parts / _shard_name(b)).is_file()]
    t0 = time.time()
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"extract {split}",
        unit="batch",
        disable=not progress or rank != 0,
    )

    def load(b: int) -> list[tuple[Image.Image | None, str]]:
        return list(pool.map(_try_load, paths[b * batch_size : (b + 1) * batch_size]))

    with ThreadPoolExecutor(max(1, num_loaders)) as pool, ThreadPoolExecutor(1) as prefetch:
        pending = prefetch.submit(load, todo[0]) if todo else None
        for k, b in enumerate(todo):
            loaded = pending.result() if pending is not None else []
            pending = prefetch.submit(load, todo[k + 1]) if k + 1 < len(todo) else None
            start = b * batch_size
            good = [(start + i, im) for i, (im, _) in enumerate(loaded) if im is not None]
            results: list[tuple[int, Regions | None, str]] = [
                (start + i, None, err) for i, (im, err) in enumerate(loaded) if im is None
            ]
            if good:
                try:
                    regs = extractor.extract([im for _, im in good])
                    results += [(i, r, "") for (i, _), r in zip(good, regs)]
                except Exception as e:  # noqa: BLE001 - fall back to one image at a time
                    for i, im in good:
                        try:
                            results.append((i, extractor.extract([im])[0], ""))
                        except Exception as e1:  # noqa: BLE001
                            results.append(
                                (i, None, f"extractor failed: {type(e1).__name__}: {e1}")
                            )
                    del e
            results = [  # SHAN needs at least one region per image
                (i, None, "the detector found no regions")
                if r is not None and len(r) == 0
                else (i, r, err)
                for i, r, err in results
            ]
            for i, reg, err in results:
                if reg is None:
                    print(f"warning: skipping {paths[i]}: {err}", file=sys.stderr)
            results.sort(key=lambda r: r[0])
            _save_shard(parts / _shard_name(b), start, results)
            bar.update(1)
    bar.close()

    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank != 0:
        return {"n_images": None, "rank": rank, "seconds": time.time() - t0}
    return _merge(
        out, parts, split, n_batches, paths, ids, captions, int(extractor.feature_dim), t0
    )


def _merge(
    out: Path,
    parts: Path,
    split: str,
    n_batches: int,
    paths: list[str],
    ids: list[str],
    captions: Sequence[Sequence[str]] | None,
    feature_dim: int,
    t0: float,
) -> dict[str, Any]:
    """Rank 0: read every shard (in order) and write the final ``{split}_*`` files."""
    missing = [b for b in range(n_batches) if not (parts / _shard_name(b)).is_file()]
    if missing:
        raise ExtractError(f"{len(missing)} batches of {split} are missing (e.g. {missing[0]})")
    # First pass: counts only (cheap), so the big array can be written through a memmap.
    kept: list[int] = []
    counts: list[int] = []
    failed: list[list] = []
    for b in range(n_batches):
        s = torch.load(parts / _shard_name(b), weights_only=True)
        kept += s["kept"].tolist()
        counts += s["counts"].tolist()
        failed += json.loads(s["failed"])
    n = len(kept)
    if n == 0:
        raise ExtractError(f"none of the {len(paths)} images of {split} could be read")
    k = max(1, max(counts))
    # the features stream shard by shard into a memory map; everything else is small
    with SplitWriter(out, split, n, k, feature_dim) as writer:
        boxes = np.zeros((n, k, 4), dtype=np.float32)
        sizes = np.zeros((n, 2), dtype=np.int64)
        meta: list[dict] = []
        row = 0
        for b in range(n_batches):
            s = torch.load(parts / _shard_name(b), weights_only=True)
            off = 0
            for j, c in enumerate(s["counts"].tolist()):
                if c:
                    writer.ims[row, :c] = s["features"][off : off + c].numpy()
                    boxes[row, :c] = s["boxes"][off : off + c].numpy()
                sizes[row] = s["sizes"][j].numpy()
                off += c
                row += 1
            meta += json.loads(s["meta"])
        written = writer.finish(
            captions=None if captions is None else [c.strip() for i in kept for c in captions[i]],
            boxes=boxes,
            nregions=np.asarray(counts, dtype=np.int64),
            ids=[ids[i] for i in kept],
            sizes=sizes,
            regions=meta,
            failed=[(paths[i], err) for i, err in failed],
        )
    files = dict(written)
    shutil.rmtree(parts, ignore_errors=True)
    return {
        "n_images": n,
        "n_failed": len(failed),
        "failed": [paths[i] for i, _ in failed],
        "k": k,
        "feature_dim": feature_dim,
        "seconds": time.time() - t0,
        "files": {key: str(v) for key, v in files.items()},
    }
