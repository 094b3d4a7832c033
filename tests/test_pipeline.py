"""The demo pipeline (image → regions → scores → explanation) on good and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demo.pipeline import (
    MAX_CAPTIONS,
    MAX_IMAGE_SIDE,
    MAX_PIXELS,
    MIN_IMAGE_SIDE,
    DemoPipeline,
    InputError,
    SetupError,
    load_examples,
    load_image,
    parse_captions,
)
from shan.detect.base import Regions
from shan.explain import box_heatmap, step_contributions
from tests.app_fixtures import (
    EXAMPLES_JSON,
    SHIPPED_CHECKPOINT,
    make_fixture_app_checkpoint,
    make_pipeline,
    scene,
)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> DemoPipeline:
    torch.manual_seed(0)
    return make_pipeline(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def img_path(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "scene.png"
    scene().save(p)
    return p


# ---- match on good input ---------------------------------------------------------------------


def test_match_ranks_and_explains(pipe, img_path):
    caps = ["a red circle left of a blue square", "a green triangle", "two black circles"]
    r = pipe.match(str(img_path), "\n".join(caps))
    assert r.captions == caps
    # only the best caption is explained up front; the others on demand, without detection
    assert [e is not None for e in r.explanations] == [m == r.order[0] for m in range(3)]
    calls = pipe.extractor.calls
    for m in range(3):
        assert pipe.explain(r, m) is r.explanations[m]
    assert pipe.extractor.calls == calls
    with pytest.raises(InputError):
        pipe.explain(r, 3)
    assert r.scores.shape == (3, 4)
    totals = r.scores[:, 0]
    assert list(totals[r.order]) == sorted(totals, reverse=True)
    k = len(r.regions)
    for m, e in enumerate(r.explanations):
        n = len(e.words)
        assert e.beta.shape == (k, n) and e.alpha.shape == (k, n)
        np.testing.assert_allclose(e.beta.sum(0), 1.0, atol=1e-5)  # word → region softmax
        np.testing.assert_allclose(e.alpha.sum(1), 1.0, atol=1e-5)  # region → word softmax
        for arr, size in ((e.delta, k), (e.img_pool, k), (e.gamma, n), (e.txt_pool, n)):
            assert arr.shape == (size,)
            assert abs(arr.sum() - 1.0) < 1e-4
        # the per-pair explanation agrees with the batched all-pairs scorer
        np.testing.assert_allclose(
            [e.scores[key] for key in ("total", "l2l", "g2l", "g2g")], r.scores[m], atol=1e-4
        )
        assert abs(sum(e.contributions.values()) - e.scores["total"]) < 1e-4
        assert abs(sum(e.shares.values()) - 1.0) < 1e-6
    assert r.image.size == Image.open(img_path).size


def test_geometry_model_gets_each_regions_box_as_fractions_of_its_image(tmp_path, img_path):
    """A model with ``use_geometry`` is scored in the app as in training: with every region's
    box divided by the image size — Match's scores, its explanations and Search agree."""
    from shan.detect.base import stack_regions

    pipe = make_pipeline(tmp_path, geometry=True)
    caps = ["a red circle left of a blue square", "a blue square left of a red circle"]
    r = pipe.match(str(img_path), "\n".join(caps))
    feats, mask, boxes = stack_regions([r.regions], with_boxes=True)
    assert float(boxes.max()) <= 1.0 and float(boxes[0, :, 2].max()) > 0.3  # fractions, not px
    batch = pipe._encode_text(caps)
    with torch.inference_mode():
        img = pipe.model.encode_images(feats, mask, boxes)
        want = pipe.model.score(img, pipe.model.encode_captions(batch)).total[0].numpy()
        flipped = boxes.clone()
        flipped[..., [0, 2]] = 1.0 - boxes[..., [2, 0]]  # the mirrored layout scores differently
        img_f = pipe.model.encode_images(feats, mask, flipped)
        other = pipe.model.score(img_f, pipe.model.encode_captions(batch)).total[0].numpy()
    np.testing.assert_allclose(r.scores[:, 0], want, atol=1e-4)
    assert np.abs(other - want).max() > 1e-4
    for m in range(2):
        np.testing.assert_allclose(pipe.explain(r, m).scores["total"], want[m], atol=1e-4)


