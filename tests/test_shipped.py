"""The shipped toy-world checkpoints: they load, fit the size budget, and rank the true captions of
every ``assets/`` example first (skipped only while ``checkpoints/shan`` has not been produced)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from shan.detect.base import stack_regions

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "shan"
DET = ROOT / "checkpoints" / "detector"
EXAMPLES = ROOT / "assets" / "examples.json"

pytestmark = pytest.mark.skipif(
    not (CKPT / "model.safetensors").is_file(),
    reason="checkpoints/shan does not exist yet (produce it with scripts/reproduce_toyworld.py)",
)


@pytest.fixture(scope="module")
def shipped():
    from shan.checkpoint import load_checkpoint
    from shan.detect.toy import ToyDetector

    loaded = load_checkpoint(CKPT, device="cpu")
    det_ref = loaded.extra.get("detector", {})
    assert det_ref.get("kind") == "toy"
    det_dir = (CKPT / det_ref["weights"]).resolve()
    assert det_dir == DET.resolve()
    return loaded, ToyDetector.from_pretrained(det_dir, device="cpu")


def test_size_budget():
    total = sum(f.stat().st_size for d in (CKPT, DET) for f in d.rglob("*") if f.is_file())
    assert total <= 50 * 2**20, f"shipped models take {total / 2**20:.1f} MB > 50 MB"


def test_examples_rank_their_true_captions_first(shipped):
    loaded, det = shipped
    examples = json.loads(EXAMPLES.read_text())
    assert len(examples) >= 3
    images = [Image.open(EXAMPLES.parent / ex["image"]).convert("RGB") for ex in examples]
    regs = det.extract(images)
    feats, mask = stack_regions(regs)
    owner = [i for i, ex in enumerate(examples) for _ in ex["captions"]]
    pool = [c for ex in examples for c in ex["captions"]]
    owner += [-1] * len(examples)
    pool += [ex["hard_negative"] for ex in examples]
    model, text = loaded.model, loaded.text
    with torch.no_grad():
        img = model.encode_images(feats, mask)
        batch = text.encode_batch(pool, model.cfg.max_words)
        txt = model.encode_captions(batch.tokens, batch.lengths)
        scores = model.score(img, txt).total
    for i, ex in enumerate(examples):
        top = int(scores[i].argmax())
        assert owner[top] == i, (ex["image"], pool[top])
        assert ex.get("top_caption_is_own", True), ex["image"]


def test_metrics_and_model_card_agree():
    metrics = json.loads((ROOT / "checkpoints" / "metrics.json").read_text())
    card = (ROOT / "checkpoints" / "README.md").read_text()
    rsum = metrics["retrieval"]["total"]["rsum"]
    assert f"{rsum:.1f}" in card
    assert f"{metrics['detector']['map50']:.3f}" in card
