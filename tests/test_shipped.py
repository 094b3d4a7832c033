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


@pytest.fixture(scope="module")
def fresh_test_scenes(shipped, tmp_path_factory):
    """The first 120 held-out test scenes, regenerated from the seed, run through the detector.

    The shipped models were trained on the first toy world: its ``classic`` preset regenerates
    scenes of that kind (pale backgrounds, no overlaps, the first grammar)."""
    from shan.toyworld import WorldConfig, generate_split, load_annotations

    out = tmp_path_factory.mktemp("toy_test")
    generate_split(out, "test", 120, seed=0, workers=1, config=WorldConfig.classic())
    records = load_annotations(out / "annotations.json")["images"]
    _, det = shipped
    regions = []
    for s in range(0, len(records), 40):
        batch = [Image.open(out / r["file"]).convert("RGB") for r in records[s : s + 40]]
        regions += det.extract(batch)
    feats, mask = stack_regions(regions)
    return {
        "records": records,
        "regions": regions,
        "feats": feats.numpy(),
        "masks": mask.numpy(),
    }


def test_shipped_detector_finds_shapes_and_colours(shipped, fresh_test_scenes):
    """The card's detector targets (mAP@0.5 >= 0.9, colour accuracy >= 0.9) on fresh scenes."""
    from shan.toyworld_eval import detection_metrics

    _, det = shipped
    regs = fresh_test_scenes["regions"]
    m = detection_metrics(
        [r.boxes.numpy() for r in regs],
        [r.labels for r in regs],
        [r.scores.tolist() for r in regs],
        [r.attributes for r in regs],
        fresh_test_scenes["records"],
        det.classes,
    )
    assert m["map50"] >= 0.9, m
    assert m["colour_acc"] >= 0.9, m


def test_shipped_shan_retrieves_and_rejects_swapped_colours(shipped, fresh_test_scenes):
    """Retrieval among the 120 scenes and the colour-swap hard negatives, from detected regions."""
    from shan.toyworld_eval import (
        hard_negative_accuracy,
        image_captions,
        retrieval_metrics,
        step_sims,
    )

    loaded, _ = shipped
    data = fresh_test_scenes
    with torch.no_grad():
        sims = step_sims(
            loaded.model, loaded.text, data["feats"], data["masks"], image_captions(data["records"])
        )
        hard = hard_negative_accuracy(loaded.model, loaded.text, data)
    r = retrieval_metrics(sims["total"])
    assert r["i2t_r1"] >= 80 and r["t2i_r1"] >= 60, r
    assert hard["n"] >= 50 and hard["accuracy"] >= 0.9, hard
