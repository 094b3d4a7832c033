"""The demo's pictures: right size and type, the heat where the weight is, no shared state."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

from demo import render, ui, views
from demo.pipeline import InputError
from demo.tabs.common import friendly
from shan.explain import box_heatmap
from tests.app_fixtures import REPO, make_pipeline, scene, synthetic_calibration


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    pipe = make_pipeline(tmp_path_factory.mktemp("render"))
    text = "a red circle left of a blue square\na purple zebra\na green one"
    return pipe.match(scene(), text, explain_all=True)


def _is_picture(arr) -> bool:
    return (
        isinstance(arr, np.ndarray)
        and arr.dtype == np.uint8
        and arr.ndim == 3
        and arr.shape[2] == 3
        and arr.shape[0] > 50
        and arr.shape[1] > 50
        and arr.std() > 5  # not a blank canvas
    )


def test_to_array_is_a_fresh_copy():
    fig = render._figure(2, 1)
    fig.add_axes((0, 0, 1, 1)).plot([0, 1], [0, 1])
    a, b = render.to_array(fig), render.to_array(fig)
    assert a.shape == (100, 200, 3)
    a[:] = 0
    assert b.std() > 0


OBJECT_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
}
BACKGROUNDS = {"light": (245, 245, 245), "dark": (20, 20, 20)}


def _luminance(rgb) -> float:
    r, g, b = (np.asarray(rgb, dtype=np.float64) / 255.0).tolist()
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _drawn_colours():
    """Every colour an attention picture can show: (heat value, photo luma) on a fine grid."""
    v = np.linspace(0.0, 1.0, 101)
    luma = np.linspace(0.0, 1.0, 21)
    colours = render.heat_colours(v[:, None], luma[None, :]) * 255  # (101, 21, 3)
    return v, colours


def _recovered_heat(pixel) -> float:
    """The heat value whose drawn colour (over any photo) is nearest to ``pixel``."""
    v, colours = _drawn_colours()
    dist = ((colours - np.asarray(pixel, dtype=np.float64)) ** 2).sum(-1).min(axis=1)
    return float(v[np.argmin(dist)])


def _two_objects(hot: str, cold: str, background: str) -> tuple[Image.Image, np.ndarray]:
    img = Image.new("RGB", (200, 100), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, 90, 90), fill=OBJECT_COLOURS[hot])
    draw.ellipse((110, 10, 190, 90), fill=OBJECT_COLOURS[cold])
    boxes = np.array([[10, 10, 91, 91], [110, 10, 191, 91]], float)
    return img, boxes


@pytest.mark.parametrize("background", list(BACKGROUNDS))
@pytest.mark.parametrize("hot", list(OBJECT_COLOURS))
@pytest.mark.parametrize("cold", list(OBJECT_COLOURS))
def test_attended_region_is_drawn_hot_whatever_its_colour(hot, cold, background):
    """β = 1 is drawn in the map's hot colour and β = 0 in its cold one, for any object colour
    on a light or a dark background; the β = 0 region never looks brighter (hotter)."""
    img, boxes = _two_objects(hot, cold, background)
    heat = box_heatmap([1.0, 0.0], boxes, img.size, uncovered=np.nan)
    pic = render.overlay(img, heat, max_side=200)
    assert pic.shape == (100, 200, 3)
    hot_px, cold_px = pic[50, 50], pic[50, 150]
    assert _recovered_heat(hot_px) >= 0.9, (hot_px, _recovered_heat(hot_px))
    assert _recovered_heat(cold_px) <= 0.1, (cold_px, _recovered_heat(cold_px))
    assert _luminance(hot_px) > _luminance(cold_px) + 0.3
    # the hot colour is the map's, not the object's: a gold (red, green > blue) in every case
    top = render.HEAT_CMAP(1.0)[:3]
    assert np.all(np.abs(hot_px / 255.0 - (0.75 * np.asarray(top) + 0.25 * 0.4)) < 0.12)
    assert int(hot_px[0]) - int(hot_px[2]) > 80 and int(hot_px[1]) - int(hot_px[2]) > 60


def test_heat_order_survives_any_photo():
    """Any higher heat is drawn brighter than a lower one, whatever lies beneath (by ≥ 0.1)."""
    v, colours = _drawn_colours()
    lum = np.apply_along_axis(_luminance, -1, colours)  # (101, 21)
    for lo, hi in ((0, 100), (0, 50), (50, 100), (20, 60)):
        assert lum[hi].min() > lum[lo].max(), (lo, hi)


def test_uncovered_pixels_are_grey_and_hatched_not_a_map_colour():
    img = Image.new("RGB", (200, 100), OBJECT_COLOURS["red"])
    heat = box_heatmap([1.0], [[0, 0, 100, 100]], img.size, uncovered=np.nan)
    pic = render.overlay(img, heat, max_side=200).astype(int)
    gap = pic[:, 110:]
    assert np.abs(gap[..., 0] - gap[..., 2]).max() <= 1  # neutral grey: no hue at all
    assert gap.std() > 10  # hatched, not flat


def test_thumbnail_has_photo_heat_and_a_labelled_colour_bar():
    img, boxes = _two_objects("blue", "red", "light")
    heat = box_heatmap([1.0, 0.0], boxes, img.size, max_side=128, uncovered=np.nan)
    th = render.heat_thumbnail(img, heat, max_side=150)
    h, w = 75, 150  # the photo at max_side 150
    top = (th.shape[0] - h) // 2
    np.testing.assert_array_equal(th[top + 30, 30], OBJECT_COLOURS["blue"])  # the original
    assert _recovered_heat(th[top + 30, w + 4 + 30]) >= 0.9  # its heat, hot
    x_bar = 2 * w + 8 + 5
    bar_top, bar_bottom = th[8, x_bar], th[th.shape[0] - 8, x_bar]
    assert _recovered_heat(bar_top) >= 0.9 and _recovered_heat(bar_bottom) <= 0.1
    labels = th[:, x_bar + 8 :]
    assert (labels.min(axis=-1) < 120).sum() > 20  # tick labels drawn beside the bar


def test_every_attention_picture_uses_the_one_map(result):
    """The big heatmap, the step-2 picture and the matrix show no colour outside the map."""
    assert render.MATRIX_CMAP is render.HEAT_CMAP
    e = result.explanations[0]
    assert render.HEAT_CMAP.name == "shan_heat"
    big = views.word_heatmap(result.image, e, 1)
    # the right-hand half holds the heat panel: its coloured pixels are colours of the map
    panel = big[60:-20, big.shape[1] // 2 : int(big.shape[1] * 0.8)].reshape(-1, 3).astype(float)
    chroma = panel.max(1) - panel.min(1)
    coloured = panel[chroma > 40][::7]
    assert len(coloured) > 50
    _, colours = _drawn_colours()
    flat = colours.reshape(-1, 3)
    d = np.sqrt(((coloured[:, None, :] - flat[None, :, :]) ** 2).sum(-1)).min(1)
    cyan_or_text = (coloured[:, 2] > coloured[:, 0] + 60) & (coloured[:, 1] > coloured[:, 0] + 60)
    assert np.mean((d < 25) | cyan_or_text) > 0.97


def test_every_view_is_a_picture(result):
    v = views.match_views(result)
    assert set(v) == set(views.MATCH_VIEWS)
    table = v["table"]
    assert list(table.columns) == views.TABLE_HEADERS
    assert list(table["S"]) == sorted(table["S"], reverse=True)
    assert "zebra?" in " ".join(table[views.TABLE_HEADERS[1]])
    assert _is_picture(v["chart"]) and _is_picture(v["regions"])
    assert v["caption_choices"].value == result.order[0]
    expl = result.explanations[result.order[0]]
    # the word picker lists the content words only (function words behind the switch)
    listed = [label for label, _ in v["word_choices"].choices]
    assert listed == [w for w in expl.display_words if w not in ("a", "of")]
    for name in ("heatmap", "matrix", "step2_regions", "step2_words", "step3_chart"):
        assert _is_picture(v[name]), name
    assert len(v["thumbnails"]) == len(listed) and all(_is_picture(t[0]) for t in v["thumbnails"])
    s3 = v["step3_text"]
    assert "S_G2G" in s3 and f"{expl.scores['total']:.3f}" in s3
    assert "looks most at" in v["word_summary"]
    assert "image context attends most" in v["step2_text"]


def test_caption_views_follow_the_caption(result):
    m = 1  # "a purple zebra"
    v = views.caption_views(result, m, j=2)
    assert [c[0] for c in v["word_choices"].choices] == ["purple?", "zebra?"]
    every = views.caption_views(result, m, j=2, all_words=True)
    assert [c[0] for c in every["word_choices"].choices] == ["a", "purple?", "zebra?"]
    assert len(every["thumbnails"]) == 3 and len(v["thumbnails"]) == 2
    # the chosen word is always listed, even a function word with the switch off
    chosen = views.caption_views(result, m, j=0)["word_choices"]
    assert chosen.value == 0 and [c[0] for c in chosen.choices] == ["a", "purple?", "zebra?"]
    assert "unknown word" in views.word_summary(result.explanations[m], 2)


def test_default_word_skips_stopwords_and_punctuation(result):
    e = result.explanations[0]  # "a red circle left of a blue square"
    assert e.words[views.default_word(e)] not in {"a", "of", "."}


def test_rendering_in_threads_matches_sequential(result):
    """No shared mutable state: concurrent renders give the same pixels as one at a time."""
    e = result.explanations[0]
    jobs = [(j % len(e.words)) for j in range(6)]
    seq = [views.word_heatmap(result.image, e, j) for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda j: views.word_heatmap(result.image, e, j), jobs))
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a, b)
    thumbs = views.word_thumbnails(result.image, e)  # numpy + PIL text (a shared cached font)
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: views.word_thumbnails(result.image, e), range(4)))
    for other in again:
        for (a, la), (b, lb) in zip(thumbs, other):
            assert la == lb
            np.testing.assert_array_equal(a, b)


def test_charts_handle_edge_cases():
    one = render.ranking_chart(["only"], np.array([[0.1, -0.2, 0.2, 0.1]]))
    assert _is_picture(one)
    assert _is_picture(render.margins_chart(["only"], np.array([[0.1, -0.2, 0.2, 0.1]])))
    neg = render.shares_chart({"l2l": -0.3, "g2l": 0.1, "g2g": 0.0}, {"l2l": 0.75}, -0.2)
    assert _is_picture(neg)
    gap = render.shares_chart(
        {"l2l": 0.1, "g2l": 0.5, "g2g": 0.5},
        {"l2l": 0.1},
        1.1,
        margins={"l2l": 0.3, "g2l": -0.01, "g2g": 0.0},
        reference="a hard negative",
    )
    assert _is_picture(gap) and gap.shape[1] > neg.shape[1]  # the second panel is there
    big = render.matrix_image(np.random.rand(36, 30), [f"w{i}" for i in range(30)], ["r"] * 36, "m")
    assert _is_picture(big)
    tall = render.heatmap_image(Image.new("RGB", (20, 2000), "gray"), np.ones((10, 1)), "tall")
    assert tall.shape[0] <= 800
    cjk = render.word_weights_chart(["一只", "圆"], np.array([0.5, 0.5]), np.array([0.3, 0.7]))
    assert _is_picture(cjk)
    thin = render.heat_thumbnail(Image.new("RGB", (5000, 4), "gray"), np.ones((1, 50)))
    assert thin.shape[0] >= 64 and thin.dtype == np.uint8


def _count_colour(pic: np.ndarray, hex_colour: str, tol: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pic.astype(int) - rgb).max(-1) <= tol).sum())


def test_ranking_chart_shows_the_distributions_only_with_a_calibration():
    scores = np.array([[1.3, 0.06, 0.76, 0.5], [0.4, -0.2, 0.74, -0.3]])
    caps = ["a true caption", "its hard negative"]
    with_cal = render.ranking_chart(caps, scores, synthetic_calibration())
    without = render.ranking_chart(caps, scores, None)
    assert _count_colour(with_cal, render.MATCH_COLOR) > 200  # the true-pair boxes
    assert _count_colour(with_cal, render.NONMATCH_COLOR) > 200
    assert _count_colour(without, render.MATCH_COLOR) == 0
    assert "no calibration saved" in render.evidence_legend(None)
    ev = render.evidence_chart(scores, synthetic_calibration())
    assert _count_colour(ev, render.MATCH_COLOR) > 100


def test_step2_pooling_drawn_as_bars_or_as_one_line_when_equal():
    words = ["a", "red", "and", "blue"]
    gamma = np.array([0.1, 0.2, 0.6, 0.1])
    purple = "#9467bd"
    equal = render.word_weights_chart(words, gamma, np.full(4, 0.25))
    unequal = render.word_weights_chart(words, gamma, np.array([0.1, 0.4, 0.1, 0.4]))
    assert _count_colour(unequal, purple) > 5 * max(_count_colour(equal, purple), 1)


def test_views_use_the_calibration_or_say_there_is_none(result):
    cal = synthetic_calibration()
    plain = views.match_views(result)
    with_cal = views.match_views(result, calibration=cal)
    assert "No calibration saved with this model" in plain["step3_text"]
    assert "As evidence" in with_cal["step3_text"]
    assert "synthetic test split" in with_cal["step3_text"]
    assert plain["step3_text"].startswith("**S_G2G")  # the browser test reads the first words
    assert _count_colour(with_cal["chart"], render.MATCH_COLOR) > 200
    assert _count_colour(plain["chart"], render.MATCH_COLOR) == 0

    class WithCalibration:  # a result that carries its own calibration (as the pipeline may)
        def __getattr__(self, name):
            return cal if name == "calibration" else getattr(result, name)

    assert "As evidence" in views.match_views(WithCalibration())["step3_text"]


def test_friendly_errors():
    @friendly("testing")
    def bad_input():
        raise InputError("Please enter at least one caption.")

    @friendly("testing")
    def crash():
        raise RuntimeError("secret internal detail")

    with pytest.raises(gr.Error, match="at least one caption"):
        bad_input()
    with pytest.raises(gr.Error) as info:
        crash()
    assert "secret internal detail" not in str(info.value)
    assert "Something went wrong while testing" in str(info.value)


def test_render_never_imports_pyplot():
    code = "import demo.render, demo.ui, sys; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_shan_never_imports_demo_gradio_or_matplotlib():
    code = (
        "import sys, shan.explain, shan.model, shan.checkpoint; "
        "print([m for m in ('demo', 'gradio', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_warm_up_runs_a_request_and_never_raises(tmp_path):
    pipe = make_pipeline(tmp_path)
    calls = pipe.extractor.calls
    assert ui.warm_up(pipe) > 0 and pipe.extractor.calls == calls + 1

    class Broken:
        def match(self, *a, **k):
            raise RuntimeError("boom")

    assert ui.warm_up(Broken()) >= 0  # logged, not raised
