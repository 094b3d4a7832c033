"""End-to-end BUTD extraction with random weights (reduced res4 depth, small inputs, few ROIs)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shan.detect import butd
from shan.detect.base import RegionExtractor
from shan.detect.butd import ButdExtractor, ButdInference
from shan.detect.butd_weights import ButdArch, random_weights
from shan.detect.factory import build_extractor

ARCH = ButdArch(res4_blocks=1, num_classes=11, num_attributes=6)
# few proposals: res5 runs at 14 x 14 on every ROI, ~3 GMAC each, whatever the image size
SMALL_INF = ButdInference(short_side=96, max_side=160, rpn_post_nms_topk=6, roi_batch_size=4)
MIN, MAX = 3, 5


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("butd")
    torch.save({"model": random_weights(ARCH, seed=1)}, d / "small.pth")
    (d / "objects_vocab.txt").write_text("\n".join(f"obj{i},synonym" for i in range(10)) + "\n")
    (d / "attributes_vocab.txt").write_text("\n".join(f"attr{i}" for i in range(5)))
    return d


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.NEAREST)  # blocky, not pure noise


IMAGES = [(120, 90, 0), (70, 110, 1)]


@pytest.fixture(scope="module")
def extractor(weights_dir) -> ButdExtractor:
    return ButdExtractor.from_weights(weights_dir / "small.pth", "cpu", MIN, MAX, SMALL_INF)


@pytest.fixture(scope="module")
def two_results(extractor):
    return extractor.extract([_image(*a) for a in IMAGES])


def test_extract_shapes_boxes_and_counts(extractor, two_results):
    assert isinstance(extractor, RegionExtractor) and extractor.feature_dim == 2048
    assert len(two_results) == 2
    for r, (w, h, _) in zip(two_results, IMAGES):
        n = len(r)
        assert MIN <= n <= MAX
        assert r.features.shape == (n, 2048) and torch.isfinite(r.features).all()
        assert r.boxes.shape == (n, 4) and r.scores.shape == (n,)
        assert r.image_size == (w, h)
        b = r.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert all(lbl in {f"obj{i}" for i in range(10)} for lbl in r.labels)  # first synonym
        assert all(a in {f"attr{i}" for i in range(5)} for a in r.attributes)
        assert ((r.scores > 0) & (r.scores <= 1)).all()
        assert ((r.attribute_scores > 0) & (r.attribute_scores <= 1)).all()
        mc = r.extra["max_conf"]
        assert mc.shape == (n,) and (mc <= r.scores + 1e-6).all()
        assert len(r.extra["class_ids"]) == n and len(r.extra["attribute_ids"]) == n


def test_fixed_count(weights_dir):
    ex = ButdExtractor.from_weights(weights_dir / "small.pth", "cpu", 6, 6, SMALL_INF)
    assert [len(r) for r in ex.extract([_image(*IMAGES[0])])] == [6]


def test_batched_extraction_equals_one_by_one(extractor, two_results):
    alone = extractor.extract([_image(*IMAGES[1])])[0]
    got = two_results[1]
    assert torch.allclose(got.boxes, alone.boxes)
    assert torch.allclose(got.features, alone.features, atol=1e-4, rtol=1e-4)
    assert got.labels == alone.labels


def _pkl_extractor(tmp_path, sd=None) -> ButdExtractor:
    from tests.test_butd_weights import _to_pkl_layout

    pkl = _to_pkl_layout(sd if sd is not None else random_weights(ARCH, seed=1))
    with open(tmp_path / "small.pkl", "wb") as f:
        pickle.dump({"model": pkl}, f)
    return ButdExtractor.from_weights(tmp_path / "small.pkl", "cpu", MIN, MAX, SMALL_INF)


def test_pkl_weights_run_the_same_network_with_the_ports_anchors(extractor, two_results, tmp_path):
    ex = _pkl_extractor(tmp_path)
    assert ex.net.box_convention == "detectron2"
    assert torch.equal(ex.net.cell_anchors, butd.caffe_ops.detectron2_cell_anchors())
    r2 = ex.extract([_image(*IMAGES[0])])[0]
    assert r2.labels == [f"class_{i}" for i in r2.extra["class_ids"].tolist()]  # no vocab file
    # same network: with the .pth's anchors and convention it gives the .pth's regions exactly
    ex.net.cell_anchors = extractor.net.cell_anchors.clone()
    ex.net.box_convention = "caffe"
    r1, r3 = two_results[0], ex.extract([_image(*IMAGES[0])])[0]
    assert torch.allclose(r1.boxes, r3.boxes, atol=1e-3)
    assert torch.allclose(r1.features, r3.features, atol=1e-3, rtol=1e-3)
    # the anchors do matter: the port's give other proposals
    assert r1.boxes.shape != r2.boxes.shape or not torch.allclose(r1.boxes, r2.boxes, atol=1e-3)


def test_pkl_proposals_are_the_detectron2_anchors_when_deltas_are_zero(tmp_path):
    """End to end: channel k of the port's RPN gets detectron2 anchor k, decoded with "+0"."""
    sd = random_weights(ARCH, seed=4)
    for k in ("weight", "bias"):
        sd[f"proposal_generator.rpn_head.anchor_deltas.{k}"].zero_()
    ex = _pkl_extractor(tmp_path, sd)
    img = _image(*IMAGES[0])
    x, scale = butd.preprocess(img, SMALL_INF, torch.device("cpu"))
    h, w = x.shape[1:]
    fh, fw = ex.net.backbone(x[None]).shape[-2:]
    d2 = butd.caffe_ops.shift_anchors(butd.caffe_ops.detectron2_cell_anchors(), fh, fw)
    d2 = butd.caffe_ops.clip_boxes(d2, h, w, "detectron2")
    caffe = butd.caffe_ops.shift_anchors(butd.caffe_ops.generate_anchors(), fh, fw)
    caffe = butd.caffe_ops.clip_boxes(caffe + torch.tensor([0, 0, 1.0, 1.0]), h, w)  # decoded
    boxes = ex.extract([img])[0].boxes * scale  # back to the network's input pixels
    assert len(boxes) >= MIN
    dist_d2 = torch.cdist(boxes, d2, p=float("inf")).min(dim=1).values
    dist_caffe = torch.cdist(boxes, caffe, p=float("inf")).min(dim=1).values
    assert (dist_d2 < 1e-3).all(), dist_d2
    assert (dist_caffe > 0.5).all(), dist_caffe


