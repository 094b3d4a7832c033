"""Precomputed region features in the SCAN format.

A dataset ``name`` under ``root`` lives in ``<root>/<name>_precomp/`` with, per split:

* ``{split}_ims.npy`` — ``(N, k, D)`` float region features (memory-mapped, never fully loaded);
* ``{split}_caps.txt`` — ``5N`` UTF-8 lines, caption ``c`` belongs to image ``c // 5``;
* optional ``{split}_boxes.npy`` — ``(N, k, 4)`` float, pixel ``x1, y1, x2, y2``;
* optional ``{split}_nregions.npy`` — ``(N,)`` int, the number of valid (leading) regions of each
  image, ``1 <= n <= k`` (missing: all ``k`` regions are valid);
* optional ``{split}_ids.txt`` — ``N`` lines, an image id / file name per image.

Everything that cannot be read or does not fit together raises :class:`DataError` with the file
name and what is wrong, before any training or evaluation starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shan.data.vocab import TokenBatch, TransformerTextProcessor, Vocabulary
from shan.errors import ShanError

CAPS_PER_IMAGE = 5


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
    """

    feats: np.ndarray
    masks: np.ndarray
    captions: list[str]
    boxes: np.ndarray | None
    ids: list[str] | None
    nregions: np.ndarray
    path: Path
    split: str

    @property
    def n_images(self) -> int:
        return int(self.feats.shape[0])

    @property
    def img_dim(self) -> int:
        return int(self.feats.shape[2])

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
) -> SplitArrays:
    """:func:`load_split_arrays` for an explicit directory ``d`` holding ``{split}_ims.npy``."""
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
    captions = _read_lines(caps_path)
    if len(captions) != CAPS_PER_IMAGE * n:
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

    masks = np.arange(k)[None, :] < nregions[:, None]
    arrays = SplitArrays(feats, masks, captions, boxes, ids, nregions, d, split)
    if max_images is not None and max_images < n:
        if max_images < 1:
            raise DataError(f"max_images must be >= 1, got {max_images}")
        arrays = arrays.subset(0, max_images)
    return arrays


def write_precomp(
    out_dir: str | Path,
    split: str,
    feats: np.ndarray | torch.Tensor,
    captions: Sequence[str],
    boxes: np.ndarray | torch.Tensor | None = None,
    nregions: np.ndarray | Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    dtype: Any = np.float32,
) -> Path:
    """Write one split in the SCAN format into ``out_dir`` (the ``<name>_precomp`` directory).

    Args:
        out_dir: directory to write (created if needed).
        split: split name (file prefix).
        feats: ``(N, k, D)`` features; images with fewer regions are zero-padded and given
            ``nregions``.
        captions: ``5N`` captions, 5 per image in image order (newlines inside a caption are
            replaced by spaces).
        boxes: optional ``(N, k, 4)`` pixel ``xyxy``.
        nregions: optional ``(N,)`` valid regions per image.
        ids: optional ``N`` image ids.
        dtype: feature dtype on disk (float32 default; float16 halves the size).

    Returns:
        ``out_dir`` as a Path. The written split is validated by reading it back.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    f = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if f.ndim != 3:
        raise DataError(f"feats must be (N, k, D), got shape {f.shape}")
    n, k = f.shape[:2]
    caps = [str(c).replace("\r", " ").replace("\n", " ") for c in captions]
    if len(caps) != CAPS_PER_IMAGE * n:
        raise DataError(f"{len(caps)} captions for {n} images; expected {CAPS_PER_IMAGE * n}")
    np.save(out / f"{split}_ims.npy", np.ascontiguousarray(f, dtype=dtype))
    (out / f"{split}_caps.txt").write_text("".join(c + "\n" for c in caps), encoding="utf-8")
    if boxes is not None:
        b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
        if b.shape != (n, k, 4):
            raise DataError(f"boxes must have shape {(n, k, 4)}, got {b.shape}")
        np.save(out / f"{split}_boxes.npy", np.ascontiguousarray(b, dtype=np.float32))
    if nregions is not None:
        nr = np.asarray(nregions, dtype=np.int64)
        np.save(out / f"{split}_nregions.npy", nr)
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != n or any("\n" in i for i in ids):
            raise DataError(f"ids must be {n} single-line strings")
        (out / f"{split}_ids.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    # Validate what was written, so a bad nregions etc. fails here and not at training time.
    load_split_dir(out, split)
    return out


@dataclass
class PrecompItem:
    """One (image, caption) training pair.

    Attributes:
        features: ``(k, D)`` float32 region features.
        mask: ``(k,)`` bool, True for valid regions.
        caption: the caption text.
        image_index: index of the image in the split.
        caption_index: index of the caption in the split (``image_index == caption_index // 5``).
    """

    features: torch.Tensor
    mask: torch.Tensor
    caption: str
    image_index: int
    caption_index: int


@dataclass
class PrecompBatch:
    """A collated batch.

    Attributes:
        feats: ``(B, k, D)`` float32.
        masks: ``(B, k)`` bool.
        text: :class:`TokenBatch` of the ``B`` captions.
        image_index: ``(B,)`` int64.
        caption_index: ``(B,)`` int64.
    """

    feats: torch.Tensor
    masks: torch.Tensor
    text: TokenBatch
    image_index: torch.Tensor
    caption_index: torch.Tensor


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

    def __getitem__(self, index: int) -> PrecompItem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"caption index {index} out of range for {len(self)} captions")
        index = index % len(self)
        img = index // CAPS_PER_IMAGE
        feat = torch.from_numpy(np.array(self.feats[img], dtype=np.float32))
        mask = torch.arange(self.k) < int(self.nregions[img])
        return PrecompItem(feat, mask, self.captions[index], img, index)

    def collate(self, items: Sequence[PrecompItem]) -> PrecompBatch:
        """Stack items into a :class:`PrecompBatch` (captions encoded and padded together)."""
        return PrecompBatch(
            feats=torch.stack([it.features for it in items]),
            masks=torch.stack([it.mask for it in items]),
            text=self.text.encode_batch([it.caption for it in items], self.max_words),
            image_index=torch.tensor([it.image_index for it in items], dtype=torch.long),
            caption_index=torch.tensor([it.caption_index for it in items], dtype=torch.long),
        )


__all__ = [
    "CAPS_PER_IMAGE",
    "DataError",
    "PrecompBatch",
    "PrecompDataset",
    "PrecompItem",
    "SplitArrays",
    "load_split_arrays",
    "load_split_dir",
    "precomp_dir",
    "write_precomp",
]
