"""shan.extract: SCAN files, resume after an interruption, corrupt images, strided ranks, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from shan.cli.extract import main
from shan.detect.base import Regions
from shan.extract import ExtractError, extract_images, list_images, read_captions


class FakeExtractor:
    """Deterministic: region count and features derived from the image's mean colour."""

    feature_dim = 6
    device = torch.device("cpu")

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.images_seen = 0
        self.fail_after = fail_after

    def extract(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.images_seen += len(images)
        out = []
        for im in images:
            m = np.asarray(im, dtype=np.float32).mean() / 255
            r = 1 + int(m * 10) % 4  # 1..4 regions
            w, h = im.size
            out.append(
                Regions(
                    boxes=torch.tensor([[0.0, 0.0, w / 2, h / 2]] * r),
                    features=torch.full((r, 6), m) + torch.arange(r)[:, None],
                    scores=torch.linspace(1, 0.5, r),
                    labels=["thing"] * r,
                    attributes=["red"] * r,
                    attribute_scores=torch.ones(r),
                    image_size=(w, h),
                )
            )
        return out


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    paths = []
    for i in range(7):
        p = d / f"im{i}.png"
        Image.new("RGB", (20 + i, 16), (i * 30, 100, 200 - i * 20)).save(p)
        paths.append(p)
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    return d, sorted(paths + [d / "broken.jpg"])


def _caps(paths):
    return [[f"caption {j} of {p.name}" for j in range(5)] for p in paths]


def test_output_format_and_corrupt_image_skipped(images, tmp_path, capsys):
    _, paths = images
    out = tmp_path / "out"
    s = extract_images(
        FakeExtractor(), paths, out, "test", batch_size=3, captions=_caps(paths), progress=False
    )
    assert s["n_images"] == 7 and s["n_failed"] == 1 and s["failed"][0].endswith("broken.jpg")
    assert "broken.jpg" in capsys.readouterr().err
    ims = np.load(out / "test_ims.npy")
    boxes = np.load(out / "test_boxes.npy")
    nreg = np.load(out / "test_nregions.npy")
    ids = (out / "test_ids.txt").read_text().split()
    caps = (out / "test_caps.txt").read_text().splitlines()
    assert ims.dtype == np.float32 and ims.shape == (7, s["k"], 6)
    assert boxes.shape == (7, s["k"], 4) and nreg.shape == (7,)
    assert "broken.jpg" not in ids and len(ids) == 7
    assert len(caps) == 35 and caps[0] == f"caption 0 of {ids[0]}"
    kept = [p for p in paths if p.name != "broken.jpg"]
    ref = FakeExtractor().extract([Image.open(p).convert("RGB") for p in kept])
    for i, r in enumerate(ref):
        n = len(r)
        assert nreg[i] == n
        np.testing.assert_allclose(ims[i, :n], r.features.numpy(), rtol=1e-6)
        assert (ims[i, n:] == 0).all()  # padding is zeros
        np.testing.assert_allclose(boxes[i, :n], r.boxes.numpy())
    regions = json.loads((out / "test_regions.json").read_text())
    assert len(regions) == 7 and regions[0]["labels"][0] == "thing"
    assert (out / "test_failed.txt").read_text().startswith(str(paths[0].parent / "broken.jpg"))
    assert not (out / ".test_parts").exists()  # shards cleaned up after the merge


def test_resume_skips_finished_batches(images, tmp_path):
    _, paths = images
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract_images(
            FakeExtractor(fail_after=2), paths, out, "train", batch_size=2, progress=False
        )
    assert len(list((out / ".train_parts").glob("batch_*.pt"))) == 2
    second = FakeExtractor()
    s = extract_images(second, paths, out, "train", batch_size=2, progress=False)
    assert s["n_images"] == 7
    # 8 files = 4 batches of 2 (broken.jpg sorts first); 2 batches were done before the
    # interruption, so the second run extracts only the 4 images of the other two.
    assert second.images_seen == 4
    ref = tmp_path / "ref"
    extract_images(FakeExtractor(), paths, ref, "train", batch_size=2, progress=False)
    assert np.array_equal(np.load(out / "train_ims.npy"), np.load(ref / "train_ims.npy"))
    assert (out / "train_ids.txt").read_text() == (ref / "train_ids.txt").read_text()
    # resume=False starts over
    third = FakeExtractor()
    extract_images(third, paths, out, "train", batch_size=2, resume=False, progress=False)
    assert third.images_seen == 7


def test_strided_ranks_merge_to_the_single_process_result(images, tmp_path):
    _, paths = images
    out = tmp_path / "out"
    r1 = extract_images(
        FakeExtractor(), paths, out, "dev", batch_size=2, rank=1, world_size=2, progress=False
    )
    assert r1["n_images"] is None  # only rank 0 merges
    extract_images(
        FakeExtractor(), paths, out, "dev", batch_size=2, rank=0, world_size=2, progress=False
    )
    ref = tmp_path / "ref"
    extract_images(FakeExtractor(), paths, ref, "dev", batch_size=2, progress=False)
    assert np.array_equal(np.load(out / "dev_ims.npy"), np.load(ref / "dev_ims.npy"))


def test_bad_arguments(images, tmp_path):
    _, paths = images
    with pytest.raises(ExtractError, match="no images"):
        extract_images(FakeExtractor(), [], tmp_path, "x")
    with pytest.raises(ExtractError, match="captions for 1 images"):
        extract_images(FakeExtractor(), paths, tmp_path, "x", captions=[["a"]])
    with pytest.raises(ExtractError, match="neither a directory"):
        list_images(tmp_path / "nope")
    with pytest.raises(ExtractError, match="lines; expected 5 per image"):
        (tmp_path / "c.txt").write_text("a\nb\n")
        read_captions(tmp_path / "c.txt", ["x.png"])


def test_all_images_unreadable_is_an_error(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"junk")
    with pytest.raises(ExtractError, match="none of the 1 images"):
        extract_images(FakeExtractor(), [p], tmp_path / "o", "x", progress=False)


def test_cli_with_toy_detector(images, tmp_path):
    from shan import toyworld as tw
    from shan.detect.toy import ToyDetector, ToyDetectorConfig

    d, paths = images
    cfg = ToyDetectorConfig(
        classes=list(tw.SHAPES),
        attributes=list(tw.COLOURS),
        image_size=32,
        widths=(8, 8, 8, 8),
        out_channels=8,
        feature_dim=16,
        anchor_sizes=(8, 16),
        pre_nms_top_n=20,
    )
    ToyDetector(cfg).save_pretrained(tmp_path / "det")
    caps = tmp_path / "caps.txt"
    caps.write_text("".join(f"c{j} {p.name}\n" for p in paths for j in range(5)))
    out = tmp_path / "toy_precomp"
    rc = main(
        [
            "--detector",
            "toy",
            "--weights",
            str(tmp_path / "det"),
            "--images",
            str(d),
            "--out",
            str(out),
            "--split",
            "test",
            "--captions",
            str(caps),
            "--num-regions",
            "3",
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--quiet",
        ]
    )
    assert rc == 0
    assert np.load(out / "test_ims.npy").shape == (7, 3, 16)
    assert (np.load(out / "test_nregions.npy") == 3).all()
    assert len((out / "test_caps.txt").read_text().splitlines()) == 35
    rc = main(
        [
            "--detector",
            "toy",
            "--weights",
            str(tmp_path / "det"),
            "--images",
            str(tmp_path / "missing"),
            "--out",
            str(out),
            "--split",
            "x",
        ]
    )
    assert rc == 2


def test_images_without_regions_are_skipped_and_files_come_from_precomp(images, tmp_path):
    """An image the detector finds nothing in is reported like an unreadable one (SHAN needs a
    region per image); the result reads back through shan.data.precomp, the format's owner."""
    from shan.data.precomp import load_split_dir, read_regions

    class NothingInTheFirst(FakeExtractor):
        def extract(self, images):
            out = super().extract(images)
            return [r if im.size[0] != 20 else Regions(r.boxes[:0], r.features[:0], r.scores[:0],
                    [], [], r.attribute_scores[:0], r.image_size)  # fmt: skip
                    for im, r in zip(images, out)]  # fmt: skip

    _, paths = images
    out = tmp_path / "out"
    s = extract_images(NothingInTheFirst(), paths, out, "test", batch_size=3, progress=False)
    assert s["n_images"] == 6 and s["n_failed"] == 2  # im0 (no regions) and broken.jpg
    assert "im0.png\tthe detector found no regions" in (out / "test_failed.txt").read_text()
    arr = load_split_dir(out, "test", require_captions=False)
    assert arr.n_images == 6 and arr.ids[0] == "im1.png" and arr.sizes.shape == (6, 2)
    assert len(read_regions(out, "test")) == 6 and not (out / "test_caps.txt").exists()
    # a second run with every image readable drops the stale failure list
    good = [p for p in paths if p.suffix == ".png"]
    extract_images(FakeExtractor(), good, out, "test", batch_size=3, progress=False)
    assert not (out / "test_failed.txt").exists()
