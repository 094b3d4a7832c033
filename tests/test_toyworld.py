"""The toy world's scenes and splits: determinism, visible boxes, occlusion, contrast on every
background, duplicates, presets, annotation files and the CLI; then the toy-world metrics
(``shan.toyworld_eval``) against hand-made predictions and the reproduce script."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from shan import toyworld as tw
from shan.toyworld import lexicon as lx
from shan.toyworld.captions import plural
from shan.toyworld.world import (
    background_array,
    colour_distance,
    hidden_by,
    nearest_colour,
    owner_map,
)

SEEDS = [tw.image_seed(3, "train", i) for i in range(60)]


@pytest.fixture(scope="module")
def scenes():
    return [tw.generate_scene(s) for s in SEEDS]


def _rendered_without(scene: tw.Scene, i: int) -> np.ndarray:
    rest = scene.copy()
    del rest.objects[i]
    return np.asarray(tw.render_scene(rest)).astype(np.int32)


def _visible_pixels(scene: tw.Scene, img: np.ndarray, i: int) -> np.ndarray:
    """Pixels object ``i`` changes in the picture (measured by drawing the scene without it)."""
    return np.abs(img - _rendered_without(scene, i)).sum(-1) > 0


def test_same_seed_same_image_and_annotations():
    img1, s1 = tw.generate_scene(SEEDS[5])
    img2, s2 = tw.generate_scene(SEEDS[5])
    assert np.array_equal(np.asarray(img1), np.asarray(img2))
    assert tw.scene_record(s1, "a", "a.png") == tw.scene_record(s2, "a", "a.png")
    img3, s3 = tw.generate_scene(SEEDS[6])
    assert not np.array_equal(np.asarray(img1), np.asarray(img3))
    # A different world from the same seed is a different scene.
    img4, _ = tw.generate_scene(SEEDS[5], tw.WorldConfig.classic())
    assert not np.array_equal(np.asarray(img1), np.asarray(img4))


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
        assert not tw.scene_problems(scene)
        for o in scene.objects:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= tw.IMAGE_SIZE and 0 <= y1 < y2 <= tw.IMAGE_SIZE
            f = o.frame
            assert f[0] <= x1 and f[1] <= y1 and x2 <= f[2] and y2 <= f[3]
            assert o.shape in tw.SHAPES and o.colour in tw.COLOURS
            assert o.size in tw.SIZES and o.pattern in tw.PATTERNS
            assert nearest_colour(o.rgb) == o.colour
    assert counts >= {1, 2, 3, 4, 5}


def test_boxes_are_the_visible_pixels(scenes):
    """Box and visible fraction agree with the pixels each object changes in the image."""
    checked = occluded = 0
    for img, scene in scenes[:25]:
        arr = np.asarray(img).astype(np.int32)
        for i, o in enumerate(scene.objects):
            vis = _visible_pixels(scene, arr, i)
            ys, xs = np.nonzero(vis)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert np.abs(np.array(box) - np.array(o.box)).max() <= 1, (o, box)
            x1, y1, x2, y2 = o.frame
            full = tw.world.shape_mask(o.shape, x2 - x1, y2 - y1).sum()
            assert vis.sum() / full == pytest.approx(o.visible, abs=0.02)
            checked += 1
            occluded += o.visible < 0.97
    assert checked > 50 and occluded >= 2


def test_occlusion_is_bounded_and_happens():
    cfg = tw.WorldConfig()
    hidden = []
    for k in range(150):
        scene = tw.sample_scene(tw.image_seed(1, "train", k), cfg)
        hidden += [1 - o.visible for o in scene.objects]
    hidden = np.array(hidden)
    assert hidden.max() <= cfg.max_occlusion + 1e-9
    assert (hidden > 0.03).mean() > 0.05  # partial overlaps are common, not accidental
    classic = tw.WorldConfig.classic()
    for k in range(60):
        scene = tw.sample_scene(tw.image_seed(1, "train", k), classic)
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert tw.world._iou(a.frame, b.frame) <= classic.max_iou


def test_in_front_of_is_the_drawing_order():
    scene = tw.build_scene(
        {
            "objects": [
                {"shape": "square", "colour": "blue", "x": 0.45, "y": 0.5},
                {"shape": "circle", "colour": "red", "size": "small", "x": 0.6, "y": 0.5},
            ],
            "background": "light grey",
        }
    )
    assert hidden_by(scene, 0, 1) > 0.02 and hidden_by(scene, 1, 0) == 0
    cfg = tw.WorldConfig()
    assert tw.world.relation_holds("in_front_of", 1, 0, scene, cfg)
    assert tw.world.relation_holds("behind", 0, 1, scene, cfg)
    assert not tw.world.relation_holds("in_front_of", 0, 1, scene, cfg)


@pytest.mark.parametrize("texture", tw.BACKGROUND_TEXTURES)
@pytest.mark.parametrize("tone", tw.BACKGROUND_TONES)
def test_objects_stand_out_on_every_background_kind(texture, tone):
    """On rendered pixels: each object's drawn colour is nameable and differs from the background
    pixels it covers by at least the world's contrast (grey and coloured backgrounds)."""
    for grey in (1.0, 0.0):
        cfg = tw.WorldConfig(
            background_textures={texture: 1}, background_tones={tone: 1}, background_grey_p=grey
        )
        for k in range(3):
            scene = tw.sample_scene(tw.image_seed(9, "test", k), cfg)
            assert (scene.background.texture, scene.background.tone) == (texture, tone)
            assert (scene.background.hue == "grey") == (grey == 1.0)
            img = np.asarray(tw.render_scene(scene)).astype(np.int32)
            bare = background_array(scene.background, scene.image_size, scene.seed).astype(int)
            own = owner_map(scene.objects, scene.image_size)
            for i, o in enumerate(scene.objects):
                vis = own == i
                # The fill colour covers much of the object (patterns add a lighter tint) ...
                assert (img[vis] == o.rgb).all(-1).mean() > 0.35, o
                assert nearest_colour(o.rgb) == o.colour
                # ... and stands out from every kind of background pixel under it.
                d = np.array([colour_distance(o.rgb, px) for px in bare[vis][::7]])
                assert np.percentile(d, 5) >= cfg.min_contrast - 1, (texture, tone, o)


