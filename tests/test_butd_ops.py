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


# ----------------------------------------------------------------------------- detectron2 port
def test_detectron2_cell_anchors_order_and_values():
    """The airsplay port's config: sizes 64, 128, 256, 512 x ratios 0.5, 1, 2, size-major."""
    a = co.detectron2_cell_anchors()
    assert a.shape == (12, 4) and a.dtype == torch.float32
    r2 = math.sqrt(2.0)
    expected = []
    for size in (64, 128, 256, 512):  # for each size, every ratio (h / w), area size**2 kept
        half_w = {0.5: size * r2 / 2, 1.0: size / 2, 2.0: size / r2 / 2}
        for ratio in (0.5, 1.0, 2.0):
            hw, hh = half_w[ratio], ratio * half_w[ratio]
            expected.append([-hw, -hh, hw, hh])
    assert torch.allclose(a, torch.tensor(expected), rtol=0, atol=1e-5)
    # spelled out: rows 0..2 are size 64 (ratio 0.5 is 90.51 wide, 45.25 high), row 4 is 128 x 128
    assert a[0].tolist() == pytest.approx([-45.2548, -22.6274, 45.2548, 22.6274], abs=1e-4)
    assert a[1].tolist() == [-32.0, -32.0, 32.0, 32.0]
    assert a[2].tolist() == pytest.approx([-22.6274, -45.2548, 22.6274, 45.2548], abs=1e-4)
    assert a[4].tolist() == [-64.0, -64.0, 64.0, 64.0]
    assert a[10].tolist() == [-256.0, -256.0, 256.0, 256.0]
    # centred on 0 (offset 0.0: the first cell's anchors are centred on pixel 0, not 7.5)
    assert torch.allclose(a[:, :2], -a[:, 2:])
    # Caffe's anchors (the old fallback) are another set in another order: channel by channel,
    # at most 2 of the 12 have a similar shape, and every centre is off by 7.5 pixels
    caffe = co.generate_anchors()
    shape_d2, shape_caffe = a[:, 2:] - a[:, :2], caffe[:, 2:] - caffe[:, :2] + 1
    similar = ((shape_d2 - shape_caffe).abs() <= 0.1 * shape_caffe).all(dim=1)
    assert int(similar.sum()) <= 2
    assert torch.allclose((caffe[:, :2] + caffe[:, 2:]) / 2 - (a[:, :2] + a[:, 2:]) / 2,
                          torch.full((12, 2), 7.5))  # fmt: skip
    assert co.default_cell_anchors("detectron2").tolist() == a.tolist()
    assert co.default_cell_anchors("caffe").tolist() == caffe.tolist()
    with pytest.raises(ValueError, match="unknown box convention"):
        co.default_cell_anchors("caffe2")


def test_decode_clip_and_size_with_the_detectron2_convention():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # w = h = 16 ("+0"), centre (8, 8)
    z = co.decode_boxes(box, torch.zeros(1, 4), convention="detectron2")
    assert z.tolist() == box.tolist()  # zero deltas give the box back (Caffe's adds 1 to x2/y2)
    d = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])
    out = co.decode_boxes(box, d, convention="detectron2")[0].tolist()
    # centre x 8 + 0.5*16 = 16, width 32 -> [0, 32]; centre y 8 - 4 = 4, height 16 -> [-4, 12]
    assert out == pytest.approx([0.0, -4.0, 32.0, 12.0])
    big = co.decode_boxes(box, torch.tensor([[0.0, 0.0, 100.0, 0.0]]), convention="detectron2")
    assert big[0, 2].item() - big[0, 0].item() == pytest.approx(1000.0, rel=1e-5)  # same clamp
    b = torch.tensor([[-5.0, -1.0, 120.0, 30.0]])
    assert co.clip_boxes(b, 50, 100, "detectron2").tolist() == [[0.0, 0.0, 100.0, 30.0]]
    assert co.clip_boxes(b, 50, 100, "caffe").tolist() == [[0.0, 0.0, 99.0, 30.0]]
    s = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 15.0, 15.0]])
    assert co.min_size_mask(s, 16, "detectron2").tolist() == [True, False]
    assert co.min_size_mask(s, 16, "caffe").tolist() == [True, True]


def test_rpn_proposals_detectron2_convention_nms_uses_plain_areas():
    # "+0" IoU of these two: inter 10 x 4 = 40, union 160 -> 0.25. Caffe's decoding widens both by
    # one ([0, 0, 11, 11], [0, 6, 11, 17]) and its "+1" IoU is then 12 x 6 / (2 x 144 - 72) = 0.33
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 6.0, 10.0, 16.0]])
    scores = torch.tensor([0.9, 0.8])
    args = (anchors, scores, torch.zeros(2, 4), 40, 40, 1.0, 10, 10)
    boxes, _ = co.rpn_proposals(*args, nms_thresh=0.26, convention="detectron2")
    assert boxes.tolist() == anchors.tolist()  # both kept, unchanged by zero deltas
    boxes, _ = co.rpn_proposals(*args, nms_thresh=0.26, convention="caffe")
    assert boxes.tolist() == [[0.0, 0.0, 11.0, 11.0]]  # "+1": decoded one wider, IoU above 0.26


def test_class_nms_decision_depends_on_the_frame():
    """Why the per-class NMS runs in original-image pixels: "+1" IoUs change with the scale.

    Original frame: A = [0, 0, 6, 6], B = [4, 0, 10, 6]: inter 3 x 7 = 21, areas 49 -> IoU 21 / 77
    = 0.273 <= 0.3, B survives. Resized by 0.5: [0, 0, 3, 3], [2, 0, 5, 3]: inter 2 x 4 = 8, areas
    16 -> IoU 8 / 24 = 0.333 > 0.3, B is suppressed.
    """
    orig = torch.tensor([[0.0, 0.0, 6.0, 6.0], [4.0, 0.0, 10.0, 6.0]])
    scores = torch.tensor([[0.6], [0.5]])
    assert co.box_iou_plus1(orig, orig)[0, 1].item() == pytest.approx(21 / 77)
    assert co.box_iou_plus1(orig * 0.5, orig * 0.5)[0, 1].item() == pytest.approx(1 / 3)
    assert co.class_nms_max_conf(orig, scores, 0.3).tolist() == pytest.approx([0.6, 0.5])
    assert co.class_nms_max_conf(orig * 0.5, scores, 0.3).tolist() == pytest.approx([0.6, 0.0])