def test_match_does_not_keep_state(pipe, img_path):
    a = pipe.match(str(img_path), "a red circle")
    b = pipe.match(scene(seed=3), "a red circle\na blue square")
    c = pipe.match(str(img_path), "a red circle")
    np.testing.assert_allclose(a.scores, c.scores, atol=1e-6)
    assert len(b.captions) == 2 and len(a.captions) == 1


# ---- images PIL can read ---------------------------------------------------------------------


def _exif_rotated(tmp: Path) -> Path:
    im = Image.new("RGB", (120, 60), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    p = tmp / "rot.jpg"
    im.save(p, exif=exif.tobytes())
    return p


def _images(tmp: Path) -> dict[str, tuple[object, tuple[int, int]]]:
    base = scene((200, 100))
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    sixteen = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    p16 = tmp / "sixteen.png"
    sixteen.save(p16)
    gif = tmp / "anim.gif"
    base.save(gif, save_all=True, append_images=[scene((200, 100), seed=1)], duration=100)
    return {
        "rgba": (base.convert("RGBA"), (200, 100)),
        "palette": (pal, (200, 100)),
        "grey_L": (base.convert("L"), (200, 100)),
        "grey_16bit_file": (p16, (64, 48)),
        "int32_I": (Image.fromarray(np.full((50, 40), 70000, np.int32)), (40, 50)),
        "cmyk": (base.convert("CMYK"), (200, 100)),
        "exif_rotated": (_exif_rotated(tmp), (60, 120)),
        "one_pixel": (Image.new("RGB", (1, 1), "blue"), (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)),
        "very_large": (Image.new("RGB", (3000, 1500), "green"), (MAX_IMAGE_SIDE, 512)),
        "animated_gif": (gif, (200, 100)),
        "numpy": (np.zeros((30, 40, 3), np.uint8) + 128, (43, MIN_IMAGE_SIDE)),
    }


def test_every_pil_image_gives_a_result(pipe, tmp_path):
    for name, (src, size) in _images(tmp_path).items():
        r = pipe.match(src if not isinstance(src, Path) else str(src), "a red circle")
        assert r.image.mode == "RGB", name
        assert r.image.size == size, name
        assert np.isfinite(r.scores).all(), name
        assert r.explanations[0].image_size == size, name


def test_image_notices(tmp_path):
    _, notes = load_image(Image.new("RGB", (3000, 1500)))
    assert any("downscaled" in n for n in notes)
    _, notes = load_image(Image.new("RGB", (1, 1)))
    assert any("tiny" in n for n in notes)
    gif = _images(tmp_path)["animated_gif"][0]
    _, notes = load_image(str(gif))
    assert any("first frame" in n for n in notes)


def test_exif_orientation_applied(tmp_path):
    im, _ = load_image(str(_exif_rotated(tmp_path)))
    assert im.size == (60, 120)


def test_sixteen_bit_is_contrast_stretched(tmp_path):
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    im, _ = load_image(Image.fromarray(arr))
    grey = np.asarray(im)[..., 0]
    assert grey.min() == 0 and grey.max() == 255  # not clipped to white as a plain convert() does


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    im, _ = load_image(rgba)
    assert np.asarray(im)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "content, name",
    [(b"this is not an image", "notes.txt"), (b"\x89PNG\r\n\x1a\nbroken", "broken.png")],
)
def test_non_image_files_give_clear_error(pipe, tmp_path, content, name):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match="not an image"):
        pipe.match(str(p), "a red circle")


def test_missing_image(pipe, tmp_path):
    with pytest.raises(InputError, match="upload an image"):
        pipe.match(None, "a red circle")
    with pytest.raises(InputError, match="not found"):
        pipe.match(str(tmp_path / "nope.png"), "a red circle")


# ---- captions --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n", None])
def test_empty_captions_rejected(pipe, img_path, text):
    with pytest.raises(InputError, match="at least one caption"):
        pipe.match(str(img_path), text)


def test_more_than_ten_captions_keeps_ten(pipe, img_path):
    text = "\n".join(f"a red circle number {i}" for i in range(13))
    r = pipe.match(str(img_path), text)
    assert len(r.captions) == MAX_CAPTIONS == 10
    assert r.captions[-1].endswith("9")
    assert any("13 captions" in n for n in r.notices)