def test_backgrounds_cover_tones_hues_and_textures():
    seen = set()
    for k in range(300):
        bg = tw.sample_scene(tw.image_seed(2, "train", k)).background
        seen.add((bg.tone, bg.hue == "grey", bg.texture))
        mean = np.mean(bg.colours[0])
        assert {"dark": mean < 90, "mid": 60 < mean < 180, "light": mean > 150}[bg.tone], bg
    assert len(seen) >= 25  # 3 tones x grey/colour x 5 textures = 30 kinds


def test_duplicates_follow_their_probability():
    def share(p):
        cfg = tw.WorldConfig(duplicate_p=p)
        n = 0
        for k in range(150):
            objs = tw.sample_scene(tw.image_seed(4, "train", k), cfg).objects
            n += len({o.kind() for o in objs}) < len(objs)
        return n / 150

    none, some = share(0.0), share(0.5)
    assert none < 0.15 and some > 0.45


def test_small_and_large_sizes_differ(scenes):
    sides = {"small": [], "large": []}
    for _, scene in scenes:
        for o in scene.objects:
            f = o.frame
            sides[o.size].append(max(f[2] - f[0], f[3] - f[1]))
    assert max(sides["small"]) < min(sides["large"])


def test_classic_preset_keeps_the_first_world():
    cfg = tw.WorldConfig.classic()
    words = {w for ws in lx.vocabulary_by_role("classic").values() for w in ws}
    for k in range(40):
        img, scene = tw.generate_scene(tw.image_seed(0, "test", k), cfg)
        bg = scene.background
        assert (
            bg.tone == "light" and bg.hue == "grey" and bg.texture in {"plain", "gradient", "noise"}
        )
        for c in scene.captions:
            assert set(c.tokens) <= words, c.text
            assert c.template != "fact"


