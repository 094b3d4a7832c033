"""The README's "Real photos" commands, end to end on small data with a random-weights BUTD file.

extract (shan-extract --detector butd) → train (shan-train --config configs/f30k.json) → evaluate
(shan-eval) → the app's pipeline with ``--detector butd --detector-weights ... --checkpoint ...``.
The BUTD network is shrunk (1 res4 block, 10 classes) and its inputs are small so this runs on a CPU
in seconds; the code paths are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shan.cli import evaluate as eval_cli
from shan.cli import extract as extract_cli
from shan.cli import train as train_cli
from shan.detect import butd
from shan.detect.butd import ButdInference
from shan.detect.butd_weights import ButdArch, random_weights

ROOT = Path(__file__).resolve().parents[1]
ARCH = ButdArch(res4_blocks=1, num_classes=11, num_attributes=6)
SMALL_INF = ButdInference(short_side=96, max_side=160, rpn_post_nms_topk=6, roi_batch_size=4)
K = 4  # regions per image
WORDS = ["dog", "cat", "bike", "tree", "car", "boat"]


@pytest.fixture()
def butd_small(tmp_path, monkeypatch) -> Path:
    """A random MILVLG-format weights file with class/attribute names beside it."""
    monkeypatch.setattr(butd, "DEFAULT_INFERENCE", SMALL_INF)
    d = tmp_path / "weights"
    d.mkdir()
    torch.save({"model": random_weights(ARCH, seed=3)}, d / "bua-small.pth")
    (d / "objects_vocab.txt").write_text("\n".join(f"thing{i},alias" for i in range(10)) + "\n")
    (d / "attributes_vocab.txt").write_text("\n".join(f"shade{i}" for i in range(5)) + "\n")
    return d / "bua-small.pth"


def _photos(folder: Path, n: int) -> list[str]:
    """``n`` blocky random 'photos' of different sizes and the 5 captions of each."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    captions = []
    for i in range(n):
        w, h = int(rng.integers(60, 130)), int(rng.integers(60, 130))
        blocks = rng.integers(0, 255, size=(h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((w, h), Image.NEAREST).save(folder / f"img{i:02d}.png")
        a, b = WORDS[i % len(WORDS)], WORDS[(i + 1) % len(WORDS)]
        captions += [f"a {a} next to a {b}", f"the {b} and the {a}", f"{a} {b}", a, b]
    return captions


def _extract(weights: Path, images: Path, out: Path, split: str, captions: Path) -> None:
    argv = ["--detector", "butd", "--weights", str(weights), "--images", str(images),
            "--out", str(out), "--split", split, "--num-regions", str(K),
            "--captions", str(captions)]  # fmt: skip
    assert extract_cli.main(argv) == 0


@pytest.mark.slow
def test_real_photo_commands_end_to_end(butd_small: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = tmp_path / "data"
    precomp = data / "myphotos_precomp"
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        caps = _photos(tmp_path / f"photos_{split}", n)
        cap_file = tmp_path / f"{split}_captions.txt"
        cap_file.write_text("\n".join(caps) + "\n")
        _extract(butd_small, tmp_path / f"photos_{split}", precomp, split, cap_file)

    ims = np.load(precomp / "test_ims.npy")
    assert ims.shape == (3, K, 2048) and np.isfinite(ims).all()
    assert np.load(precomp / "test_boxes.npy").shape == (3, K, 4)
    assert len((precomp / "test_caps.txt").read_text().splitlines()) == 15

    # shan-train with the shipped Flickr30K config, shrunk by --set overrides only
    run = tmp_path / "run"
    argv = ["--config", str(ROOT / "configs" / "f30k.json"),
            "--set", f"data.root={data}", "--set", "data.name=myphotos",
            "--set", "data.num_workers=0", "--set", "model.embed_dim=32",
            "--set", "model.word_dim=16", "--set", "train.epochs=1",
            "--set", "train.batch_size=8", "--set", "train.device=cpu",
            "--set", f"train.out_dir={run}", "--no-progress"]  # fmt: skip
    assert train_cli.main(argv) == 0
    best = run / "best"
    cfg = json.loads((best / "config.json").read_text())
    assert cfg["model"]["img_dim"] == 2048

    # shan-eval on the extracted test split
    res = tmp_path / "res.json"
    argv = ["--checkpoint", str(best), "--data-root", str(data), "--name", "myphotos",
            "--split", "test", "--device", "cpu", "--json", str(res)]  # fmt: skip
    assert eval_cli.main(argv) == 0
    assert "rsum" in json.dumps(json.loads(res.read_text())).lower()

    # the app's pipeline: --detector butd --detector-weights PATH --checkpoint DIR
    from demo.pipeline import DemoPipeline

    pipe = DemoPipeline.from_checkpoint(
        best, detector="butd", detector_weights=butd_small, device="cpu"
    )
    photo = Image.open(tmp_path / "photos_test" / "img00.png")
    result = pipe.match(photo, ["a dog next to a cat", "a boat"])
    assert result.scores.shape == (2, 4) and np.isfinite(result.scores).all()
    assert sorted(result.order) == [0, 1]
    # class and attribute names come from the vocab files beside the weights
    assert result.region_labels and all("thing" in lab for lab in result.region_labels)
    assert any("shade" in lab for lab in result.region_labels)