def test_long_caption_truncated_with_notice(pipe, img_path):
    long = " ".join(["red circle"] * 400)
    r = pipe.match(str(img_path), long)
    assert len(r.explanations[0].words) == pipe.max_words  # fixture: 12 tokens
    assert r.explanations[0].truncated
    assert any("very long" in n for n in r.notices)  # cut to MAX_CAPTION_CHARS characters
    assert any(f"longer than {pipe.max_words} tokens" in n for n in r.notices)


def test_unknown_words_marked(pipe, img_path):
    r = pipe.match(str(img_path), "a purple zebra circle")
    e = r.explanations[0]
    assert e.display_words == ["a", "purple?", "zebra?", "circle"]
    assert any("zebra" in n and "unknown" in n for n in r.notices)
    r = pipe.match(str(img_path), "qwerty asdf")
    assert any("none of its words" in n for n in r.notices)


@pytest.mark.parametrize(
    "text",
    ["Ünïcödé café — naïve", "一只红色的圆", "🔴 circle 🟦", "RED  Circle!!!", "\u200b\u00a0red"],
)
def test_unicode_captions_score(pipe, img_path, text):
    r = pipe.match(str(img_path), text)
    assert np.isfinite(r.scores).all()
    assert len(r.explanations[0].words) >= 1


def test_parse_captions_cleans_lines():
    caps, notes = parse_captions("  a  red \t circle \n\n  \nblue square  ")
    assert caps == ["a red circle", "blue square"] and notes == []
    caps, _ = parse_captions(["x", " ", "y"])
    assert caps == ["x", "y"]


# ---- search ----------------------------------------------------------------------------------


def test_search_ranks_images_and_skips_bad_files(pipe, tmp_path):
    paths = []
    for s in range(3):
        p = tmp_path / f"s{s}.png"
        scene(seed=s).save(p)
        paths.append(str(p))
    bad = tmp_path / "bad.txt"
    bad.write_text("nope")
    r = pipe.search([*paths, str(bad)], "a red circle")
    assert r.scores.shape == (3, 4)
    assert list(r.scores[r.order, 0]) == sorted(r.scores[:, 0], reverse=True)
    assert r.names[r.order[0]] == Path(paths[r.order[0]]).name
    assert any("Skipped" in n and "bad.txt" in n for n in r.notices)
    best = r.best
    assert best.beta.shape[1] == len(best.words)
    # the best pair's explanation scores what the ranking says it scored
    assert abs(best.scores["total"] - r.scores[r.order[0], 0]) < 1e-4


def test_search_explains_any_image_on_demand_from_its_stored_regions(pipe):
    r = pipe.search([scene(seed=s) for s in range(3)], "a red circle")
    assert [e is not None for e in r.explanations].count(True) == 1  # only the best, at first
    calls = pipe.extractor.calls
    for i in range(3):
        e = pipe.explain_image(r, i)
        assert e is pipe.explain_image(r, i)  # computed once, then kept
        assert abs(e.scores["total"] - r.scores[i, 0]) < 1e-4  # what the ranking says
        assert e.boxes.shape[0] == len(r.regions[i])
    assert pipe.extractor.calls == calls  # no new detection
    with pytest.raises(InputError, match="ranked images"):
        pipe.explain_image(r, 3)


def test_same_words_in_another_order_are_pointed_out(pipe, img_path):
    r = pipe.match(
        img_path,
        "a red circle left of a blue square\na blue square left of a red circle\na red circle",
    )
    said = [n for n in r.notices if "same words in another order" in n]
    assert len(said) == 1 and said[0].startswith("Captions 1 and 2")
    assert f"{r.scores[0, 0]:.3f}" in said[0] and f"{r.scores[1, 0]:.3f}" in said[0]
    plain = pipe.match(img_path, "a red circle\na blue square")
    assert not [n for n in plain.notices if "another order" in n]


def test_vocabulary_lists_the_models_words(pipe):
    words = pipe.vocabulary()
    assert "circle" in words and "<unk>" not in words and "<pad>" not in words


