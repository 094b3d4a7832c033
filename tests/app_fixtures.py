"""Test helpers for the demo: a stand-in region extractor, tiny random SHAN checkpoints, images.

Used by ``tests/test_pipeline.py``, ``tests/test_render.py``, ``tests/test_app_client.py`` and
``tests/test_browser.py``. Nothing here is used by the app itself.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from shan.detect.base import Regions

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINT = REPO / "checkpoints" / "shan"
EXAMPLES_JSON = REPO / "assets" / "examples.json"

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
CAPTIONS = [
    "a red circle left of a blue square",
    "a green triangle above a yellow circle",
    "a blue square on a white background",
    "two black circles and a red square",
    "one small circle right of three large squares below a triangle",
]


class FakeExtractor:
    """A deterministic stand-in :class:`~shan.detect.base.RegionExtractor` (tests only).

    Regions: the whole image plus a 2 × 3 grid of cells. Feature of a region: its mean colour
    and box position, mapped by a fixed random matrix to ``feature_dim``. Label ``"cell"``,
    attribute = the nearest named colour.
    """

    def __init__(self, feature_dim: int = 16, device: str = "cpu") -> None:
        self.feature_dim = feature_dim
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(7, feature_dim, generator=g)
        self.calls = 0

    def extract(self, images: Sequence[Image.Image]) -> list[Regions]:
        self.calls += 1
        out = []
        for img in images:
            if not isinstance(img, Image.Image) or img.mode != "RGB":
                raise TypeError("FakeExtractor expects RGB PIL images")
            w, h = img.size
            arr = np.asarray(img, dtype=np.float32) / 255.0
            boxes = [(0.0, 0.0, float(w), float(h))]
            for r in range(2):
                for c in range(3):
                    boxes.append((c * w / 3, r * h / 2, (c + 1) * w / 3, (r + 1) * h / 2))
            feats, attrs = [], []
            for x1, y1, x2, y2 in boxes:
                patch = arr[
                    int(y1) : max(int(y2), int(y1) + 1), int(x1) : max(int(x2), int(x1) + 1)
                ]
                mean = patch.reshape(-1, 3).mean(0)
                pos = [(x1 + x2) / (2 * w), (y1 + y2) / (2 * h), (x2 - x1) * (y2 - y1) / (w * h)]
                feats.append(torch.tensor([*mean.tolist(), *pos, 1.0]) @ self.proj)
                names = list(COLOURS)
                dist = [np.sum((mean * 255 - np.array(COLOURS[n])) ** 2) for n in names]
                attrs.append(names[int(np.argmin(dist))])
            k = len(boxes)
            out.append(
                Regions(
                    boxes=torch.tensor(boxes, dtype=torch.float32),
                    features=torch.stack(feats).float(),
                    scores=torch.linspace(0.99, 0.5, k),
                    labels=["cell"] * k,
                    attributes=attrs,
                    attribute_scores=torch.full((k,), 0.9),
                    image_size=(w, h),
                )
            )
        return out


def make_checkpoint(
    out_dir: Path,
    img_dim: int = 16,
    extra: dict | None = None,
    max_words: int = 12,
    seed: int = 0,
    geometry: bool = False,
) -> Path:
    """Save a tiny random GRU SHAN (vocabulary from :data:`CAPTIONS`) to ``out_dir``."""
    from shan.checkpoint import save_checkpoint
    from shan.config import ModelConfig
    from shan.data.vocab import Vocabulary
    from shan.model.shan import SHAN

    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS)
    cfg = ModelConfig(
        img_dim=img_dim,
        embed_dim=32,
        vocab_size=len(vocab),
        word_dim=16,
        max_words=max_words,
        use_geometry=geometry,
    )
    model = SHAN(cfg)
    return save_checkpoint(out_dir, model, vocab, extra=extra)


def make_toy_detector(out_dir: Path) -> Path:
    """Save a randomly initialised toy detector (the real class, untrained) to ``out_dir``."""
    from shan.detect.toy import ToyDetector, ToyDetectorConfig

    torch.manual_seed(0)
    cfg = ToyDetectorConfig(classes=["circle", "square", "triangle"], attributes=list(COLOURS))
    return ToyDetector(cfg).save_pretrained(out_dir)


def make_fixture_app_checkpoint(root: Path) -> Path:
    """A full app checkpoint layout: ``root/shan`` (tiny SHAN) + ``root/detector`` (random toy).

    ``root/shan/config.json`` names the detector like the shipped model does.
    """
    det = make_toy_detector(root / "detector")
    from shan.detect.toy import ToyDetectorConfig

    dim = ToyDetectorConfig().feature_dim
    make_checkpoint(
        root / "shan", img_dim=dim, extra={"detector": {"kind": "toy", "weights": "../detector"}}
    )
    assert det.is_dir()
    return root / "shan"


def make_pipeline(tmp: Path, geometry: bool = False):
    """A :class:`demo.pipeline.DemoPipeline` on a tiny random SHAN + :class:`FakeExtractor`
    (``geometry``: a model that reads region boxes, ``ModelConfig.use_geometry``)."""
    from demo.pipeline import DemoPipeline
    from shan.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp / "ckpt", img_dim=16, geometry=geometry)
    loaded = load_checkpoint(ckpt)
    return DemoPipeline(loaded.model, loaded.text, FakeExtractor(16), "cpu", description="fixture")


def scene(size: tuple[int, int] = (240, 160), seed: int = 0) -> Image.Image:
    """A toy-world-like picture: coloured circles and squares on white."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    names = ["red", "green", "blue", "yellow"]
    for i in range(3):
        x = int(rng.integers(0, max(1, size[0] - 50)))
        y = int(rng.integers(0, max(1, size[1] - 50)))
        col = COLOURS[names[(i + seed) % len(names)]]
        if i % 2:
            draw.rectangle((x, y, x + 45, y + 45), fill=col)
        else:
            draw.ellipse((x, y, x + 45, y + 45), fill=col)
    return img


def synthetic_calibration(n: int = 30):
    """A :class:`shan.calibration.Calibration` of made-up scores (true pairs higher), n images."""
    from shan.calibration import calibrate_scores

    rng = np.random.default_rng(0)
    match = (np.arange(5 * n)[None, :] // 5) == np.arange(n)[:, None]
    mats = {}
    for key, (mu1, mu0, sd) in {
        "total": (1.2, 0.2, 0.2),
        "l2l": (0.05, -0.3, 0.05),
        "g2l": (0.75, 0.7, 0.05),
        "g2g": (0.4, -0.5, 0.2),
    }.items():
        m = rng.normal(mu0, sd, match.shape)
        m[match] += mu1 - mu0
        mats[key] = m
    return calibrate_scores(mats, source={"split": "synthetic test"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_in_thread(demo, port: int | None = None) -> str:
    """Launch a Blocks app on 127.0.0.1 without blocking; returns its URL."""
    from demo.ui import launch_kwargs

    kwargs = launch_kwargs("127.0.0.1", port or free_port())
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    return url


__all__ = [
    "CAPTIONS",
    "EXAMPLES_JSON",
    "FakeExtractor",
    "SHIPPED_CHECKPOINT",
    "free_port",
    "launch_in_thread",
    "make_checkpoint",
    "make_fixture_app_checkpoint",
    "make_pipeline",
    "make_toy_detector",
    "scene",
    "synthetic_calibration",
]
