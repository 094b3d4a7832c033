"""VSE++ hinge triplet loss on hand-made similarity matrices."""

from __future__ import annotations

import pytest
import torch

from shan.model import ContrastiveLoss

S = torch.tensor(
    [
        [0.9, 0.8, 0.1],
        [0.3, 0.5, 0.6],
        [0.0, 0.2, 0.7],
    ]
)


def test_max_violation_by_hand() -> None:
    # image anchors (rows): row0 hardest neg 0.8 -> 0.2+0.8-0.9=0.1; row1: 0.6 -> 0.3;
    # row2: 0.2 -> 0.2+0.2-0.7 < 0 -> 0.  caption anchors (columns): col0 hardest 0.3 -> 0 (
    # 0.2+0.3-0.9<0); col1: 0.8 -> 0.2+0.8-0.5=0.5; col2: 0.6 -> 0.2+0.6-0.7=0.1
    expected = 0.1 + 0.3 + 0.0 + 0.0 + 0.5 + 0.1
    assert ContrastiveLoss(0.2, True)(S).item() == pytest.approx(expected, abs=1e-6)


def test_sum_of_all_violations_by_hand() -> None:
    # rows: r0: (0.8)->0.1, (0.1)->0 ; r1: (0.3)->0, (0.6)->0.3 ; r2: (0.0)->0, (0.2)->0
    # cols: c0: (0.3)->0, (0.0)->0 ; c1: (0.8)->0.5, (0.2)->0 ; c2: (0.1)->0, (0.6)->0.1
    expected = 0.1 + 0.3 + 0.5 + 0.1
    assert ContrastiveLoss(0.2, False)(S).item() == pytest.approx(expected, abs=1e-6)


def test_perfectly_separated_scores_give_zero_and_margin_matters() -> None:
    s = torch.eye(4)
    assert ContrastiveLoss(0.2)(s).item() == 0.0
    # margin 1.5 > gap 1 -> every anchor violated by 0.5 in both directions
    assert ContrastiveLoss(1.5)(s).item() == pytest.approx(4 * 2 * 0.5)


def test_gradient_only_through_hardest_negative() -> None:
    s = S.clone().requires_grad_(True)
    ContrastiveLoss(0.2, True)(s).backward()
    g = s.grad
    assert g[0, 1] == 1.0 + 1.0  # hardest negative of row 0 and of column 1
    assert g[0, 2] == 0.0
    assert g[1, 2] == 1.0 + 1.0  # row 1's hardest and column 2's hardest


def test_rejects_non_square() -> None:
    with pytest.raises(ValueError, match="square"):
        ContrastiveLoss()(torch.zeros(2, 3))
