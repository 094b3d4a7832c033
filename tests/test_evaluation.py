"""Retrieval metrics on hand-computed matrices, tie convention, 5-fold summary."""

from __future__ import annotations

import numpy as np
import pytest

from shan.evaluation import (
    EvaluationError,
    fold5_summary,
    format_metrics,
    i2t,
    i2t_ranks,
    metrics_from_sims,
    t2i,
    t2i_ranks,
)


def _scan_i2t(s: np.ndarray) -> np.ndarray:
    """SCAN's loop (with a stable sort), 0-based."""
    out = []
    for i in range(s.shape[0]):
        inds = np.argsort(s[i], kind="stable")[::-1]
        out.append(min(np.where(inds == j)[0][0] for j in range(5 * i, 5 * i + 5)))
    return np.array(out)


def _scan_t2i(s: np.ndarray) -> np.ndarray:
    out = []
    for c in range(s.shape[1]):
        inds = np.argsort(s[:, c], kind="stable")[::-1]
        out.append(np.where(inds == c // 5)[0][0])
    return np.array(out)


def test_perfect_retrieval() -> None:
    n = 3
    s = np.zeros((n, 5 * n))
    for i in range(n):
        s[i, 5 * i : 5 * i + 5] = 1.0
    assert i2t(s) == (100.0, 100.0, 100.0, 1.0, 1.0)
    assert t2i(s) == (100.0, 100.0, 100.0, 1.0, 1.0)
    assert metrics_from_sims(s)["rsum"] == 600.0


def test_hand_computed_ranks() -> None:
    # 2 images, 10 captions.
    s = np.array(
        [
            # image 0: its captions are cols 0-4; the best of them (col 2, 0.8) is beaten only by
            # col 7 (0.9) -> i2t rank 2
            [0.1, 0.2, 0.8, 0.0, 0.0, 0.5, 0.5, 0.9, 0.3, 0.3],
            # image 1: its best caption is col 9 (0.95), top of the row -> rank 1
            [0.9, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.95],
        ]
    )
    assert i2t_ranks(s).tolist() == [2, 1]
    r1, r5, r10, medr, meanr = i2t(s)
    assert (r1, r5, r10) == (50.0, 100.0, 100.0)
    assert medr == 1.0  # floor(median([1, 2])) = floor(1.5)
    assert meanr == 1.5
    # t2i: caption c's image is c // 5; per column, rank of that image among the 2 rows
    # col0: 0.1 vs 0.9 -> 2; col1: 0.2 vs 0 -> 1; col2 1; col3 tie(0,0) -> 2; col4 tie -> 2
    # col5: 0.5 vs 0.1 -> image 1 is 2nd; col6 2; col7 0.9 vs 0.3 -> 2; col8 0.3 vs 0.4 -> 1;
    # col9 1
    assert t2i_ranks(s).tolist() == [2, 1, 1, 2, 2, 2, 2, 2, 1, 1]
    r1, r5, r10, medr, meanr = t2i(s)
    assert r1 == 40.0 and r5 == 100.0 and medr == 2.0 and meanr == pytest.approx(1.6)


def test_tie_convention_larger_index_first() -> None:
    # A row of equal scores: SCAN's argsort(..)[::-1] with a stable sort puts the LAST column first.
    s = np.ones((2, 10))
    # image 0's captions are cols 0-4: order is 9,8,...,0 -> best gt (col 4) sits at position 5
    # image 1's captions are cols 5-9: col 9 is first -> rank 1
    assert i2t_ranks(s).tolist() == [6, 1]
    # t2i ties between the two images: image 1 (larger index) ranks first for every caption
    assert t2i_ranks(s).tolist() == [2] * 5 + [1] * 5


def test_matches_scan_loop_with_ties() -> None:
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=(9, 45)), 1)  # many ties
    assert (i2t_ranks(s) - 1 == _scan_i2t(s)).all()
    assert (t2i_ranks(s) - 1 == _scan_t2i(s)).all()
    # chunking does not change the result
    assert (i2t_ranks(s, chunk=2) == i2t_ranks(s)).all()
    assert (t2i_ranks(s, chunk=7) == t2i_ranks(s)).all()


def test_medr_and_recall_at_10() -> None:
    # 12 images; image i's captions get score -i relative to 12 distractor... construct ranks
    n = 12
    s = np.zeros((n, 5 * n))
    for i in range(n):
        s[i, 5 * i] = 1.0 - 0.01 * i  # its first caption
        # i distractor captions of OTHER images score higher
        others = [c for c in range(5 * n) if c // 5 != i][:i]
        s[i, others] = 2.0
    assert i2t_ranks(s).tolist() == list(range(1, n + 1))
    r1, r5, r10, medr, meanr = i2t(s)
    assert r1 == pytest.approx(100 / 12) and r5 == pytest.approx(500 / 12)
    assert r10 == pytest.approx(1000 / 12)
    assert medr == 6.0  # floor(median(1..12)) = floor(6.5)
    assert meanr == 6.5


def test_bad_shapes() -> None:
    with pytest.raises(EvaluationError, match="5N"):
        i2t(np.zeros((2, 9)))
    with pytest.raises(EvaluationError):
        t2i(np.zeros((10,)))
    with pytest.raises(EvaluationError, match="NaN"):
        i2t(np.full((1, 5), np.nan))


def _fold(a: list[float], b: list[float]) -> dict[str, float]:
    keys = ["r1", "r5", "r10", "medr", "meanr"]
    d = {f"i2t_{k}": v for k, v in zip(keys, a)}
    d.update({f"t2i_{k}": v for k, v in zip(keys, b)})
    d["rsum"] = sum(a[:3]) + sum(b[:3])
    return d


def test_fold5_summary_rsum_regression() -> None:
    folds = [
        _fold([70, 90, 95, 1, 3], [50, 80, 88, 2, 7]),
        _fold([72, 92, 96, 1, 2], [52, 82, 90, 1, 6]),
        _fold([68, 88, 94, 2, 4], [48, 78, 86, 2, 8]),
        _fold([74, 94, 97, 1, 2], [54, 84, 92, 1, 5]),
        _fold([66, 86, 93, 2, 5], [46, 76, 84, 2, 9]),
    ]
    out = fold5_summary(folds)
    assert out["i2t_r1"] == 70 and out["i2t_r5"] == 90 and out["i2t_r10"] == 95
    assert out["i2t_medr"] == pytest.approx(1.4) and out["i2t_meanr"] == pytest.approx(3.2)
    assert out["t2i_r1"] == 50 and out["t2i_r5"] == 80 and out["t2i_r10"] == 88
    assert out["t2i_meanr"] == pytest.approx(7.0)
    assert out["rsum"] == pytest.approx(70 + 90 + 95 + 50 + 80 + 88)
    assert out["rsum"] == pytest.approx(np.mean([f["rsum"] for f in folds]))
    # the peer bug: 6 x mean of the i2t recalls -> 510, not 473
    buggy = 6 * np.mean([out["i2t_r1"], out["i2t_r5"], out["i2t_r10"]])
    assert out["rsum"] != pytest.approx(buggy)
    with pytest.raises(EvaluationError):
        fold5_summary([])


def test_format_metrics() -> None:
    s = np.eye(2).repeat(5, axis=1)
    text = format_metrics(metrics_from_sims(s), "test")
    assert "rSum: 600.0" in text and "R@1 100.0" in text
