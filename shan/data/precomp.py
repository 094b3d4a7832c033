"""Precomputed region features in the SCAN format — the one module that reads and writes them.

A dataset ``name`` under ``root`` lives in ``<root>/<name>_precomp/`` with, per split:

* ``{split}_ims.npy`` — ``(N, k, D)`` float region features (memory-mapped, never fully loaded);
* ``{split}_caps.txt`` — ``5N`` UTF-8 lines, caption ``c`` belongs to image ``c // 5``;
* optional ``{split}_boxes.npy`` — ``(N, k, 4)`` float, pixel ``x1, y1, x2, y2``;
* optional ``{split}_nregions.npy`` — ``(N,)`` int, the number of valid (leading) regions of each
  image, ``1 <= n <= k`` (missing: all ``k`` regions are valid);
* optional ``{split}_ids.txt`` — ``N`` lines, an image id / file name per image;
* optional ``{split}_sizes.npy`` — ``(N, 2)`` int, each image's width and height;
* optional ``{split}_regions.json`` — ``N`` objects: the detector's labels, attributes and scores
  of each image's regions (:func:`read_regions`);
* optional ``{split}_failed.txt`` — ``path<TAB>reason`` of images an extraction skipped;
* optional ``{split}_negs.jsonl`` — typed hard-negative captions, one JSON line per caption of
  ``{split}_caps.txt`` (same order): a list of ``{"type": str, "text": str}``, possibly empty
  (:func:`write_negatives` / :func:`read_negatives`).

Writing (:func:`write_precomp`, or :class:`SplitWriter` to stream features of many images into a
memory map) checks everything before the first byte is written, writes every file through a
temporary name and a rename, and reads the split back. Everything that cannot be read or does not
fit together raises :class:`DataError` with the file name and what is wrong, before any training
or evaluation starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shan.data.vocab import TokenBatch, TransformerTextProcessor, Vocabulary, tokenize
from shan.errors import ShanError
from shan.files import atomic_path, read_json, temp_name
from shan.model.encoders import BoxError, normalize_boxes

CAPS_PER_IMAGE = 5
#: the optional per-split files :class:`SplitWriter` writes (suffix after ``{split}_``)
OPTIONAL_FILES = ("boxes.npy", "nregions.npy", "ids.txt", "sizes.npy", "regions.json", "failed.txt")


class DataError(ShanError, ValueError):
    """Missing or malformed precomputed data (the message names the file and the problem)."""


def precomp_dir(root: str | Path, name: str) -> Path:
    """``<root>/<name>_precomp``."""
    return Path(root) / f"{name}_precomp"


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a .npy array: {e}") from None


def _read_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path} line {line} is not valid UTF-8") from None
    # One caption per line; a trailing newline does not add an empty caption.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


@dataclass
class SplitArrays:
    """All images and captions of one split.

    Attributes:
        feats: ``(N, k, D)`` float array (a read-only memory map when loaded with ``mmap``).
        masks: ``(N, k)`` bool, True for valid regions.
        captions: ``5N`` caption strings; caption ``c`` belongs to image ``c // 5``.
        boxes: ``(N, k, 4)`` or None.
        ids: ``N`` image ids or None.
        nregions: ``(N,)`` int64, valid regions per image.
        path: the ``<name>_precomp`` directory.
        split: the split name.
        sizes: ``(N, 2)`` image width and height, or None.
    """

    feats: np.ndarray
    masks: np.ndarray
    captions: list[str]
    boxes: np.ndarray | None
    ids: list[str] | None
    nregions: np.ndarray
    path: Path
    split: str
    sizes: np.ndarray | None = None

    @property
    def n_images(self) -> int:
        return int(self.feats.shape[0])

    @property
    def img_dim(self) -> int:
        return int(self.feats.shape[2])

    def normalized_boxes(self) -> np.ndarray:
        """``(N, k, 4)`` float32 boxes as fractions of each image's width / height (the geometry
        input of a model with ``use_geometry``; :func:`shan.model.encoders.normalize_boxes`).

        Raises:
            DataError: the split has no ``{split}_boxes.npy`` or no ``{split}_sizes.npy``, or they
                cannot be normalised.
        """
        where = f"{self.path}/{self.split}"
        if self.boxes is None or self.sizes is None:
            missing = f"{self.split}_boxes.npy" if self.boxes is None else f"{self.split}_sizes.npy"
            raise DataError(
                f"{where}: no {missing}, but the model uses region geometry (use_geometry); "
                "extract the features with shan-extract, which writes boxes and image sizes"
            )
        try:
            return normalize_boxes(np.asarray(self.boxes), np.asarray(self.sizes)).numpy()
        except BoxError as e:
            raise DataError(f"{where}_boxes.npy / _sizes.npy: {e}") from None

    def subset(self, start: int, stop: int) -> SplitArrays:
        """Images ``start:stop`` and their ``5 × (stop - start)`` captions."""
        c0, c1 = CAPS_PER_IMAGE * start, CAPS_PER_IMAGE * stop
        return SplitArrays(
            feats=self.feats[start:stop],
            masks=self.masks[start:stop],
            captions=self.captions[c0:c1],
            boxes=None if self.boxes is None else self.boxes[start:stop],
            ids=None if self.ids is None else self.ids[start:stop],
            nregions=self.nregions[start:stop],
            path=self.path,
            split=self.split,
            sizes=None if self.sizes is None else self.sizes[start:stop],
        )


def load_split_arrays(
    root: str | Path,
    name: str,
    split: str,
    img_dim: int | None = None,
    max_images: int | None = None,
    mmap: bool = True,
) -> SplitArrays:
    """Read and validate one split (features memory-mapped).

    Args:
        root: data root; files are read from ``<root>/<name>_precomp/``.
        name: dataset name, e.g. ``"f30k"``, ``"coco"``.
        split: ``"train"``, ``"dev"``, ``"test"``, ``"testall"``, ...
        img_dim: expected feature size ``D`` (the model's ``img_dim``); checked when given.
        max_images: keep only the first this many images (and their captions).
        mmap: memory-map the features instead of reading them into RAM.

    Raises:
        DataError: missing/unreadable files, wrong shapes, caption count ≠ 5 × images, ``nregions``
            out of ``[1, k]``, an empty split, or a feature size other than ``img_dim``.
    """
    d = precomp_dir(root, name)
    if not d.is_dir():
        raise DataError(f"dataset directory not found: {d} (expected <root>/<name>_precomp/)")
    return load_split_dir(d, split, img_dim=img_dim, max_images=max_images, mmap=mmap)


def load_split_dir(
    d: str | Path,
    split: str,
    img_dim: int | None = None,
    max_images: int | None = None,
    mmap: bool = True,
    require_captions: bool = True,
) -> SplitArrays:
    """:func:`load_split_arrays` for an explicit directory ``d`` holding ``{split}_ims.npy``.

    ``require_captions=False`` reads a split extracted without captions (``captions == []``).
    """
    d = Path(d)
    if not d.is_dir():
        raise DataError(f"dataset directory not found: {d}")
    ims_path = d / f"{split}_ims.npy"
    if not ims_path.is_file():
        have = sorted(p.name[: -len("_ims.npy")] for p in d.glob("*_ims.npy"))
        raise DataError(
            f"missing file: {ims_path} (splits present in {d}: {', '.join(have) or 'none'})"
        )
    feats = _load_npy(ims_path, mmap)
    if feats.ndim != 3:
        raise DataError(
            f"{ims_path}: expected a 3-d array (images, regions, feature), got shape {feats.shape}"
        )
    if not np.issubdtype(feats.dtype, np.floating):
        raise DataError(f"{ims_path}: expected float features, got dtype {feats.dtype}")
    n, k, dim = feats.shape
    if n == 0 or k == 0:
        raise DataError(f"{ims_path}: empty split (shape {feats.shape})")
    if img_dim is not None and dim != img_dim:
        raise DataError(
            f"{ims_path}: features have size {dim} but the model expects img_dim={img_dim} "
            "(features from another detector, or the wrong config?)"
        )
    caps_path = d / f"{split}_caps.txt"
    captions = _read_lines(caps_path) if require_captions or caps_path.is_file() else []
    if (require_captions or captions) and len(captions) != CAPS_PER_IMAGE * n:
        raise DataError(
            f"{caps_path}: {len(captions)} captions for {n} images; expected exactly "
            f"{CAPS_PER_IMAGE} per image ({CAPS_PER_IMAGE * n}); caption c belongs to image c // 5"
        )

    boxes = None
    boxes_path = d / f"{split}_boxes.npy"
    if boxes_path.is_file():
        boxes = _load_npy(boxes_path, mmap)
        if boxes.shape != (n, k, 4):
            raise DataError(f"{boxes_path}: expected shape {(n, k, 4)}, got {boxes.shape}")

    nreg_path = d / f"{split}_nregions.npy"
    if nreg_path.is_file():
        nreg = _load_npy(nreg_path, mmap=False)
        if nreg.shape != (n,) or not np.issubdtype(nreg.dtype, np.integer):
            raise DataError(
                f"{nreg_path}: expected {n} integers (one per image), got {nreg.dtype} {nreg.shape}"
            )
        bad = np.flatnonzero((nreg < 1) | (nreg > k))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{nreg_path}: image {i} has nregions={int(nreg[i])}, outside [1, {k}] "
                f"({bad.size} image(s) out of range)"
            )
        nregions = nreg.astype(np.int64)
    else:
        nregions = np.full((n,), k, dtype=np.int64)

    ids = None
    ids_path = d / f"{split}_ids.txt"
    if ids_path.is_file():
        ids = _read_lines(ids_path)
        if len(ids) != n:
            raise DataError(f"{ids_path}: {len(ids)} ids for {n} images")

    sizes = None
    sizes_path = d / f"{split}_sizes.npy"
    if sizes_path.is_file():
        sizes = _load_npy(sizes_path, mmap=False)
        if sizes.shape != (n, 2):
            raise DataError(f"{sizes_path}: expected shape {(n, 2)}, got {sizes.shape}")

    masks = np.arange(k)[None, :] < nregions[:, None]
    arrays = SplitArrays(feats, masks, captions, boxes, ids, nregions, d, split, sizes)
    if max_images is not None and max_images < n:
        if max_images < 1:
            raise DataError(f"max_images must be >= 1, got {max_images}")
        arrays = arrays.subset(0, max_images)
    return arrays


def _as_array(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _one_line(text: Any) -> str:
    return str(text).replace("\r", " ").replace("\n", " ")


class SplitWriter:
    """Write one split: stream features into :attr:`ims`, then :meth:`finish` with the rest.

    The features go to a memory map under a temporary name (so ``N × k × D`` never has to fit in
    RAM); :meth:`finish` checks the other parts against ``(N, k)``, writes each through a
    temporary name and a rename, removes optional files a former write of this split left behind,
    and reads the split back. Used as a context manager, an exception discards the half-written
    features and leaves any earlier version of the split as it was.

    Args:
        out_dir: the ``<name>_precomp`` directory (created).
        split: file prefix.
        n, k, dim: images, regions per image (padded), feature size.
        dtype: feature dtype on disk (float32; float16 halves the size).

    Attributes:
        ims: ``(N, k, D)`` writable memory map; rows not written stay zero.
    """

    def __init__(
        self, out_dir: str | Path, split: str, n: int, k: int, dim: int, dtype: Any = np.float32
    ) -> None:
        if min(n, k, dim) < 1:
            raise DataError(f"a split needs images, regions and features, got N={n} k={k} D={dim}")
        if not split or "/" in split or split.startswith("."):
            raise DataError(f"bad split name {split!r}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.split, self.n, self.k = split, int(n), int(k)
        self._tmp = temp_name(self.out / f"{split}_ims.npy")
        self.ims = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=dtype, shape=(n, k, dim))

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        """Drop the half-written features (the split's earlier files are untouched)."""
        self.ims = None  # type: ignore[assignment]
        self._tmp.unlink(missing_ok=True)

    def _path(self, suffix: str) -> Path:
        return self.out / f"{self.split}_{suffix}"

    def finish(
        self,
        captions: Sequence[str] | None = None,
        boxes: Any = None,
        nregions: Any = None,
        ids: Sequence[str] | None = None,
        sizes: Any = None,
        regions: Sequence[Mapping[str, Any]] | None = None,
        failed: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, Path]:
        """Write the split's other files and put the features in place.

        Args:
            captions: ``5N`` captions, 5 per image in image order (newlines inside a caption are
                replaced by spaces); None: no ``{split}_caps.txt``.
            boxes: ``(N, k, 4)`` pixel ``xyxy``. nregions: ``(N,)`` valid regions per image.
            ids: ``N`` image ids. sizes: ``(N, 2)`` width and height. regions: ``N`` objects
                (labels, attributes, scores of each image's regions).
            failed: ``(path, reason)`` of skipped images (written only when non-empty).

        Returns:
            ``{"ims": path, "caps": ..., ...}`` of the files written.

        Raises:
            DataError: a part that does not fit ``(N, k)`` (nothing is written then), or a split
                that does not read back.
        """
        n, k = self.n, self.k
        parts: dict[str, Any] = {}
        if captions is not None:
            caps = [_one_line(c) for c in captions]
            if len(caps) != CAPS_PER_IMAGE * n:
                raise DataError(
                    f"{len(caps)} captions for {n} images; expected {CAPS_PER_IMAGE * n}"
                )
            parts["caps.txt"] = "".join(c + "\n" for c in caps)
        if boxes is not None:
            b = _as_array(boxes)
            if b.shape != (n, k, 4):
                raise DataError(f"boxes must have shape {(n, k, 4)}, got {b.shape}")
            parts["boxes.npy"] = np.ascontiguousarray(b, dtype=np.float32)
        if nregions is not None:
            nr = _as_array(nregions)
            if nr.shape != (n,) or not np.issubdtype(nr.dtype, np.integer):
                raise DataError(f"nregions must be {n} integers, got {nr.dtype} {nr.shape}")
            bad = np.flatnonzero((nr < 1) | (nr > k))
            if bad.size:
                raise DataError(
                    f"nregions: image {int(bad[0])} has {int(nr[bad[0]])}, outside [1, {k}]"
                )
            parts["nregions.npy"] = nr.astype(np.int64)
        if ids is not None:
            id_list = [str(i) for i in ids]
            if len(id_list) != n or any("\n" in i or "\r" in i for i in id_list):
                raise DataError(f"ids must be {n} single-line strings")
            parts["ids.txt"] = "".join(i + "\n" for i in id_list)
        if sizes is not None:
            sz = _as_array(sizes)
            if sz.shape != (n, 2):
                raise DataError(f"sizes must have shape {(n, 2)}, got {sz.shape}")
            parts["sizes.npy"] = sz.astype(np.int64)
        if regions is not None:
            if len(regions) != n:
                raise DataError(f"regions must describe {n} images, got {len(regions)}")
            parts["regions.json"] = json.dumps(list(regions))
        if failed:
            parts["failed.txt"] = "".join(f"{_one_line(a)}\t{_one_line(b)}\n" for a, b in failed)

        self.ims.flush()
        self.ims = None  # type: ignore[assignment]  # close the memory map before the rename
        os.replace(self._tmp, self._path("ims.npy"))
        written = {"ims": self._path("ims.npy")}
        for suffix, value in parts.items():
            with atomic_path(self._path(suffix)) as tmp:
                if isinstance(value, np.ndarray):
                    np.save(tmp, value)
                else:
                    tmp.write_text(value, encoding="utf-8")
            written[suffix.split(".")[0]] = self._path(suffix)
        for suffix in (*OPTIONAL_FILES, "caps.txt"):  # what an earlier write left: not this split
            if suffix not in parts:
                self._path(suffix).unlink(missing_ok=True)
        # read back, so a split that does not fit together fails here, not at training time
        load_split_dir(self.out, self.split, require_captions=captions is not None)
        return written


def write_precomp(
    out_dir: str | Path,
    split: str,
    feats: np.ndarray | torch.Tensor,
    captions: Sequence[str] | None,
    boxes: np.ndarray | torch.Tensor | None = None,
    nregions: np.ndarray | Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    dtype: Any = np.float32,
    sizes: np.ndarray | Sequence[Sequence[int]] | None = None,
    regions: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write one split in the SCAN format into ``out_dir`` (the ``<name>_precomp`` directory).

    Args:
        out_dir: directory to write (created if needed).
        split: split name (file prefix).
        feats: ``(N, k, D)`` features; images with fewer regions are zero-padded and given
            ``nregions``.
        captions: ``5N`` captions, 5 per image in image order (newlines inside a caption are
            replaced by spaces), or None (no captions file).
        boxes: optional ``(N, k, 4)`` pixel ``xyxy``.
        nregions: optional ``(N,)`` valid regions per image.
        ids: optional ``N`` image ids.
        dtype: feature dtype on disk (float32 default; float16 halves the size).
        sizes, regions: optional, see :meth:`SplitWriter.finish`.

    Returns:
        ``out_dir`` as a Path. The written split is validated by reading it back; parts that do
        not fit raise :class:`DataError` before anything is written.
    """
    f = _as_array(feats)
    if f.ndim != 3:
        raise DataError(f"feats must be (N, k, D), got shape {f.shape}")
    with SplitWriter(out_dir, split, *f.shape, dtype=dtype) as w:
        w.ims[:] = f
        w.finish(captions, boxes, nregions, ids, sizes, regions)
    return Path(out_dir)


def read_regions(folder: str | Path, split: str) -> list[dict[str, Any]] | None:
    """The ``{split}_regions.json`` of ``folder`` (one object per image), or None without one.

    Raises:
        DataError: not a JSON list of objects.
    """
    path = Path(folder) / f"{split}_regions.json"
    if not path.is_file():
        return None
    data = read_json(path, DataError)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list with one object per image")
    return data


# --------------------------------------------------------------------------------------------
# typed hard negatives


def _negs_path(folder: str | Path, split: str) -> Path:
    return Path(folder) / f"{split}_negs.jsonl"


def _check_negatives(line: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(line, list):
        raise DataError(f"{where}: expected a JSON list of {{type, text}} objects")
    for rec in line:
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("type"), str)
            or not isinstance(rec.get("text"), str)
        ):
            raise DataError(f"{where}: every negative must be {{'type': str, 'text': str}}")
    return line


def write_negatives(
    folder: str | Path, split: str, negs: Sequence[Sequence[Mapping[str, str]]]
) -> Path:
    """Write ``{split}_negs.jsonl``: for caption ``c`` of ``{split}_caps.txt``, line ``c`` is the
    JSON list of its hard negatives ``{"type": str, "text": str}`` (possibly empty).

    Newlines inside a text are replaced by spaces (captions are lines). Returns the file's path.

    Raises:
        DataError: a malformed record, or (when ``{split}_caps.txt`` exists) a number of lines
            other than its number of captions. Nothing is written then.
    """
    lines = []
    for c, line in enumerate(negs):
        recs = _check_negatives(
            [dict(r) for r in line] if isinstance(line, (list, tuple)) else line,
            f"negatives of caption {c}",
        )
        for r in recs:
            r["text"] = _one_line(r["text"])
        lines.append(json.dumps(recs, ensure_ascii=False))
    caps = Path(folder) / f"{split}_caps.txt"
    if caps.is_file() and len(_read_lines(caps)) != len(lines):
        raise DataError(
            f"{len(lines)} lines of negatives but {caps} has {len(_read_lines(caps))} captions"
        )
    path = _negs_path(folder, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_negatives(folder: str | Path, split: str) -> list[list[dict[str, str]]] | None:
    """The typed hard negatives of every caption of ``{split}_caps.txt`` (same order), or None
    when ``folder`` has no ``{split}_negs.jsonl``.

    Raises:
        DataError: a line that is not a list of ``{"type": str, "text": str}``, or a number of
            lines other than the number of captions.
    """
    path = _negs_path(folder, split)
    if not path.is_file():
        return None
    lines = _read_lines(path)
    out = []
    for i, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {i} is not JSON: {e.msg}") from None
        out.append(_check_negatives(value, f"{path} line {i}"))
    caps = _read_lines(Path(folder) / f"{split}_caps.txt")
    if len(caps) != len(out):
        raise DataError(
            f"{path} has {len(out)} lines but {split}_caps.txt has {len(caps)} captions "
            "(one line of negatives per caption, in the same order)"
        )
    return out


#: ``PrecompDataset(negatives=...)``: where each caption's hard negatives come from
NEGATIVE_SOURCES = ("none", "typed", "swap", "auto")


def swap_negatives(caption: str, seed: int = 0) -> list[dict[str, str]]:
    """Word-swap negatives of any caption (:func:`shan.data.perturb.perturb`, every kind, at most
    one per kind) as ``{"type", "text"}`` records, like the typed negatives of
    ``{split}_negs.jsonl``. Deterministic for a given ``seed``; ``[]`` when no word can be swapped.
    """
    from shan.data.perturb import perturb  # imported when used: text-only, no scene needed

    return [{"type": p.kind, "text": p.text} for p in perturb(caption, seed=seed)]


@dataclass
class PrecompItem:
    """One (image, caption) training pair.

    Attributes:
        features: ``(k, D)`` float32 region features.
        mask: ``(k,)`` bool, True for valid regions.
        caption: the caption text.
        image_index: index of the image in the split.
        caption_index: index of the caption in the split (``image_index == caption_index // 5``).
        boxes: ``(k, 4)`` float32 boxes normalised to ``[0, 1]``, or None (dataset without boxes).
        negatives: up to ``K`` hard-negative captions drawn for this step (none by default).
        negative_types: the type of each of ``negatives``.
    """

    features: torch.Tensor
    mask: torch.Tensor
    caption: str
    image_index: int
    caption_index: int
    boxes: torch.Tensor | None = None
    negatives: list[str] = field(default_factory=list)
    negative_types: list[str] = field(default_factory=list)


@dataclass
class PrecompBatch:
    """A collated batch.

    Attributes:
        feats: ``(B, k, D)`` float32.
        masks: ``(B, k)`` bool.
        text: :class:`TokenBatch` of the ``B`` captions.
        image_index: ``(B,)`` int64.
        caption_index: ``(B,)`` int64.
        boxes: ``(B, k, 4)`` float32 normalised boxes, or None.
        negatives: :class:`TokenBatch` of ``B * K`` hard-negative captions (caption ``b``'s at rows
            ``b*K .. b*K+K-1``; a missing one is a copy of the caption, masked out), or None.
        neg_mask: ``(B, K)`` bool, True for real negatives, or None.
        neg_types: ``B`` lists of ``K`` type names ("" for a missing one), or None.
    """

    feats: torch.Tensor
    masks: torch.Tensor
    text: TokenBatch
    image_index: torch.Tensor
    caption_index: torch.Tensor
    boxes: torch.Tensor | None = None
    negatives: TokenBatch | None = None
    neg_mask: torch.Tensor | None = None
    neg_types: list[list[str]] | None = None


class PrecompDataset(Dataset):
    """One item per caption: ``(image features, mask, caption, image index, caption index)``.

    Features are memory-mapped and opened lazily in each worker process, so the dataset pickles
    cheaply for ``DataLoader(num_workers > 0)``. Use :meth:`collate` as the loader's ``collate_fn``.

    Args:
        root, name, split: the data location (``<root>/<name>_precomp/{split}_*``).
        text: the caption processor (:class:`Vocabulary` or :class:`TransformerTextProcessor`).
        max_words: captions are truncated to this many tokens.
        img_dim: expected feature size; a mismatch raises :class:`DataError`.
        max_images: use only the first this many images.
        boxes: give every item its regions' boxes normalised by the image size (for a model with
            ``use_geometry``); needs ``{split}_boxes.npy`` and ``{split}_sizes.npy``.
        negatives: hard negatives per caption (:data:`NEGATIVE_SOURCES`): ``"typed"`` from
            ``{split}_negs.jsonl``, ``"swap"`` made by word swaps (:func:`swap_negatives`, for
            any captions, e.g. Flickr30K / COCO), ``"auto"`` typed where the file exists and swap
            otherwise, ``"none"``.
        negatives_per_caption: ``K``, how many are drawn (without replacement, anew at every
            access) per item; a caption with fewer gives all it has.
        negative_types: use only negatives of these types (None: all).
        seed: seeds the word swaps (negative ``c`` of caption ``c`` uses ``seed + c``).

    A negative with a word the (GRU) vocabulary does not know is dropped: an ``<unk>`` that only
    ever appears in false captions would be a shortcut, not a lesson.
    """

    def __init__(
        self,
        root: str | Path,
        name: str,
        split: str,
        text: Vocabulary | TransformerTextProcessor,
        max_words: int = 64,
        img_dim: int | None = None,
        max_images: int | None = None,
        boxes: bool = False,
        negatives: str = "none",
        negatives_per_caption: int = 1,
        negative_types: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        arrays = load_split_arrays(root, name, split, img_dim=img_dim, max_images=max_images)
        self.root, self.name, self.split = str(root), name, split
        self.text = text
        self.max_words = int(max_words)
        self.captions = arrays.captions
        self.nregions = arrays.nregions
        self.n_images = arrays.n_images
        self.k = int(arrays.feats.shape[1])
        self.img_dim = arrays.img_dim
        self._ims_path = arrays.path / f"{split}_ims.npy"
        self._feats: np.ndarray | None = None
        self.boxes: np.ndarray | None = arrays.normalized_boxes() if boxes else None
        if negatives not in NEGATIVE_SOURCES:
            raise DataError(f"negatives must be one of {NEGATIVE_SOURCES}, got {negatives!r}")
        if int(negatives_per_caption) < 1:
            raise DataError(f"negatives_per_caption must be >= 1, got {negatives_per_caption}")
        self.negatives_per_caption = int(negatives_per_caption)
        self.negative_types = None if negative_types is None else frozenset(negative_types)
        self.seed = int(seed)
        self._typed: list[list[dict[str, str]]] | None = None
        if negatives in ("typed", "auto"):
            typed = read_negatives(arrays.path, split)
            if typed is None and negatives == "typed":
                raise DataError(
                    f"{_negs_path(arrays.path, split)} not found: hard_negatives='typed' needs "
                    "the typed negatives of every caption ('swap' or 'auto' make word swaps)"
                )
            if typed is not None:
                self._typed = typed[: len(self.captions)]  # max_images keeps the first images
                negatives = "typed"
            else:
                negatives = "swap"
        self.negatives = negatives
        self._swap_cache: dict[int, list[dict[str, str]]] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_feats"] = None  # re-opened lazily in the worker
        return state

    @property
    def feats(self) -> np.ndarray:
        """``(N, k, D)`` memory-mapped features."""
        if self._feats is None:
            self._feats = _load_npy(self._ims_path, mmap=True)
        return self._feats

    def __len__(self) -> int:
        return len(self.captions)

    def _known(self, text: str) -> bool:
        if not isinstance(self.text, Vocabulary):
            return True  # word pieces: nothing is out of vocabulary
        return all(w in self.text for w in tokenize(text))

    def negatives_of(self, index: int) -> list[dict[str, str]]:
        """Every usable hard negative of caption ``index`` (``{"type", "text"}``; after the type
        filter and the vocabulary check), in a fixed order."""
        if self.negatives == "none":
            return []
        if self.negatives == "typed":
            cands = self._typed[index] if self._typed is not None else []
        else:
            cands = self._swap_cache.get(index)
            if cands is None:
                cands = swap_negatives(self.captions[index], seed=self.seed + index)
                self._swap_cache[index] = cands
        return [
            n
            for n in cands
            if (self.negative_types is None or n["type"] in self.negative_types)
            and n["text"].strip()
            and self._known(n["text"])
        ]

    def __getitem__(self, index: int) -> PrecompItem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"caption index {index} out of range for {len(self)} captions")
        index = index % len(self)
        img = index // CAPS_PER_IMAGE
        feat = torch.from_numpy(np.array(self.feats[img], dtype=np.float32))
        mask = torch.arange(self.k) < int(self.nregions[img])
        boxes = None if self.boxes is None else torch.from_numpy(np.array(self.boxes[img]))
        item = PrecompItem(feat, mask, self.captions[index], img, index, boxes)
        cands = self.negatives_of(index)
        if cands:
            k = min(self.negatives_per_caption, len(cands))
            pick = torch.randperm(len(cands))[:k].tolist()  # torch RNG: seeded per worker
            item.negatives = [cands[i]["text"] for i in pick]
            item.negative_types = [cands[i]["type"] for i in pick]
        return item

    def collate(self, items: Sequence[PrecompItem]) -> PrecompBatch:
        """Stack items into a :class:`PrecompBatch` (captions encoded and padded together)."""
        batch = PrecompBatch(
            feats=torch.stack([it.features for it in items]),
            masks=torch.stack([it.mask for it in items]),
            text=self.text.encode_batch([it.caption for it in items], self.max_words),
            image_index=torch.tensor([it.image_index for it in items], dtype=torch.long),
            caption_index=torch.tensor([it.caption_index for it in items], dtype=torch.long),
        )
        if items and items[0].boxes is not None:
            batch.boxes = torch.stack([it.boxes for it in items])  # type: ignore[misc]
        if self.negatives != "none":
            k = self.negatives_per_caption
            texts, types = [], []
            mask = torch.zeros(len(items), k, dtype=torch.bool)
            for b, it in enumerate(items):
                n = len(it.negatives)
                mask[b, :n] = True
                texts += it.negatives + [it.caption] * (k - n)  # fillers, masked out
                types.append(it.negative_types + [""] * (k - n))
            batch.negatives = self.text.encode_batch(texts, self.max_words)
            batch.neg_mask = mask
            batch.neg_types = types
        return batch


__all__ = [
    "CAPS_PER_IMAGE",
    "DataError",
    "NEGATIVE_SOURCES",
    "PrecompBatch",
    "PrecompDataset",
    "PrecompItem",
    "SplitArrays",
    "SplitWriter",
    "load_split_arrays",
    "load_split_dir",
    "precomp_dir",
    "read_negatives",
    "read_regions",
    "swap_negatives",
    "write_negatives",
    "write_precomp",
]