def test_world_config_round_trip_and_errors():
    cfg = tw.WorldConfig(overlap_p=0.5, num_objects={2: 1.0})
    again = tw.WorldConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert tw.WorldConfig.preset("classic") == tw.WorldConfig.classic()
    with pytest.raises(tw.ToyWorldError, match="num_objects"):
        tw.WorldConfig(num_objects={7: 1.0})
    with pytest.raises(tw.ToyWorldError, match="background_textures"):
        tw.WorldConfig(background_textures={"marble": 1})
    with pytest.raises(tw.ToyWorldError, match="unknown WorldConfig fields"):
        tw.WorldConfig.from_dict({"colour_count": 3})
    with pytest.raises(tw.ToyWorldError, match="unknown world preset"):
        tw.WorldConfig.preset("toyworld3")
    for bad, message in (
        ({"num_objects": 3}, "malformed"),
        ({"overlap_p": "often"}, "malformed"),
        ({"overlap_p": 1.5}, r"overlap_p must be in \[0, 1\]"),
        ({"caption_weights": {"poem": 1}}, "caption_weights"),
        ({"relation_weights": {"left": -1, "right": 1}}, "relation_weights"),
    ):
        with pytest.raises(tw.ToyWorldError, match=message):
            tw.WorldConfig.from_dict(bad)


def test_captions_fall_back_to_a_listing_when_no_form_fits():
    cfg = tw.WorldConfig(caption_weights={"relation": 1}, num_objects={1: 1})
    img, scene = tw.generate_scene(SEEDS[0], cfg)  # one object: no relation to state
    assert len(scene.captions) == 5 and {c.template for c in scene.captions} == {
        "list_all",
        "list",
    }


def test_generate_split_is_independent_of_workers(tmp_path):
    p1 = tw.generate_split(tmp_path / "a", "test", 6, seed=7, workers=1)
    p2 = tw.generate_split(tmp_path / "b", "test", 6, seed=7, workers=2)
    a1, a2 = json.loads(p1.read_text()), json.loads(p2.read_text())
    assert a1 == a2
    for rec in a1["images"]:
        files = [rec["file"]] + [d["file"] for d in rec["distractors"]]
        for f in files:
            im1 = np.asarray(Image.open(tmp_path / "a" / f))
            assert np.array_equal(im1, np.asarray(Image.open(tmp_path / "b" / f)))
    # Any single image can be regenerated from (seed, split, index) and the saved world.
    cfg = tw.world_config(a1)
    assert cfg == tw.WorldConfig()
    img, scene = tw.generate_scene(tw.image_seed(7, "test", 3), cfg)
    assert np.array_equal(
        np.asarray(img), np.asarray(Image.open(tmp_path / "a" / a1["images"][3]["file"]))
    )
    assert [c.text for c in scene.captions] == [c["text"] for c in a1["images"][3]["captions"]]
    # ... and from its record alone.
    rec = a1["images"][3]
    again = tw.render_scene(tw.scene_from_record(rec))
    assert np.array_equal(np.asarray(again), np.asarray(img))
    d_img = np.asarray(Image.open(tmp_path / "a" / rec["distractors"][0]["file"]))
    assert np.array_equal(d_img, np.asarray(tw.render_scene(tw.distractor_scene(rec, 0))))


def test_annotations_hold_negatives_in_the_negs_record_shape(tmp_path):
    path = tw.generate_split(tmp_path, "train", 5, seed=2, workers=1)
    ann = tw.load_annotations(path)
    assert ann["world"] == tw.WorldConfig().to_dict()
    assert not (tmp_path / "distractors").exists()  # images only for the test split by default
    rows = tw.caption_negatives(ann)
    assert len(rows) == 5 * len(ann["images"])
    for row in rows:
        assert isinstance(row, list)
        for neg in row:
            assert set(neg) == {"type", "text"} and neg["type"] in tw.NEGATIVE_TYPES
    assert sum(map(len, rows)) > 2 * len(rows)
    rec = ann["images"][0]
    assert rec["hard_negative"] is None or rec["hard_negative"]["source_caption"] == 0


