"""Caffe box conventions of the BUTD detector, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import nms

from shan.detect import caffe_ops as co
from shan.detect.butd import ButdInference, image_scale, preprocess


def test_generate_anchors_matches_caffe():
    a = co.generate_anchors()
    assert a.shape == (12, 4)
    # ratio 1 (rows 4..7 in ratio-major order), the values quoted from Caffe's generate_anchors
    expected_r1 = [[-24, -24, 39, 39], [-56, -56, 71, 71], [-120, -120, 135, 135],
                   [-248, -248, 263, 263]]  # fmt: skip
    assert a[4:8].tolist() == expected_r1
    # ratio 0.5: side 23 x 12 (numpy rounds 11.5 to 12) times the scale, same centre 7.5
    assert a[1].tolist() == [-84, -40, 99, 55]
    # ratio 2: 11 x 22
    assert a[8].tolist() == [-14, -36, 29, 51]
    # every anchor is centred on (7.5, 7.5)
    assert torch.allclose((a[:, 0] + a[:, 2]) / 2, torch.full((12,), 7.5))


def test_shift_anchors_order_is_location_then_anchor():
    cell = torch.tensor([[0.0, 0.0, 15.0, 15.0], [-8.0, -8.0, 23.0, 23.0]])
    out = co.shift_anchors(cell, height=2, width=3, stride=16)
    assert out.shape == (2 * 3 * 2, 4)
    assert out[0].tolist() == [0, 0, 15, 15]
    assert out[1].tolist() == [-8, -8, 23, 23]
    assert out[2].tolist() == [16, 0, 31, 15]  # next column, first anchor
    assert out[6].tolist() == [0, 16, 15, 31]  # second row
    assert out[11].tolist() == [24, 8, 55, 39]


def test_decode_boxes_plus_one_convention():
    box = torch.tensor([[0.0, 0.0, 15.0, 15.0]])  # w = h = 16, centre (8, 8)
    z = co.decode_boxes(box, torch.zeros(1, 4))
    assert z.tolist() == [[0.0, 0.0, 16.0, 16.0]]  # "+0.5 w" both sides: no -1 on x2
    d = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])
    out = co.decode_boxes(box, d)[0].tolist()
    # centre x 8 + 0.5*16 = 16, width 32 -> [0, 32]; centre y 8 - 4 = 4, height 16 -> [-4, 12]
    assert out == pytest.approx([0.0, -4.0, 32.0, 12.0])
    # class-specific: two transforms per box, order kept
    two = co.decode_boxes(box, torch.cat([torch.zeros(1, 4), d], 1))
    assert two.shape == (1, 8)
    assert two[0, 4:].tolist() == pytest.approx(out)


def test_decode_boxes_clamps_dw_dh():
    box = torch.tensor([[0.0, 0.0, 15.0, 15.0]])
    out = co.decode_boxes(box, torch.tensor([[0.0, 0.0, 100.0, 100.0]]))[0]
    # exp(log(1000/16)) * 16 = 1000 wide around centre 8
    assert out.tolist() == pytest.approx([-492.0, -492.0, 508.0, 508.0], rel=1e-5)
    # negative deltas are not clamped
    small = co.decode_boxes(box, torch.tensor([[0.0, 0.0, -math.log(4.0), 0.0]]))[0]
    assert small.tolist() == pytest.approx([6.0, 0.0, 10.0, 16.0])


def test_clip_boxes_to_pixel_grid():
    b = torch.tensor([[-5.0, -1.0, 120.0, 30.0], [10.0, 20.0, 50.0, 99.9]])
    out = co.clip_boxes(b, height=50, width=100)
    assert out.tolist() == [[0.0, 0.0, 99.0, 30.0], [10.0, 20.0, 50.0, 49.0]]


def test_min_size_mask_uses_plus_one_sizes():
    b = torch.tensor([[0.0, 0.0, 15.0, 15.0], [0.0, 0.0, 14.0, 30.0], [0.0, 0.0, 30.0, 14.9]])
    assert co.min_size_mask(b, 16).tolist() == [True, False, False]
    assert co.min_size_mask(b, 15).tolist() == [True, True, True]


def test_nms_plus1_differs_from_plain_iou():
    # "+1": inter 10x5 = 50, union 150 -> IoU 1/3; "+0": 36 / 126 = 0.286
    b = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 5.0, 9.0, 14.0]])
    s = torch.tensor([0.9, 0.8])
    assert co.box_iou_plus1(b, b)[0, 1].item() == pytest.approx(1 / 3)
    assert co.nms_plus1(b, s, 0.3).tolist() == [0]
    assert co.nms_plus1(b, s, 0.34).tolist() == [0, 1]
    assert nms(b, s, 0.3).tolist() == [0, 1]  # torchvision's own areas would keep both


def test_rpn_proposals_pipeline():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 15.0, 15.0],  # fine
            [1.0, 1.0, 16.0, 16.0],  # overlaps the first (IoU ~0.79) -> suppressed
            [40.0, 40.0, 49.0, 49.0],  # only 10 px: dropped by min size
            [30.0, 0.0, 45.0, 15.0],  # separate
            [60.0, 0.0, 140.0, 15.0],  # clipped to x2 = 79
        ]
    )
    scores = torch.tensor([0.9, 0.95, 0.99, 0.5, 0.7])
    boxes, sc = co.rpn_proposals(
        anchors, scores, torch.zeros(5, 4), height=40, width=80, min_size=16,
        pre_nms_topk=10, post_nms_topk=10, nms_thresh=0.7,
    )  # fmt: skip
    # decoding with zero deltas adds 1 to x2/y2 (see test_decode_boxes_plus_one_convention)
    assert sc.tolist() == pytest.approx([0.95, 0.7, 0.5])
    assert boxes.tolist() == [[1, 1, 17, 17], [60, 0, 79, 16], [30, 0, 46, 16]]
    # top-k before NMS and after
    _, sc2 = co.rpn_proposals(anchors, scores, torch.zeros(5, 4), 40, 80, 16, 2, 10, 0.7)
    assert sc2.tolist() == pytest.approx([0.95])  # the two best overlap, only one survives
    _, sc3 = co.rpn_proposals(anchors, scores, torch.zeros(5, 4), 40, 80, 16, 10, 2, 0.7)
    assert sc3.tolist() == pytest.approx([0.95, 0.7])


def _reference_max_conf(boxes, scores, thresh):
    """The generate_tsv.py loop, with torchvision's nms on "+1" boxes."""
    max_conf = torch.zeros(boxes.shape[0])
    for c in range(scores.shape[1]):
        keep = co.nms_plus1(boxes, scores[:, c], thresh)
        max_conf[keep] = torch.maximum(max_conf[keep], scores[keep, c])
    return max_conf


