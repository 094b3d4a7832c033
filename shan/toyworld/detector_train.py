"""Training the toy-world detector (:class:`shan.detect.toy.ToyDetector`) on toy-world splits.

The detector itself (model, loading, extraction) lives in :mod:`shan.detect.toy`; this module holds
what needs the toy world's data: the detection dataset (with mosaics and augmentation) and the
training loop.

Augmentation (all off by default; the reproduce script's presets turn them on):

* ``hflip`` — mirror at random (shapes are left-right symmetric, boxes follow);
* ``brightness`` / ``contrast`` — scale the whole picture's brightness / contrast by a random
  factor in ``[1 - x, 1 + x]`` (never hue: the colour labels must stay true);
* ``tone_weights`` — sample scenes by their background tone (e.g. ``{"dark": 2}`` shows dark
  scenes twice as often), for the backgrounds where shapes are hardest to see.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.models.detection import FasterRCNN
from torchvision.transforms.functional import pil_to_tensor
from torchvision.transforms.v2 import functional as TF

from shan.detect.toy import DetectorError, ToyDetector, ToyDetectorConfig
from shan.device import resolve_device
from shan.toyworld.dataset import load_annotations
from shan.toyworld.world import COLOURS, SHAPES


class ToyDetectionDataset(torch.utils.data.Dataset):
    """A toy-world split as detection targets: ``(image (3,H,W) uint8, target dict)``.

    ``target``: ``boxes`` (G, 4) float xyxy, ``labels`` (G,) int64 shape id + 1, ``attributes``
    (G,) int64 colour id. ``hflip`` mirrors images at random (shapes are left-right symmetric).

    ``brightness`` / ``contrast``: random jitter of the whole picture (see the module docstring).
    ``normalise_tiles``: each scene is brought to one channel mean and spread before tiling, so a
    detector with ``per_image_norm`` (which normalises the whole mosaic) sees every tile as it
    sees a single image at inference.

    ``mosaic = m > 1`` tiles ``m × m`` random scenes into one ``(3, m·S, m·S)`` training image
    (``len`` shrinks by ``m²``). torchvision's detector pays a fixed Python/launch cost per image
    in the RPN and RoI sampling; on a GPU that cost, not arithmetic, bounds training speed on
    small images, so mosaics train ``≈ m²`` times more scenes per second.
    """

    def __init__(
        self,
        split_dir: str | Path,
        classes: Sequence[str],
        colours: Sequence[str],
        hflip: bool = True,
        mosaic: int = 1,
        brightness: float = 0.0,
        contrast: float = 0.0,
        normalise_tiles: bool = False,
    ) -> None:
        if mosaic < 1:
            raise DetectorError(f"mosaic must be >= 1, got {mosaic}")
        self.root = Path(split_dir)
        self.ann = load_annotations(self.root)
        self.cls = {c: i + 1 for i, c in enumerate(classes)}
        self.col = {c: i for i, c in enumerate(colours)}
        self.hflip = hflip
        self.mosaic = mosaic
        self.normalise_tiles = normalise_tiles
        if not (0.0 <= brightness < 1.0 and 0.0 <= contrast < 1.0):
            raise DetectorError(
                f"brightness/contrast jitter must lie in [0, 1), got {brightness}/{contrast}"
            )
        self.brightness, self.contrast = brightness, contrast

    def tone_of(self, i: int) -> str:
        """The background tone of training image ``i`` (``""`` for a world without tones)."""
        return str(self.ann["images"][i].get("background", {}).get("tone", ""))

    def _jitter(self, img: torch.Tensor) -> torch.Tensor:
        if self.brightness > 0:
            f = 1.0 + self.brightness * (2 * float(torch.rand(())) - 1)
            img = TF.adjust_brightness(img, f)
        if self.contrast > 0:
            f = 1.0 + self.contrast * (2 * float(torch.rand(())) - 1)
            img = TF.adjust_contrast(img, f)
        return img

    def __len__(self) -> int:
        return len(self.ann["images"]) // (self.mosaic**2)

    def _one(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = self.ann["images"][i]
        img = self._jitter(pil_to_tensor(Image.open(self.root / rec["file"]).convert("RGB")))
        if self.normalise_tiles:
            img = _normalise_tile(img)
        boxes = torch.tensor([o["box"] for o in rec["objects"]], dtype=torch.float32).reshape(-1, 4)
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        target = {
            "boxes": boxes,
            "labels": torch.tensor(
                [self.cls[o["shape"]] for o in rec["objects"]], dtype=torch.int64
            ),
            "attributes": torch.tensor(
                [self.col[o["colour"]] for o in rec["objects"]], dtype=torch.int64
            ),
        }
        return img, target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.mosaic
        if m == 1:
            return self._one(i)
        # Tile i's own block of scenes, but in a random order, so each epoch sees new neighbours.
        n = len(self.ann["images"])
        idx = [(i * m * m + j) % n for j in range(m * m)]
        idx = [idx[j] for j in torch.randperm(m * m).tolist()]
        tiles = [self._one(j) for j in idx]
        h, w = tiles[0][0].shape[-2:]
        canvas = torch.zeros(3, m * h, m * w, dtype=torch.uint8)
        parts: dict[str, list[torch.Tensor]] = {"boxes": [], "labels": [], "attributes": []}
        for t, (img, tgt) in enumerate(tiles):
            if img.shape[-2:] != (h, w):
                raise DetectorError("mosaic training needs images of one size (toy-world scenes)")
            r, c = divmod(t, m)
            canvas[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = img
            parts["boxes"].append(tgt["boxes"] + torch.tensor([c * w, r * h, c * w, r * h]))
            parts["labels"].append(tgt["labels"])
            parts["attributes"].append(tgt["attributes"])
        return canvas, {k: torch.cat(v) for k, v in parts.items()}


def _normalise_tile(img: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` uint8 → the same picture with per-channel mean 128 and std 32 (uint8; ±4 std
    fit, so little is clipped)."""
    x = img.float()
    mean = x.mean(dim=(1, 2), keepdim=True)
    std = x.std(dim=(1, 2), keepdim=True).clamp_min(1.0)
    return ((x - mean) / std * 32.0 + 128.0).round_().clamp_(0, 255).to(torch.uint8)