def test_negatives_file_round_trip_through_precomp(tmp_path):
    """caption_negatives feeds precomp.write_negatives line for line (one line per caption)."""
    from shan.data.precomp import read_negatives, write_negatives

    ann = tw.load_annotations(tw.generate_split(tmp_path / "s", "dev", 4, seed=1, workers=1))
    caps = [c["text"] for r in ann["images"] for c in r["captions"]]
    (tmp_path / "dev_caps.txt").write_text("\n".join(caps) + "\n")
    rows = tw.caption_negatives(ann)
    write_negatives(tmp_path, "dev", rows)
    assert read_negatives(tmp_path, "dev") == rows


def test_cli_writes_three_splits(tmp_path, capsys):
    rc = tw.main(
        ["--seed", "1", "--split-sizes", "3,2,2", "--out", str(tmp_path), "--workers", "1"]
    )
    assert rc == 0
    assert "images/s" in capsys.readouterr().out
    for split, n in (("train", 3), ("dev", 2), ("test", 2)):
        ann = tw.load_annotations(tmp_path / split)
        assert len(ann["images"]) == n and ann["split"] == split
        assert len(list((tmp_path / split / "images").glob("*.png"))) == n
    assert len(list((tmp_path / "test" / "distractors").glob("*.png"))) >= 2


def test_cli_presets_and_world_config_file(tmp_path, capsys):
    out = tmp_path / "c"
    assert tw.main(["--split-sizes", "1,0,0", "--out", str(out), "--preset", "classic",
                    "--workers", "1"]) == 0  # fmt: skip
    assert tw.load_annotations(out / "train")["world"]["name"] == "classic"
    conf = tmp_path / "w.json"
    conf.write_text(json.dumps({"num_objects": {"3": 1}, "overlap_p": 0.0}))
    assert tw.main(["--split-sizes", "2,0,0", "--out", str(tmp_path / "d"), "--world-config",
                    str(conf), "--workers", "1"]) == 0  # fmt: skip
    ann = tw.load_annotations(tmp_path / "d" / "train")
    assert all(len(r["objects"]) <= 3 for r in ann["images"])
    conf.write_text(json.dumps({"num_objects": {"9": 1}}))
    assert tw.main(["--split-sizes", "2,0,0", "--out", str(tmp_path / "e"), "--world-config",
                    str(conf)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "num_objects" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_rejects_bad_sizes(tmp_path, capsys):
    assert tw.main(["--split-sizes", "3,2", "--out", str(tmp_path)]) == 2
    assert "TRAIN,DEV,TEST" in capsys.readouterr().err
    assert tw.main(["--split-sizes", "3,-2,1", "--out", str(tmp_path)]) == 2
    assert tw.main(["--preset", "nope", "--out", str(tmp_path)]) == 2


def test_load_annotations_errors(tmp_path):
    with pytest.raises(tw.ToyWorldError, match="no toy-world annotations"):
        tw.load_annotations(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(tw.ToyWorldError, match="not valid JSON"):
        tw.load_annotations(tmp_path)
    (tmp_path / "annotations.json").write_text("[1, 2]")
    with pytest.raises(tw.ToyWorldError, match="no 'images' list"):
        tw.load_annotations(tmp_path)


# ----------------------------------------------------------------------------------------------
# Toy-world evaluation (shan.toyworld_eval) against hand-made predictions
# ----------------------------------------------------------------------------------------------


def _records(n: int = 12):
    return [tw.scene_record(tw.generate_scene(s)[1], f"r{i}", f"r{i}.png")
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
            for w in lx.SHAPE_WORDS[s]:
                self.dim[w] = self.dim[plural(w)] = si
        for ci, c in enumerate(tw.COLOURS):
            for w in lx.COLOUR_WORDS[c]:
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