def test_class_nms_runs_on_original_image_boxes(extractor, monkeypatch):
    seen = []
    real = butd.caffe_ops.class_nms_max_conf

    def spy(boxes, scores, iou_threshold, valid):
        seen.append(boxes[valid].clone())
        return real(boxes, scores, iou_threshold, valid)

    monkeypatch.setattr(butd.caffe_ops, "class_nms_max_conf", spy)
    w, h, seed = IMAGES[0]
    r = extractor.extract([_image(w, h, seed)])[0]
    assert butd.image_scale(h, w, SMALL_INF.short_side, SMALL_INF.max_side) > 1.05
    (boxes,) = seen
    # the returned regions (original-image pixels) are rows of what the NMS saw
    assert all((boxes == b).all(dim=1).any() for b in r.boxes)
    # and nothing it saw lies beyond the original image (the resized one is 6.7% larger)
    assert boxes[:, 2].max() <= w and boxes[:, 3].max() <= h


def test_factory_and_default_settings(weights_dir, monkeypatch):
    ex = build_extractor("butd", weights_dir / "small.pth", "cpu", min_regions=36, max_regions=36)
    assert isinstance(ex, ButdExtractor) and (ex.min_regions, ex.max_regions) == (36, 36)
    assert ex.cfg.short_side == 600 and ex.cfg.max_side == 1000
    assert (ex.cfg.rpn_post_nms_topk, ex.cfg.conf_thresh) == (300, 0.2)
    assert ex.class_names[:2] == ["obj0", "obj1"]
    assert torch.equal(ex.net.cell_anchors, butd.caffe_ops.generate_anchors())
    default = build_extractor("butd", weights_dir / "small.pth")
    assert (default.min_regions, default.max_regions) == (10, 100)
    with pytest.raises(ValueError, match="min_regions"):
        ButdExtractor.from_weights(weights_dir / "small.pth", min_regions=5, max_regions=4)


