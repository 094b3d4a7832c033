"""The demo's pictures: right size and type, the heat where the weight is, no shared state."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo import render, ui
from demo.pipeline import InputError
from shan.explain import box_heatmap
from tests.app_fixtures import REPO, make_pipeline, scene


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


def test_heatmap_is_hot_where_the_weight_is():
    img = Image.new("RGB", (200, 100), "white")
    boxes = np.array([[0, 0, 100, 100], [100, 0, 200, 100]], float)
    heat = box_heatmap([0.9, 0.1], boxes, img.size)
    thumb = render.overlay(img, heat, max_side=200)
    assert thumb.shape == (100, 200, 3)
    left, right = thumb[50, 50].astype(int), thumb[50, 150].astype(int)
    assert left[0] > left[2]  # turbo: high = red
    assert right[2] > right[0]  # low = blue
    gaps = box_heatmap([1.0], [[0, 0, 100, 100]], img.size, uncovered=np.nan)
    grey = render.overlay(img, gaps, max_side=200)[50, 150].astype(int)
    assert abs(grey[0] - grey[2]) < 5 and grey.min() > 150  # washed-out photo, not a colour


def test_every_view_is_a_picture(result):
    views = ui.match_views(result)
    table, chart, regions, cap_update = views[:4]
    assert list(table.columns) == ui.TABLE_HEADERS
    assert list(table["S"]) == sorted(table["S"], reverse=True)
    assert "zebra?" in " ".join(table["As the model reads it"])
    assert _is_picture(chart) and _is_picture(regions)
    assert cap_update["value"] == result.order[0]
    word_upd, heat, word_md, thumbs, matrix, s2_pic, s2_bars, s3_chart, s3_md = views[4:]
    expl = result.explanations[result.order[0]]
    assert [c[0] for c in word_upd["choices"]] == expl.display_words
    for pic in (heat, matrix, s2_pic, s2_bars, s3_chart):
        assert _is_picture(pic)
    assert len(thumbs) == len(expl.words) and all(_is_picture(t[0]) for t in thumbs)
    assert "S_G2G" in s3_md and f"{expl.scores['total']:.3f}" in s3_md
    assert "looks most at" in word_md


def test_caption_views_follow_the_caption(result):
    m = 1  # "a purple zebra"
    views = ui.caption_views(result, m)
    labels = [c[0] for c in views[0]["choices"]]
    assert labels == ["a", "purple?", "zebra?"]
    assert views[0]["value"] in (0, 1, 2)
    assert "unknown word" in ui.word_summary(result.explanations[m], 2)


def test_default_word_skips_stopwords_and_punctuation(result):
    e = result.explanations[0]  # "a red circle left of a blue square"
    assert e.words[ui.default_word(e)] not in {"a", "of", "."}


def test_rendering_in_threads_matches_sequential(result):
    """No shared mutable state: concurrent renders give the same pixels as one at a time."""
    e = result.explanations[0]
    jobs = [(j % len(e.words)) for j in range(6)]
    seq = [ui.word_heatmap(result.image, e, j) for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda j: ui.word_heatmap(result.image, e, j), jobs))
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a, b)


def test_charts_handle_edge_cases():
    one = render.scores_chart(["only"], np.array([[0.1, -0.2, 0.2, 0.1]]))
    assert _is_picture(one)
    neg = render.shares_chart({"l2l": -0.3, "g2l": 0.1, "g2g": 0.0}, {"l2l": 0.75}, -0.2)
    assert _is_picture(neg)
    big = render.matrix_image(np.random.rand(36, 30), [f"w{i}" for i in range(30)], ["r"] * 36, "m")
    assert _is_picture(big)
    tall = render.heatmap_image(Image.new("RGB", (20, 2000), "gray"), np.ones((10, 1)), "tall")
    assert tall.shape[0] <= 800
    cjk = render.word_weights_chart(["一只", "圆"], np.array([0.5, 0.5]), np.array([0.3, 0.7]))
    assert _is_picture(cjk)


def test_friendly_errors():
    @ui.friendly("testing")
    def bad_input():
        raise InputError("Please enter at least one caption.")

    @ui.friendly("testing")
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
