"""The toy-world generator: determinism, annotation correctness, grounding, hard negatives, CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from shan.data import toyworld as tw
from shan.data.vocab import tokenize

SEEDS = [tw.image_seed(3, "train", i) for i in range(40)]


def _scenes():
    return [tw.generate_scene(s) for s in SEEDS]


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


def test_same_seed_same_image_and_annotations():
    img1, s1 = tw.generate_scene(SEEDS[5])
    img2, s2 = tw.generate_scene(SEEDS[5])
    assert np.array_equal(np.asarray(img1), np.asarray(img2))
    assert tw._scene_record(s1, "a", "a.png") == tw._scene_record(s2, "a", "a.png")
    img3, _ = tw.generate_scene(SEEDS[6])
    assert not np.array_equal(np.asarray(img1), np.asarray(img3))


def test_image_seed_depends_on_split_and_index():
    assert tw.image_seed(0, "train", 1) != tw.image_seed(0, "dev", 1)
    assert tw.image_seed(0, "train", 1) != tw.image_seed(0, "train", 2)
    assert tw.image_seed(0, "train", 1) != tw.image_seed(1, "train", 1)
    with pytest.raises(tw.ToyWorldError, match="unknown split"):
        tw.image_seed(0, "validation", 0)


def test_scene_ground_truth_is_valid(scenes):
    counts = set()
    for img, scene in scenes:
        assert img.size == (tw.IMAGE_SIZE, tw.IMAGE_SIZE) and img.mode == "RGB"
        assert 1 <= len(scene.objects) <= 5
        counts.add(len(scene.objects))
        arr = np.asarray(img).astype(np.int32)
        for o in scene.objects:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= tw.IMAGE_SIZE and 0 <= y1 < y2 <= tw.IMAGE_SIZE
            assert o.shape in tw.SHAPES and o.colour in tw.COLOURS
            assert o.size in tw.SIZES and o.pattern in tw.PATTERNS
            # The box really holds the object's colour (a good share of its pixels).
            patch = arr[int(y1) : int(y2), int(x1) : int(x2)]
            dist = np.abs(patch - np.array(tw.COLOURS[o.colour])).sum(-1)
            assert (dist < 70).mean() > 0.12, (o, (dist < 70).mean())
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert tw._iou(a.box, b.box) <= 0.3
    assert counts >= {1, 2, 3, 4, 5}


def test_small_and_large_sizes_differ(scenes):
    sides = {"small": [], "large": []}
    for _, scene in scenes:
        for o in scene.objects:
            sides[o.size].append(max(o.box[2] - o.box[0], o.box[3] - o.box[1]))
    assert max(sides["small"]) < min(sides["large"])


def test_captions_tokenize_and_ground_consistently(scenes):
    for _, scene in scenes:
        assert len(scene.captions) == 5
        assert len({c.text for c in scene.captions}) == 5
        for cap in scene.captions:
            assert tokenize(cap.text) == cap.tokens
            assert len(cap.token_objects) == len(cap.tokens) == len(cap.token_roles)
            mentioned = set()
            for word, objs, role in zip(cap.tokens, cap.token_objects, cap.token_roles):
                assert all(0 <= o < len(scene.objects) for o in objs)
                for o in objs:
                    obj = scene.objects[o]
                    if role == "shape":
                        forms = tw.SHAPE_WORDS[obj.shape]
                        assert word in forms + [tw._plural(f) for f in forms]
                        mentioned.add(o)
                    elif role == "colour":
                        assert word in tw.COLOUR_WORDS[obj.colour]
                    elif role == "size":
                        assert word in tw.SIZE_WORDS[obj.size]
                    elif role == "pattern":
                        assert word in tw.PATTERN_WORDS[obj.pattern]
                if role in {"shape", "colour"}:
                    assert objs, (cap.text, word)
            # "mention colours + shapes of most objects": at most one object left out
            assert len(mentioned) >= len(scene.objects) - 1, cap.text
            colour_objs = {
                o
                for objs, r in zip(cap.token_objects, cap.token_roles)
                if r == "colour"
                for o in objs
            }
            assert colour_objs == mentioned


def test_hard_negatives_swap_two_colours(scenes):
    n_neg = 0
    for _, scene in scenes:
        neg = scene.hard_negative
        eligible = tw.hard_negative_pair(scene, random.Random(0)) is not None
        assert (neg is not None) == eligible
        if neg is None:
            continue
        n_neg += 1
        src = scene.captions[neg["source_caption"]]
        assert tokenize(neg["text"]) == neg["tokens"]
        assert neg["text"] != src.text
        i, j = neg["objects"]
        a, b = scene.objects[i], scene.objects[j]
        assert a.colour != b.colour and a.shape != b.shape
        # The negative claims (b.colour, a.shape) and (a.colour, b.shape): neither is in the scene.
        present = {(o.colour, o.shape) for o in scene.objects}
        assert (b.colour, a.shape) not in present and (a.colour, b.shape) not in present
        diff = [k for k, (x, y) in enumerate(zip(src.tokens, neg["tokens"])) if x != y]
        roles = {src.token_roles[k] for k in diff}
        assert roles <= {"colour", "det"} and "colour" in roles
        for k in diff:
            if src.token_roles[k] == "colour":
                (o,) = src.token_objects[k]
                other = j if o == i else i
                assert (
                    o in (i, j) and neg["tokens"][k] in tw.COLOUR_WORDS[scene.objects[other].colour]
                )
    assert n_neg >= 10


def test_generate_split_is_independent_of_workers(tmp_path):
    p1 = tw.generate_split(tmp_path / "a", "dev", 6, seed=7, workers=1)
    p2 = tw.generate_split(tmp_path / "b", "dev", 6, seed=7, workers=2)
    a1, a2 = json.loads(p1.read_text()), json.loads(p2.read_text())
    assert a1 == a2
    for rec in a1["images"]:
        im1 = np.asarray(tw.Image.open(tmp_path / "a" / rec["file"]))
        im2 = np.asarray(tw.Image.open(tmp_path / "b" / rec["file"]))
        assert np.array_equal(im1, im2)
    # Any single image can be regenerated from (seed, split, index).
    img, scene = tw.generate_scene(tw.image_seed(7, "dev", 3))
    assert np.array_equal(
        np.asarray(img), np.asarray(tw.Image.open(tmp_path / "a" / a1["images"][3]["file"]))
    )
    assert [c.text for c in scene.captions] == [c["text"] for c in a1["images"][3]["captions"]]


def test_cli_writes_three_splits(tmp_path, capsys):
    rc = tw.main(
        ["--seed", "1", "--split-sizes", "3,2,2", "--out", str(tmp_path), "--workers", "1"]
    )
    assert rc == 0
    for split, n in (("train", 3), ("dev", 2), ("test", 2)):
        ann = tw.load_annotations(tmp_path / split)
        assert len(ann["images"]) == n and ann["split"] == split
        assert len(list((tmp_path / split / "images").glob("*.png"))) == n


def test_cli_rejects_bad_sizes(tmp_path, capsys):
    assert tw.main(["--split-sizes", "3,2", "--out", str(tmp_path)]) == 2
    assert "TRAIN,DEV,TEST" in capsys.readouterr().err


def test_load_annotations_errors(tmp_path):
    with pytest.raises(tw.ToyWorldError, match="no toy-world annotations"):
        tw.load_annotations(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(tw.ToyWorldError, match="not valid JSON"):
        tw.load_annotations(tmp_path)


# ----------------------------------------------------------------------------------------------
# Toy-world evaluation (shan.toyworld_eval) against hand-made predictions
# ----------------------------------------------------------------------------------------------


def _records(n: int = 12):
    return [tw._scene_record(tw.generate_scene(s)[1], f"r{i}", f"r{i}.png")
            for i, s in enumerate(SEEDS[:n])]  # fmt: skip


def test_detection_metrics_perfect_and_wrong():
    from shan.toyworld_eval import detection_metrics

    recs = _records()
    boxes = [np.array([o["box"] for o in r["objects"]]) for r in recs]
    labels = [[o["shape"] for o in r["objects"]] for r in recs]
    colours = [[o["colour"] for o in r["objects"]] for r in recs]
    scores = [[0.9] * len(r["objects"]) for r in recs]
    m = detection_metrics(boxes, labels, scores, colours, recs, tw.SHAPES)
    assert m["map50"] == pytest.approx(1.0) and m["colour_acc"] == 1.0 and m["recall50"] == 1.0
    wrong_shape = [[tw.SHAPES[(tw.SHAPES.index(x) + 1) % 8] for x in lb] for lb in labels]
    wrong_colour = [[tw.COLOURS and "red" if c != "red" else "blue" for c in cs] for cs in colours]
    m2 = detection_metrics(boxes, wrong_shape, scores, wrong_colour, recs, tw.SHAPES)
    assert m2["map50"] == 0.0 and m2["colour_acc"] == 0.0
    shifted = [b + 200 for b in boxes]
    assert detection_metrics(shifted, labels, scores, colours, recs, tw.SHAPES)["map50"] == 0.0


class _BagOfWordsGrounder:
    """β from region features that one-hot encode (shape, colour): a word attends to the regions
    showing its shape / colour (uniform for other words)."""

    def __init__(self, vocab, invert: bool = False):
        self.vocab, self.invert = vocab, invert
        self.cfg = type("C", (), {"max_words": 64})()
        self.dim = {}
        for si, s in enumerate(tw.SHAPES):
            for w in tw.SHAPE_WORDS[s]:
                self.dim[w] = self.dim[tw._plural(w)] = si
        for ci, c in enumerate(tw.COLOURS):
            for w in tw.COLOUR_WORDS[c]:
                self.dim[w] = 8 + ci

    def explain(self, feats, mask, tokens, length):
        import torch

        words = [self.vocab.itos[int(t)] for t in tokens[:length]]
        beta = torch.full((feats.shape[0], length), 1.0 / feats.shape[0])
        for j, w in enumerate(words):
            if w in self.dim:
                col = feats[:, self.dim[w]] + 1e-3 * torch.arange(feats.shape[0], 0, -1)
                beta[:, j] = -col if self.invert else col
        return type("E", (), {"beta": beta})()


def test_grounding_accuracy_of_a_perfect_and_an_inverted_grounder():
    from shan.data.vocab import Vocabulary
    from shan.toyworld_eval import grounding_accuracy

    recs = _records()
    k = 6
    feats = np.zeros((len(recs), k, 16), dtype=np.float32)
    boxes = np.zeros((len(recs), k, 4), dtype=np.float32)
    nreg = np.zeros(len(recs), dtype=np.int64)
    for i, r in enumerate(recs):
        for j, o in enumerate(r["objects"]):
            feats[i, j, tw.SHAPES.index(o["shape"])] = 1
            feats[i, j, 8 + list(tw.COLOURS).index(o["colour"])] = 1
            boxes[i, j] = o["box"]
        nreg[i] = len(r["objects"]) + 1  # plus one background region
        boxes[i, len(r["objects"])] = [0, 0, 256, 256]
    data = {"feats": feats, "boxes": boxes, "nregions": nreg, "records": recs}
    vocab = Vocabulary.build([c["text"] for r in recs for c in r["captions"]])
    good = grounding_accuracy(_BagOfWordsGrounder(vocab), vocab, data, max_images=None)
    bad = grounding_accuracy(_BagOfWordsGrounder(vocab, invert=True), vocab, data, max_images=None)
    assert good["n"] > 100 and good["skipped_captions"] == 0
    # Without binding, a word whose shape/colour two objects share may pick the other object:
    # perfect on unambiguous words, well above chance overall.
    assert good["unambiguous"] == 1.0 and good["unambiguous_n"] > 100
    assert good["accuracy"] > 0.75 and good["per_role"]["shape"] > 0.75
    assert bad["accuracy"] < 0.2


@pytest.mark.slow
def test_reproduce_pipeline_end_to_end_tiny(tmp_path):
    """The one-command pipeline at toy sizes: every stage runs and every artefact is written."""
    mod = _reproduce_module()
    out = tmp_path / "run"
    rc = mod.main(["--quick", "--device", "cpu", "--out", str(out), "--train-images", "16",
                   "--dev-images", "5", "--test-images", "6", "--image-size", "64",
                   "--shan-batch", "8", "--workers", "1", "--num-examples", "2"])  # fmt: skip
    assert rc == 0
    ck = out / "checkpoints"
    metrics = json.loads((ck / "metrics.json").read_text())
    for key in ("retrieval", "ablations", "detector", "grounding", "hard_negatives", "timings_s"):
        assert key in metrics
    assert metrics["retrieval"]["n_images"] == 6
    assert set(metrics["ablations"]["switch"]) == {"L2L", "G2L", "G2G"}
    assert f"{metrics['retrieval']['total']['rsum']:.1f}" in (ck / "README.md").read_text()
    # Another run's headline figures can be listed in the card, as measured.
    metrics["reproductions"] = [mod.summarize_run(metrics, "a second run")]
    mod.write_model_card(metrics, tmp_path / "card.md")
    card_lines = (tmp_path / "card.md").read_text().splitlines()
    row = next(x for x in card_lines if "| a second run |" in x)
    assert f"| {metrics['detector']['map50']:.3f} |" in row
    assert (ck / "shan" / "model.safetensors").is_file()
    assert (ck / "detector" / "detector.safetensors").is_file()
    from shan.checkpoint import load_checkpoint

    loaded = load_checkpoint(ck / "shan")
    assert loaded.extra["detector"] == {"kind": "toy", "weights": "../detector"}
    examples = json.loads((out / "assets" / "examples.json").read_text())
    for ex in examples:
        assert (out / "assets" / ex["image"]).is_file() and len(ex["captions"]) == 5
        assert ex["hard_negative"] not in ex["captions"]

    # Again, reusing data and detector, with ablations by training: one model per single step and
    # the full model, trained for the same number of epochs, side by side in the card.
    det_before = (out / "detector" / "detector.safetensors").read_bytes()
    rc = mod.main(["--quick", "--device", "cpu", "--out", str(out), "--train-images", "16",
                   "--dev-images", "5", "--test-images", "6", "--image-size", "64",
                   "--shan-batch", "8", "--workers", "1", "--num-examples", "2", "--reuse",
                   "--ablations", "train"])  # fmt: skip
    assert rc == 0
    assert (out / "detector" / "detector.safetensors").read_bytes() == det_before
    ab = json.loads((ck / "metrics.json").read_text())["ablations"]
    assert set(ab["trained"]) == {"L2L", "G2L", "G2G", "all three"}
    assert ab["epochs"] == {"single_step": 1, "all_three": 1}
    card = (ck / "README.md").read_text()
    for name in ("L2L", "G2L", "G2G"):
        assert f"| {name} only (trained) | " in card
    assert f"{ab['trained']['G2G']['rsum']:.1f} |" in card
    assert "| all three (trained the same way) |" in card


def _reproduce_module():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_toyworld.py"
    spec = importlib.util.spec_from_file_location("reproduce_toyworld", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproduce_presets_follow_the_device_and_flags_override_them():
    mod = _reproduce_module()
    cpu = mod.parse_args(["--device", "cpu"])
    assert cpu.preset == "cpu"
    assert cpu.time_budget <= 2 * 3600 and cpu.det_mosaic == 1 and cpu.test_images == 1000
    quick = mod.parse_args(["--quick", "--device", "cpu"])
    assert quick.preset == "quick" and quick.time_budget is None and quick.train_images < 100
    own = mod.parse_args(["--device", "cpu", "--train-images", "10", "--det-mosaic", "3",
                          "--time-budget", "60", "--det-share", "0.2"])  # fmt: skip
    assert (own.train_images, own.det_mosaic, own.time_budget) == (10, 3, 60.0)
    assert own.det_seconds == pytest.approx(12.0)
    assert own.dev_images == cpu.dev_images  # untouched values keep the preset's