def test_search_with_padding_matches_single_scores(pipe):
    """Images with different region counts are padded together: padding must not change scores."""
    a, b = scene(seed=1), scene((90, 300), seed=2)
    together = pipe.search([a, b], "a red circle").scores
    alone = np.concatenate([pipe.search([x], "a red circle").scores for x in (a, b)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_search_errors(pipe, tmp_path):
    with pytest.raises(InputError, match="at least one image"):
        pipe.search([], "a red circle")
    bad = tmp_path / "bad.txt"
    bad.write_text("nope")
    with pytest.raises(InputError, match="None of the uploaded files"):
        pipe.search([str(bad)], "a red circle")
    with pytest.raises(InputError, match="at least one caption"):
        pipe.search([scene()], "  ")
    r = pipe.search([scene()], "a red circle\na blue square")
    assert r.caption == "a red circle"
    assert any("only the first line" in n for n in r.notices)


# ---- explanation numbers ---------------------------------------------------------------------


def test_box_heatmap_paints_boxes():
    boxes = np.array([[0, 0, 50, 50], [50, 50, 100, 100], [0, 0, 100, 100]], float)
    heat = box_heatmap([0.7, 0.2, 0.1], boxes, (100, 100), max_side=100)
    assert heat.shape == (100, 100)
    assert heat.max() == pytest.approx(1.0)
    assert heat[10, 10] == pytest.approx(1.0)  # the top box
    assert heat[75, 75] == pytest.approx(0.2 / 0.7)  # max over overlapping boxes
    assert heat[10, 90] == pytest.approx(0.1 / 0.7)  # only the whole-image box
    summed = box_heatmap([0.7, 0.2, 0.1], boxes, (100, 100), max_side=100, mode="sum")
    assert summed[75, 75] == pytest.approx(0.3 / 0.8)
    wide = box_heatmap([1.0], [[0, 0, 10, 10]], (1000, 250), max_side=200)
    assert wide.shape == (50, 200)
    assert box_heatmap([0.0], [[0, 0, 5, 5]], (10, 10)).max() == 0.0
    gaps = box_heatmap([0.5], [[0, 0, 5, 5]], (10, 10), uncovered=np.nan)
    assert gaps[2, 2] == 1.0 and np.isnan(gaps[8, 8])  # outside every box: "no region"
    with pytest.raises(ValueError):
        box_heatmap([1.0, 2.0], [[0, 0, 5, 5]], (10, 10))


def test_step_contributions():
    c, s = step_contributions({"l2l": 0.5, "g2l": -0.25, "g2g": 0.25}, (1.0, 2.0, 1.0))
    assert c == {"l2l": 0.5, "g2l": -0.5, "g2g": 0.25}
    assert s["l2l"] == pytest.approx(0.4) and s["g2l"] == pytest.approx(0.4)
    c, s = step_contributions({"l2l": 0.5, "g2l": 0.5, "g2g": 0.5}, enabled={"g2g": False})
    assert c["g2g"] == 0.0 and s["g2g"] == 0.0 and s["l2l"] == pytest.approx(0.5)
    _, s = step_contributions({"l2l": 0.0, "g2l": 0.0, "g2g": 0.0})
    assert set(s.values()) == {0.0}


# ---- loading ---------------------------------------------------------------------------------


def test_missing_checkpoint_is_setup_error(tmp_path):
    with pytest.raises(SetupError, match="not found"):
        DemoPipeline.from_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SetupError, match="could not load checkpoint"):
        DemoPipeline.from_checkpoint(str(tmp_path / "empty"))


def test_from_checkpoint_uses_detector_named_in_config(tmp_path):
    ckpt = make_fixture_app_checkpoint(tmp_path)
    pipe = DemoPipeline.from_checkpoint(str(ckpt), device="cpu")
    assert type(pipe.extractor).__name__ == "ToyDetector"
    r = pipe.match(scene(), "a red circle\na blue square")
    assert r.scores.shape == (2, 4) and len(r.regions) >= 1
    with pytest.raises(SetupError, match="detector"):
        DemoPipeline.from_checkpoint(str(ckpt), detector_weights=str(tmp_path / "nowhere"))


def test_from_checkpoint_takes_the_folder_with_shan_and_detector(tmp_path):
    """``--checkpoint checkpoints``: the folder holding ``shan/`` beside ``detector/``."""
    root = make_fixture_app_checkpoint(tmp_path).parent
    pipe = DemoPipeline.from_checkpoint(str(root), device="cpu")
    assert type(pipe.extractor).__name__ == "ToyDetector"
    assert f"`{root / 'shan'}`" in pipe.description and "detector `toy`" in pipe.description
    assert pipe.match(scene(), "a red circle").scores.shape == (1, 4)


def test_detector_that_does_not_fit_the_model_is_one_line(tmp_path):
    from shan.checkpoint import detector_link
    from tests.app_fixtures import make_checkpoint

    root = make_fixture_app_checkpoint(tmp_path).parent
    make_checkpoint(
        root / "other", img_dim=16, extra={"detector": detector_link("toy", "../detector")}
    )
    with pytest.raises(SetupError) as err:
        DemoPipeline.from_checkpoint(str(root / "other"), device="cpu")
    message = str(err.value)
    assert "\n" not in message and "256-d region features" in message and "img_dim=16" in message


def test_load_examples_formats(tmp_path):
    scene().save(tmp_path / "a.png")
    data = [
        {"image": "a.png", "captions": ["a red circle"], "hard_negative": "a blue circle"},
        {"file": "a.png", "true_captions": "one", "hard_negatives": ["neg"]},
        {"image": "missing.png", "captions": ["x"]},
    ]
    (tmp_path / "ex.json").write_text(json.dumps({"examples": data}))
    ex = load_examples(tmp_path / "ex.json")
    assert len(ex) == 2
    assert ex[0].all_captions == ["a red circle", "a blue circle"]
    assert ex[1].captions == ["one"] and ex[1].hard_negative == "neg"
    assert load_examples(tmp_path / "none.json") == []


@pytest.mark.skipif(
    not (SHIPPED_CHECKPOINT / "config.json").is_file() or not EXAMPLES_JSON.is_file(),
    reason="shipped checkpoints/shan or assets/examples.json not built yet",
)
def test_shipped_model_prefers_true_captions():
    pipe = DemoPipeline.from_checkpoint(str(SHIPPED_CHECKPOINT), device="cpu")
    examples = load_examples(EXAMPLES_JSON)
    assert examples
    wins = 0
    for ex in examples:
        assert ex.hard_negative
        r = pipe.match(ex.image, ex.all_captions)
        true_best = r.scores[: len(ex.captions), 0].max()
        wins += int(true_best > r.scores[-1, 0])
    assert wins >= 0.75 * len(examples), (
        f"true caption beat the hard negative {wins}/{len(examples)}"
    )


def test_image_bytes_roundtrip_jpeg(pipe, tmp_path):
    buf = io.BytesIO()
    scene().save(buf, format="JPEG")
    p = tmp_path / "x.jpg"
    p.write_bytes(buf.getvalue())
    r = pipe.match(str(p), "a red circle")
    assert r.image.size == (240, 160)


def test_detector_flags_override_the_config(tmp_path):
    ckpt = make_fixture_app_checkpoint(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ckpt.iterdir():  # the same model without a detector reference
        data = f.read_bytes()
        if f.name == "config.json":
            cfg = json.loads(data)
            cfg["extra"] = {}
            data = json.dumps(cfg).encode()
        (bare / f.name).write_bytes(data)
    with pytest.raises(SetupError, match="names no detector"):
        DemoPipeline.from_checkpoint(str(bare))
    with pytest.raises(SetupError, match="no weights"):
        DemoPipeline.from_checkpoint(str(bare), detector="toy")
    pipe = DemoPipeline.from_checkpoint(
        str(bare), detector="toy", detector_weights=str(tmp_path / "detector")
    )
    assert pipe.match(scene(), "a red circle").scores.shape == (1, 4)


def test_cpu_threads_share_the_cores():
    from demo.pipeline import cpu_threads

    assert cpu_threads(2, cpus=2) == 1
    assert cpu_threads(2, cpus=16) == 8
    assert cpu_threads(4, cpus=1) == 1
    assert cpu_threads(0, cpus=4) == 4


def test_model_card_read_without_front_matter(tmp_path):
    from demo.pipeline import read_model_card

    ckpt = tmp_path / "shan"
    ckpt.mkdir()
    assert read_model_card(ckpt) is None
    (tmp_path / "README.md").write_text("# Card\nnumbers")
    assert read_model_card(ckpt) == "# Card\nnumbers"
    (ckpt / "README.md").write_text("---\nlicense: x\n---\n# Own card\n")
    assert read_model_card(ckpt) == "# Own card"


# ---- image budget (issue 9, findings 4 and 7) ------------------------------------------------


def _one_bit_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size, 0).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size", [(1, 5000), (5000, 4), (10000, 20), (400, 10)])
def test_extremely_thin_images_refused_with_their_size(tmp_path, size):
    p = tmp_path / "thin.png"
    Image.new("RGB", size, "red").save(p)
    w, h = size
    with pytest.raises(InputError, match=rf"'thin.png' is {w}×{h} pixels, too thin"):
        load_image(str(p))
    with pytest.raises(InputError, match="too thin"):
        load_image(Image.new("RGB", size))


def test_aspect_limit_is_inclusive():
    im, _ = load_image(Image.new("RGB", (20 * 60, 60)))  # exactly MAX_ASPECT : 1 is read
    assert im.size == (MAX_IMAGE_SIDE, round(MAX_IMAGE_SIDE / 20))


def test_pixel_budget_checked_from_the_header_before_decoding(monkeypatch):
    """A 10 KB 1-bit PNG of 9000² pixels is refused without decoding a single pixel."""
    data = _one_bit_png((9000, 9000))
    assert len(data) < 20_000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**12)  # our budget, not PIL's, decides
    with pytest.raises(InputError, match=r"9000×9000 pixels \(81 megapixels\).*at most 36"):
        load_image(data)
    assert decoded == []


