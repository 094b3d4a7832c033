"""Build a region extractor by name: ``toy`` (the shipped toy-world detector) or ``butd``
(Bottom-Up-Attention)."""

from __future__ import annotations

from pathlib import Path

import torch

from shan.detect.base import RegionExtractor
from shan.errors import ShanError

KINDS = ("toy", "butd")


class ExtractorKindError(ShanError, ValueError):
    """A detector kind that is not one of :data:`KINDS`."""


def build_extractor(
    kind: str,
    weights: str | Path,
    device: str | torch.device = "cpu",
    min_regions: int | None = None,
    max_regions: int | None = None,
) -> RegionExtractor:
    """Load an extractor. ``weights``: the toy detector's directory or a BUTD ``.pth``/``.pkl``.

    ``min_regions``/``max_regions`` of ``None`` keep each extractor's own defaults.
    """
    kwargs = {}
    if min_regions is not None:
        kwargs["min_regions"] = min_regions
    if max_regions is not None:
        kwargs["max_regions"] = max_regions
    if kind == "toy":
        from shan.detect.toy import ToyDetector

        return ToyDetector.from_pretrained(weights, device=device, **kwargs)
    if kind == "butd":
        from shan.detect.butd import ButdExtractor

        return ButdExtractor.from_weights(weights, device=device, **kwargs)
    raise ExtractorKindError(f"unknown detector kind {kind!r}; expected one of {', '.join(KINDS)}")