def _set_training_scale(model: FasterRCNN, cfg: ToyDetectorConfig, mosaic: int) -> None:
    """Input size and per-image proposal / sampling budgets for ``mosaic × mosaic`` tiles."""
    side = cfg.image_size * mosaic
    model.transform.min_size = (side,)
    model.transform.max_size = side
    area = mosaic * mosaic
    model.rpn._pre_nms_top_n["training"] = 600 * area
    model.rpn._post_nms_top_n["training"] = 200 * area
    model.rpn.fg_bg_sampler.batch_size_per_image = 128 * min(area, 2)
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 128 * min(area, 2)


def _collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def train_detector(
    train_dir: str | Path,
    out_dir: str | Path | None = None,
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device = "auto",
    num_workers: int = 4,
    cfg: ToyDetectorConfig | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    mosaic: int = 1,
    brightness: float = 0.0,
    contrast: float = 0.0,
    tone_weights: Mapping[str, float] | None = None,
) -> ToyDetector:
    """Train a :class:`ToyDetector` from scratch on a toy-world split; optionally save it.

    AdamW with linear warm-up and cosine decay; losses: RPN objectness + box, shape classifier +
    box regression, colour (attribute) cross-entropy. ``max_steps`` caps the total iterations
    (smoke tests); ``max_seconds`` is a wall-clock budget: the cosine schedule then follows
    ``max(step / total, elapsed / max_seconds)`` and training stops when either reaches 1, so a
    slower machine trains fewer steps but still anneals. ``mosaic = m`` trains on ``m × m`` tiles
    of scenes (see :class:`ToyDetectionDataset`; ``batch_size`` counts tiled images), with
    proposal and sampling budgets scaled by ``m²``; inference settings are restored afterwards.
    ``brightness`` / ``contrast`` / ``tone_weights``: augmentation (module docstring). Everything
    that shaped the training is recorded in the detector's ``train_info`` (``training.json``).
    Returns the detector in eval mode.
    """
    torch.manual_seed(seed)
    dev = resolve_device(device)
    cfg = cfg or ToyDetectorConfig(classes=list(SHAPES), attributes=list(COLOURS))
    if not cfg.classes:
        cfg.classes = list(SHAPES)
    if not cfg.attributes:
        cfg.attributes = list(COLOURS)
    det = ToyDetector(cfg, device=dev)
    model = det.model
    ds = ToyDetectionDataset(
        train_dir,
        cfg.classes,
        cfg.attributes,
        mosaic=mosaic,
        brightness=brightness,
        contrast=contrast,
        normalise_tiles=cfg.per_image_norm and mosaic > 1,
    )
    if len(ds) == 0:
        raise DetectorError(f"too few training images in {train_dir} (mosaic {mosaic})")
    _set_training_scale(model, cfg, mosaic)
    sampler = None
    if tone_weights:
        # Weighted sampling (with replacement) of mosaic blocks by their first scene's tone.
        weights = [
            float(tone_weights.get(ds.tone_of(i * mosaic * mosaic), 1.0)) for i in range(len(ds))
        ]
        if min(weights) < 0 or sum(weights) <= 0:
            raise DetectorError(f"tone_weights must be >= 0 and not all 0, got {tone_weights}")
        sampler = torch.utils.data.WeightedRandomSampler(
            weights, len(ds), generator=torch.Generator().manual_seed(seed)
        )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate,
        drop_last=len(ds) > batch_size,
        pin_memory=dev.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=None if sampler is not None else torch.Generator().manual_seed(seed),
    )
    total = epochs * len(loader)
    if max_steps is not None:
        total = min(total, max_steps)
    warmup = min(200, max(1, total // 10))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.train()
    step, t0 = 0, time.time()
    done = False
    for epoch in range(epochs):
        agg: dict[str, torch.Tensor] = {}
        n_agg = 0
        for images, targets in loader:
            # Progress drives the schedule: steps, or wall-clock time when max_seconds is set.
            progress = step / max(1, total)
            if max_seconds is not None:
                progress = max(progress, (time.time() - t0) / max_seconds)
            if progress >= 1.0:
                done = True
                break
            scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            images = [im.to(dev, non_blocking=True).float().div_(255.0) for im in images]
            targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            for k, v in losses.items():
                agg[k] = agg.get(k, 0.0) + v.detach()
            n_agg += 1
            if step % 50 == 0 and not torch.isfinite(loss.detach()):  # one sync per 50 steps
                raise DetectorError(f"detector loss became {float(loss)} at step {step}")
        if n_agg:
            parts = " ".join(
                f"{k.replace('loss_', '')}={float(v) / n_agg:.3f}" for k, v in agg.items()
            )
            took = time.time() - t0
            log(f"detector epoch {epoch + 1}/{epochs} step {step} {parts} ({took:.0f}s)")
        if done:
            break
    _set_training_scale(model, cfg, 1)
    model.eval()
    det.train_info = {
        "steps": step,
        "seconds": round(time.time() - t0, 1),
        "batch_size": batch_size,
        "mosaic": mosaic,
        "scenes": step * batch_size * mosaic * mosaic,
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "max_seconds": max_seconds,
        "brightness": brightness,
        "contrast": contrast,
        "tone_weights": dict(tone_weights or {}),
    }
    log(f"detector: {step} steps of {batch_size} images in {time.time() - t0:.0f}s")
    if out_dir is not None:
        det.save_pretrained(out_dir)
    return det


__all__ = ["ToyDetectionDataset", "train_detector"]