def test_pixel_budget_also_holds_when_pil_refuses_first(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL raises above twice this
    with pytest.raises(InputError, match="too many pixels"):
        load_image(_one_bit_png((100, 100)))


def test_image_just_inside_the_budget_is_read():
    side = int(MAX_PIXELS**0.5)
    im, notes = load_image(_one_bit_png((side, side)))
    assert im.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE) and any("downscaled" in n for n in notes)


def test_big_jpeg_is_decoded_at_reduced_scale(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (4800, 3200), (200, 30, 30)).save(p, quality=80)
    im, notes = load_image(str(p))
    assert im.size == (MAX_IMAGE_SIDE, round(MAX_IMAGE_SIDE * 2 / 3))
    assert np.abs(np.asarray(im)[100, 100].astype(int) - [200, 30, 30]).max() < 8


def test_encoded_bytes_are_an_image_source():
    buf = io.BytesIO()
    scene().save(buf, "PNG")
    im, _ = load_image(buf.getvalue())
    assert im.size == scene().size
    with pytest.raises(InputError, match="The pasted image is not an image"):
        load_image(b"definitely not an image")


def test_captions_must_be_text():
    with pytest.raises(InputError, match="must be text"):
        parse_captions({"a": 1})  # type: ignore[arg-type]
    caps, notes = parse_captions("a red circle\n" * 10_000)
    assert len(caps) == MAX_CAPTIONS and any("very long" in n for n in notes)


