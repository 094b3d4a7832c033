"""The toy Faster R-CNN: training losses (incl. colour), RegionExtractor interface, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from shan import toyworld as tw
from shan.detect.base import RegionExtractor
from shan.detect.factory import build_extractor
from shan.detect.toy import (
    DetectorError,
    ToyDetectionDataset,
    ToyDetector,
    ToyDetectorConfig,
    train_detector,
)


def tiny_cfg(**kw) -> ToyDetectorConfig:
    base = dict(
        classes=list(tw.SHAPES),
        attributes=list(tw.COLOURS),
        image_size=64,
        widths=(8, 8, 16, 16),
        out_channels=16,
        feature_dim=32,
        anchor_sizes=(8, 16, 32),
        pre_nms_top_n=50,
        min_regions=2,
        max_regions=5,
    )
    base.update(kw)
    return ToyDetectorConfig(**base)


@pytest.fixture(scope="module")
def toy_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("tw")
    tw.generate_split(root / "train", "train", 4, seed=0, workers=1, image_size=64)
    return root / "train"


def test_train_mode_losses_include_colour_and_backprop(toy_split):
    det = ToyDetector(tiny_cfg())
    ds = ToyDetectionDataset(toy_split, det.classes, det.attributes)
    imgs, targets = zip(*[ds[i] for i in range(2)])
    model = det.model.train()
    losses = model([im.float() / 255 for im in imgs], list(targets))
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_attribute",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    # Colour loss starts near chance level (log 8) for a random head.
    assert 0.5 < float(losses["loss_attribute"].detach()) < 5.0
    sum(losses.values()).backward()
    attr_grad = model.roi_heads.attr_predictor.weight.grad
    assert attr_grad is not None and attr_grad.abs().sum() > 0
    first_conv = next(model.backbone.parameters())
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_dataset_targets_follow_annotations(toy_split):
    ds = ToyDetectionDataset(toy_split, list(tw.SHAPES), list(tw.COLOURS), hflip=False)
    ann = tw.load_annotations(toy_split)
    img, t = ds[0]
    objs = ann["images"][0]["objects"]
    assert img.shape == (3, 64, 64) and img.dtype == torch.uint8
    assert t["boxes"].tolist() == [o["box"] for o in objs]
    assert t["labels"].tolist() == [tw.SHAPES.index(o["shape"]) + 1 for o in objs]
    assert t["attributes"].tolist() == [list(tw.COLOURS).index(o["colour"]) for o in objs]


def test_extract_interface_min_max_and_original_pixels():
    det = ToyDetector(tiny_cfg())
    assert isinstance(det, RegionExtractor)
    images = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (128, 48), "white")]
    regs = det.extract(images)
    assert len(regs) == 2
    for r, im in zip(regs, images):
        assert 2 <= len(r) <= 5  # min honoured even when nothing is confident (random weights)
        assert r.features.shape == (len(r), 32)
        assert r.boxes.shape == (len(r), 4) and r.scores.shape == (len(r),)
        w, h = im.size
        assert r.image_size == (w, h)
        assert (r.boxes[:, 0] >= -1e-3).all() and (r.boxes[:, 2] <= w + 1e-3).all()
        assert (r.boxes[:, 1] >= -1e-3).all() and (r.boxes[:, 3] <= h + 1e-3).all()
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all()
        assert all(lb in tw.SHAPES for lb in r.labels)
        assert all(a in tw.COLOURS for a in r.attributes) and len(r.attributes) == len(r)
        assert r.features.device.type == "cpu"
    # A 128 x 48 image is resized to fit 64 px: boxes come back in original pixels.
    assert float(regs[1].boxes[:, 2].max()) > 64


def test_max_regions_is_a_cap():
    det = ToyDetector(tiny_cfg(score_thresh=0.0, nms_thresh=0.95), max_regions=3, min_regions=1)
    regs = det.extract([Image.new("RGB", (64, 64), "gray")])
    assert 1 <= len(regs[0]) <= 3
    det2 = ToyDetector(tiny_cfg(), min_regions=4, max_regions=4)
    assert len(det2.extract([Image.new("RGB", (64, 64), "gray")])[0]) == 4


def test_bad_region_bounds_raise():
    with pytest.raises(DetectorError, match="min_regions"):
        ToyDetector(tiny_cfg(), min_regions=5, max_regions=2)


def test_save_load_roundtrip_and_factory(tmp_path):
    det = ToyDetector(tiny_cfg())
    det.save_pretrained(tmp_path / "det")
    assert (tmp_path / "det" / "detector.safetensors").is_file()
    img = [Image.new("RGB", (64, 64), (30, 60, 220))]
    a = det.extract(img)[0]
    b = ToyDetector.from_pretrained(tmp_path / "det").extract(img)[0]
    assert torch.allclose(a.features, b.features, atol=1e-5) and torch.allclose(a.boxes, b.boxes)
    c = build_extractor("toy", tmp_path / "det", "cpu", min_regions=3, max_regions=3)
    assert len(c.extract(img)[0]) == 3


def test_from_pretrained_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DetectorError, match="no toy detector"):
        ToyDetector.from_pretrained(tmp_path)


def test_train_detector_few_steps_saves(toy_split, tmp_path):
    det = train_detector(
        toy_split,
        tmp_path / "d",
        epochs=1,
        batch_size=2,
        device="cpu",
        num_workers=0,
        cfg=tiny_cfg(),
        max_steps=2,
        log=lambda s: None,
    )
    assert not det.model.training
    again = ToyDetector.from_pretrained(tmp_path / "d")
    assert again.cfg.feature_dim == 32 and again.classes == list(tw.SHAPES)


def test_mosaic_tiles_scenes_and_training_restores_inference_size(toy_split, tmp_path):
    plain = ToyDetectionDataset(toy_split, list(tw.SHAPES), list(tw.COLOURS), hflip=False)
    ds = ToyDetectionDataset(toy_split, list(tw.SHAPES), list(tw.COLOURS), hflip=False, mosaic=2)
    assert len(ds) == 1
    img, t = ds[0]
    assert img.shape == (3, 128, 128)
    n_obj = sum(len(plain[i][1]["labels"]) for i in range(4))
    assert len(t["boxes"]) == len(t["labels"]) == len(t["attributes"]) == n_obj
    # Every box lies inside one 64 x 64 tile, and the tile's pixels are a whole scene.
    tiles = {(int(b[0] // 64), int(b[1] // 64)) for b in t["boxes"]}
    for b in t["boxes"]:
        c, r = int(b[0] // 64), int(b[1] // 64)
        assert b[2] <= (c + 1) * 64 and b[3] <= (r + 1) * 64
    assert len(tiles) >= 2
    scenes = [plain[i] for i in range(4)]
    got = {tuple(b.tolist()) + (int(lb),) for b, lb in zip(t["boxes"], t["labels"])}
    for r in range(2):
        for c in range(2):
            tile = img[:, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64]
            (scene,) = [s for s in scenes if torch.equal(tile, s[0])]
            # that scene's objects, shifted to this tile, are among the targets
            for b, lb in zip(scene[1]["boxes"], scene[1]["labels"]):
                shifted = (b + torch.tensor([c * 64, r * 64, c * 64, r * 64])).tolist()
                assert tuple(shifted) + (int(lb),) in got
    det = train_detector(toy_split, None, epochs=1, batch_size=1, device="cpu", num_workers=0,
                         cfg=tiny_cfg(), max_steps=1, log=lambda s: None, mosaic=2)  # fmt: skip
    assert det.train_info["mosaic"] == 2 and det.train_info["scenes"] == 4
    assert det.model.transform.min_size == (64,) and det.model.transform.max_size == 64
    assert det.model.rpn._post_nms_top_n["training"] == 200