def test_class_nms_max_conf_hand_case():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([[0.6, 0.1], [0.5, 0.3], [0.2, 0.05]])
    # class 0: box 0 keeps 0.6, suppresses box 1; box 2 keeps 0.2
    # class 1: box 1 (0.3) suppresses box 0; box 2 keeps 0.05
    out = co.class_nms_max_conf(boxes, scores, 0.3)
    assert out.tolist() == pytest.approx([0.6, 0.3, 0.2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_nms_max_conf_matches_per_class_loop(seed):
    g = torch.Generator().manual_seed(seed)
    r, c = 40, 25
    xy = torch.rand(r, 2, generator=g) * 60
    wh = torch.rand(r, 2, generator=g) * 40 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(r, c, generator=g).softmax(1)
    ref = _reference_max_conf(boxes, scores, 0.3)
    assert torch.allclose(co.class_nms_max_conf(boxes, scores, 0.3), ref)
    # batched with padding gives the same per image
    r2 = 30
    b2, s2 = boxes[:r2] + 3, scores[:r2].flip(1)
    pb = torch.zeros(2, r, 4)
    ps = torch.zeros(2, r, c)
    pb[0], ps[0] = boxes, scores
    pb[1, :r2], ps[1, :r2] = b2, s2
    valid = torch.zeros(2, r, dtype=torch.bool)
    valid[0] = True
    valid[1, :r2] = True
    out = co.class_nms_max_conf(pb, ps, 0.3, valid)
    assert torch.allclose(out[0], ref)
    assert torch.allclose(out[1, :r2], _reference_max_conf(b2, s2, 0.3))
    assert (out[1, r2:] == 0).all()


def test_select_boxes_threshold_and_counts():
    mc = torch.tensor([0.1, 0.5, 0.05, 0.9, 0.2, 0.3])
    # in range: proposal order, threshold inclusive
    assert co.select_boxes(mc, 0.2, min_boxes=1, max_boxes=10).tolist() == [1, 3, 4, 5]
    # too few pass: top-k by max_conf
    assert co.select_boxes(mc, 0.6, min_boxes=3, max_boxes=10).tolist() == [3, 1, 5]
    # too many pass: top max_boxes by max_conf
    assert co.select_boxes(mc, 0.0, min_boxes=1, max_boxes=2).tolist() == [3, 1]
    # fixed count (k36 style) whatever the threshold
    for t in (0.0, 0.2, 0.95):
        assert sorted(co.select_boxes(mc, t, min_boxes=4, max_boxes=4).tolist()) == [1, 3, 4, 5]
    # (exactly 4 pass at 0.2, so generate_tsv.py keeps them in proposal order)
    assert co.select_boxes(mc, 0.2, min_boxes=4, max_boxes=4).tolist() == [1, 3, 4, 5]
    assert co.select_boxes(mc, 0.95, min_boxes=4, max_boxes=4).tolist() == [3, 1, 5, 4]
    # fewer proposals than min: all of them
    assert sorted(co.select_boxes(mc, 0.2, min_boxes=10, max_boxes=20).tolist()) == list(range(6))
    with pytest.raises(ValueError, match="min_boxes"):
        co.select_boxes(mc, 0.2, min_boxes=5, max_boxes=4)


def test_image_scale_caffe_rule():
    assert image_scale(480, 640) == pytest.approx(1.25)  # short side 600, long 800
    assert image_scale(640, 480) == pytest.approx(1.25)
    assert image_scale(300, 1000) == pytest.approx(1.0)  # long side capped at 1000
    assert image_scale(375, 500, 600, 1000) == pytest.approx(1.6)


def test_preprocess_bgr_mean_and_size():
    cfg = ButdInference(short_side=60, max_side=100)
    im = Image.new("RGB", (40, 30), (10, 20, 30))
    x, s = preprocess(im, cfg, torch.device("cpu"))
    assert s == pytest.approx(2.0)
    assert x.shape == (3, 60, 80)
    m = cfg.pixel_mean_bgr
    assert torch.allclose(x[:, 5, 5], torch.tensor([30 - m[0], 20 - m[1], 10 - m[2]]))
    # bilinear with half-pixel centres: a 2-pixel ramp upsampled x2 keeps the end values
    ramp = Image.fromarray(np.array([[[0, 0, 0], [100, 100, 100]]] * 2, dtype=np.uint8))
    y, s2 = preprocess(ramp, ButdInference(short_side=4, max_side=8), torch.device("cpu"))
    row = (y[0, 0] + m[0]).tolist()
    assert s2 == 2.0 and row == pytest.approx([0.0, 25.0, 75.0, 100.0], abs=1e-4)