def test_search_skips_thin_and_regionless_images_and_names_them(pipe, tmp_path):
    good = tmp_path / "good.png"
    scene().save(good)
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 5000), "red").save(thin)
    r = pipe.search([str(thin), str(good)], "a red circle")
    assert r.names == ["good.png"] and r.scores.shape == (1, 4)
    assert any("Skipped" in n and "'thin.png'" in n and "too thin" in n for n in r.notices)

    class Flaky:
        """Finds nothing in red images; fails outright on green ones."""

        feature_dim = pipe.extractor.feature_dim

        def extract(self, images):
            out = []
            for im in images:
                r, g, _ = np.asarray(im).reshape(-1, 3).mean(0)
                if g > 200 and r < 100:
                    raise RuntimeError("detector crashed")
                regs = pipe.extractor.extract([im])[0]
                if r > 200 and g < 100:
                    regs = Regions(torch.zeros(0, 4), torch.zeros(0, self.feature_dim),
                                   torch.zeros(0), [], [], torch.zeros(0), im.size)  # fmt: skip
                out.append(regs)
            return out

    flaky = DemoPipeline(pipe.model, pipe.text, Flaky(), "cpu")
    red, green = tmp_path / "red.png", tmp_path / "green.png"
    Image.new("RGB", (64, 64), (230, 20, 20)).save(red)
    Image.new("RGB", (64, 64), (20, 230, 20)).save(green)
    r = flaky.search([str(red), str(good), str(green)], "a red circle")
    assert r.names == ["good.png"]
    assert any("Skipped red.png: the detector found no regions" in n for n in r.notices)
    assert any("Skipped green.png: the detector could not process it" in n for n in r.notices)
    with pytest.raises(InputError, match="no regions in any"):
        flaky.search([str(red)], "a red circle")
