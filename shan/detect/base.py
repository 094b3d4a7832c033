"""The one interface every region extractor implements (toy-world detector, Bottom-Up-Attention).

An extractor turns images into *regions*: boxes in the original image's pixel coordinates, one
feature vector per region (what SHAN's image encoder reads), and human-readable class / attribute
labels for the demo. SHAN only ever sees ``Regions.features`` (and a mask when padded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from PIL import Image


@dataclass
class Regions:
    """Detected regions of one image.

    Attributes:
        boxes: ``(R, 4)`` float, ``x1, y1, x2, y2`` in pixels of the *original* image.
        features: ``(R, D)`` float, the region features (``D = extractor.feature_dim``).
        scores: ``(R,)`` float, detection confidence of each region's class.
        labels: ``R`` class names.
        attributes: ``R`` attribute names (colour in the toy world; VG attributes for BUTD).
        attribute_scores: ``(R,)`` float, confidence of each attribute.
        image_size: ``(width, height)`` of the original image.
    """

    boxes: torch.Tensor
    features: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    attributes: list[str]
    attribute_scores: torch.Tensor
    image_size: tuple[int, int] = (0, 0)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> Regions:
        return Regions(
            boxes=self.boxes.to(device),
            features=self.features.to(device),
            scores=self.scores.to(device),
            labels=list(self.labels),
            attributes=list(self.attributes),
            attribute_scores=self.attribute_scores.to(device),
            image_size=self.image_size,
            extra=dict(self.extra),
        )


def stack_regions(
    regions: Sequence[Regions], with_boxes: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad several images' regions into SHAN's image input.

    Returns ``features (N, k, D)`` float32, zero-padded to ``k = max regions``, and ``mask (N, k)``
    bool, True for real regions (what :meth:`shan.model.SHAN.encode_images` takes). With
    ``with_boxes``, also ``boxes (N, k, 4)`` float32: each region's box as fractions of its
    image's ``image_size`` (:func:`shan.model.encoders.normalize_boxes`; padding rows zero), the
    geometry input of a model with ``use_geometry`` (``encode_images(feats, mask, boxes)``).

    Raises:
        shan.model.encoders.BoxError: ``with_boxes`` and an image without a positive
            ``image_size``.
    """
    k = max(len(r) for r in regions)
    dim = int(regions[0].features.shape[1])
    feats = torch.zeros(len(regions), k, dim)
    mask = torch.zeros(len(regions), k, dtype=torch.bool)
    for i, r in enumerate(regions):
        feats[i, : len(r)] = r.features.float()
        mask[i, : len(r)] = True
    if not with_boxes:
        return feats, mask
    from shan.model.encoders import normalize_boxes

    boxes = torch.zeros(len(regions), k, 4)
    for i, r in enumerate(regions):
        size = torch.tensor(r.image_size, dtype=torch.float32)
        boxes[i, : len(r)] = normalize_boxes(r.boxes.detach().float().cpu().reshape(-1, 4), size)
    return feats, mask, boxes


@runtime_checkable
class RegionExtractor(Protocol):
    """Image(s) -> :class:`Regions`. Implementations: ``shan.detect.toy``, ``shan.detect.butd``.

    ``min_regions`` / ``max_regions`` bound how many regions are returned per image (set both equal
    for a fixed count such as BUTD's k = 36). Fewer detections than ``min_regions`` are topped up
    with the next-best candidates, so the count is honoured when the image has that many.
    """

    feature_dim: int
    device: torch.device

    def extract(self, images: Sequence[Image.Image]) -> list[Regions]:
        """RGB PIL images (any size) -> one :class:`Regions` per image, in order."""
        ...
