"""``stack_regions``: several images' regions padded into SHAN's ``(N, k, D)`` input and mask."""

from __future__ import annotations

import torch

from shan.detect.base import Regions, stack_regions


def _regions(n: int, dim: int = 3) -> Regions:
    return Regions(
        boxes=torch.zeros(n, 4),
        features=torch.arange(n * dim, dtype=torch.float64).reshape(n, dim) + 1,
        scores=torch.ones(n),
        labels=["x"] * n,
        attributes=["y"] * n,
        attribute_scores=torch.ones(n),
    )


def test_pads_to_the_largest_image_and_masks_the_padding() -> None:
    feats, mask = stack_regions([_regions(2), _regions(4), _regions(1)])
    assert feats.shape == (3, 4, 3) and feats.dtype == torch.float32
    assert mask.tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]
    assert torch.equal(feats[0, :2], _regions(2).features.float())
    assert feats[0, 2:].abs().sum() == 0 and feats[2, 1:].abs().sum() == 0