def test_pixel_mean_and_anchors_stored_in_the_file_are_used(tmp_path):
    sd = random_weights(ARCH, seed=2)
    sd["pixel_mean"] = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    sd["proposal_generator.anchor_generator.cell_anchors.0"] = torch.ones(12, 4)
    torch.save(sd, tmp_path / "m.pth")
    ex = ButdExtractor.from_weights(tmp_path / "m.pth")
    assert ex.cfg.pixel_mean_bgr == (1.0, 2.0, 3.0)
    assert torch.equal(ex.net.cell_anchors, torch.ones(12, 4))


def test_packaged_vocabulary_fits_the_public_network():
    objs = butd.packaged_names("objects_vocab.txt")
    attrs = butd.packaged_names("attributes_vocab.txt")
    assert len(objs) == ButdArch().num_classes - 1 and len(attrs) == ButdArch().num_attributes - 1
    assert attrs[0] == "gray" and objs[:3] == ["yolk", "goal", "bathroom"]  # first synonyms
    assert len(set(objs)) > 1500 and all("," not in n and n == n.strip() for n in objs + attrs)


def test_vocabulary_beside_the_weights_wins_else_the_packaged_one(tmp_path, caplog, monkeypatch):
    weights = tmp_path / "w.pth"  # only its folder matters
    assert butd.vocabulary(weights, "objects_vocab.txt", 1600, "class")[:2] == ["yolk", "goal"]
    assert butd.vocabulary(weights, "objects_vocab.txt", 10, "class")[9] == "class_9"
    (tmp_path / "objects_vocab.txt").write_text("\n".join(f"mine{i},alias" for i in range(1600)))
    assert butd.vocabulary(weights, "objects_vocab.txt", 1600, "class")[:2] == ["mine0", "mine1"]
    (tmp_path / "attributes_vocab.txt").write_text("red\nblue\n")
    with caplog.at_level("WARNING", logger="shan.detect.butd"):
        attrs = butd.vocabulary(weights, "attributes_vocab.txt", 400, "attribute")
    assert attrs[0] == "gray" and "has 2 names but the weights have 400" in caplog.text
    # an install without the package data still gives names
    monkeypatch.setattr(butd, "packaged_names", lambda f: open(tmp_path / "nowhere" / f))
    with caplog.at_level("WARNING", logger="shan.detect.butd"):
        assert butd.vocabulary(weights, "x.txt", 3, "class") == ["class_0", "class_1", "class_2"]
    assert "packaged vocabulary x.txt unavailable" in caplog.text


def test_shan_extract_cli_with_butd(weights_dir, tmp_path, monkeypatch):
    extract = pytest.importorskip("shan.cli.extract")
    monkeypatch.setattr(butd, "DEFAULT_INFERENCE", SMALL_INF)
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    _image(90, 70, 5).save(img_dir / "a.jpg")
    _image(60, 80, 6).save(img_dir / "b.png")
    out = tmp_path / "out"
    rc = extract.main(
        ["--detector", "butd", "--weights", str(weights_dir / "small.pth"), "--images",
         str(img_dir), "--out", str(out), "--split", "test", "--num-regions", "4"]
    )  # fmt: skip
    assert rc == 0
    ims = np.load(out / "test_ims.npy")
    assert ims.shape == (2, 4, 2048)
