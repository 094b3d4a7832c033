"""A real browser (headless Chromium through Playwright) uses every tab: Match, Compare with its
minimal pairs, the scene builder and Search — at desktop and at phone width.

The steps are ``scripts/screenshots.py``'s :class:`Tour` (the screenshots show what is tested
here). Skipped when Chromium is not on PATH (``scripts/test.sh`` installs the Debian package). Set
``SHAN_SCREENSHOT_DIR`` to keep full-page screenshots for a human to look at.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from demo.pipeline import DemoPipeline, load_examples
from demo.ui import build_demo
from tests.app_fixtures import (
    EXAMPLES_JSON,
    REPO,
    SHIPPED_CHECKPOINT,
    launch_in_thread,
    make_pipeline,
    scene,
)

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not on PATH (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="python package playwright missing")

TRUE = "a red circle left of a blue square"
SWAPPED = "a blue circle left of a red square"


def _screenshots_script():
    spec = importlib.util.spec_from_file_location(
        "screenshots", REPO / "scripts" / "screenshots.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shots = _screenshots_script()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on 127.0.0.1: the shipped model when it exists, else a tiny random fixture model."""
    tmp = tmp_path_factory.mktemp("browser")
    if (SHIPPED_CHECKPOINT / "config.json").is_file():
        pipe = DemoPipeline.from_checkpoint(str(SHIPPED_CHECKPOINT), device="cpu")
        examples = load_examples(EXAMPLES_JSON)
    else:
        pipe = make_pipeline(tmp)
        for i in range(2):
            scene((300, 200), seed=i).save(tmp / f"ex{i}.png")
        items = [
            {"image": f"ex{i}.png", "captions": ["a red circle"], "hard_negative": "a blue circle"}
            for i in range(2)
        ]
        (tmp / "examples.json").write_text(json.dumps(items))
        examples = load_examples(tmp / "examples.json")
        assert len(examples) == 2
    image = tmp / "scene.png"
    scene((320, 220)).save(image)
    demo = build_demo(pipe, examples)
    url = launch_in_thread(demo)
    yield url, image, tmp, examples
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = shots.launch_browser(pw)
        yield b
        b.close()


@pytest.fixture()
def tour(served, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t = shots.Tour(page, served[0])
    t.open()
    yield t
    page.close()


def _shot(tour, name: str, tmp: Path) -> None:
    out = Path(os.environ.get("SHAN_SCREENSHOT_DIR", tmp))
    tour.page.screenshot(path=str(out / name), full_page=True)


def _checked_word(page) -> str | None:
    return page.evaluate("() => document.querySelector('#word-select input:checked')?.value")


def test_match_in_a_real_browser(served, tour):
    _, image, tmp, _ = served
    page = tour.page
    tour.match_upload(image, f"{TRUE}\na green triangle\na purple zebra")
    ranking = page.locator("#ranking").inner_text()
    assert TRUE in ranking and "zebra?" in ranking and "S_L2L" in ranking
    assert page.locator("#step3-summary").inner_text().startswith("S_G2G")
    assert "Error" not in page.locator("body").inner_text()[:300]
    banner = page.locator("#model-banner").inner_text()
    assert banner.strip()  # what the model knows or not, from its card
    _shot(tour, "match.png", tmp)

    # the word picker lists content words; the switch adds the function words
    radios = page.locator("#word-select label")
    content = radios.count()
    assert content >= 2
    assert "of" not in [radios.nth(i).inner_text().strip() for i in range(content)]
    page.locator("#word-all input").check()
    page.wait_for_function(
        f"() => document.querySelectorAll('#word-select label').length > {content}"
    )

    # choose another word: the heatmap changes
    old = tour.src("#step1-heatmap")
    target = 1 if _checked_word(page) == "0" else 0
    radios.nth(target).click()
    tour.changed("#step1-heatmap", old)

    # clicking a word's thumbnail (in its collapsed section) chooses that word
    tour.expand("step1-gallery-box")
    before = _checked_word(page)
    page.locator("#step1-gallery button.thumbnail-item").nth(2).click()
    page.wait_for_function(
        "b => { const v = document.querySelector('#word-select input:checked')?.value;"
        " return v !== undefined && v !== b; }",
        arg=before,
    )
    assert _checked_word(page) == "2"  # every word listed: the third thumbnail is word 2

    # another caption: the step views follow it
    old = tour.src("#step1-heatmap")
    page.locator("#caption-select input").click()
    page.get_by_role("option").filter(has_text="zebra").first.click()
    tour.changed("#step1-heatmap", old)
    tour.idle()
    assert "zebra?" in page.locator("#word-select").inner_text()


def test_bad_input_shows_a_message(served, tour):
    _, image, tmp, _ = served
    page = tour.page
    page.locator("#match-image input[type=file]").set_input_files(str(image))
    page.wait_for_function("() => document.querySelector('#match-image img') !== null")
    page.locator("#match-captions textarea").fill("   ")
    page.locator("#match-btn").click()
    page.get_by_text("at least one caption").first.wait_for()
    _shot(tour, "error.png", tmp)


def test_clicking_an_example_runs_it(served, tour):
    examples = served[3]
    tour.match_example(0)
    ranking = tour.page.locator("#ranking").inner_text()
    # every caption of the example is ranked, its hard negative too (as the model reads them)
    for caption in examples[0].all_captions:
        assert caption.lower().split()[-1] in ranking.lower()
    assert len(ranking.strip().splitlines()) >= len(examples[0].all_captions)


def test_compare_two_captions_and_their_minimal_pairs(served, tour):
    _, image, tmp, _ = served
    page = tour.page
    tour.compare_inputs(image, TRUE, SWAPPED)
    marked = page.locator("#compare-words-a .token .text:not(.unlabeled)").all_inner_texts()
    assert [t.strip() for t in marked] == ["red", "blue"]  # the changed words, highlighted
    table = page.locator("#compare-table").inner_text()
    assert "S_L2L (step 1)" in table and "prefers" in table
    summary = page.locator("#compare-summary").inner_text()
    assert "Words that differ — in A: “red”, “blue”" in summary
    tour.minimal_pairs()
    pairs = page.locator("#pairs-table").inner_text()
    assert "colour swap" in pairs and "opposite relation" in pairs and "✓" in pairs + "✗"
    assert "minimal pairs" in page.locator("#pairs-summary").inner_text()
    _shot(tour, "compare.png", tmp)


def test_compare_example(served, tour):
    tour.compare_example(0)
    ex = served[3][0]
    a = tour.page.locator("#compare-a textarea, #compare-a input").first.input_value()
    b = tour.page.locator("#compare-b textarea, #compare-b input").first.input_value()
    assert (a, b) == (ex.captions[0], ex.hard_negative)


def test_build_a_scene_mirror_it_and_match_it(served, tour):
    _, _, tmp, _ = served
    page = tour.page
    tour.build_scene()
    captions = page.locator("#scene-captions").inner_text()
    assert "True captions" in captions and "green" in captions  # the third object: green
    first = tour.src("#scene-image")
    assert tour.mirror_scene() != first
    assert page.locator("#scene-cell-0 input").input_value() == "middle right"  # was left
    tour.expand("scene-vocabulary")
    # the accordion's body renders after it opens: wait for its text rather than read it once
    sync_api.expect(page.locator("#scene-vocabulary")).to_contain_text("known")
    _shot(tour, "scene.png", tmp)
    tour.scene_to_match()
    ranking = page.locator("#ranking").inner_text()
    assert "green" in ranking.lower()  # the scene's own captions are ranked
    assert page.locator("#tab-match").is_visible()


def test_search_any_image_in_a_real_browser(served, tour):
    _, image, tmp, _ = served
    other = tmp / "other.png"
    scene((200, 200), seed=5).save(other)
    page = tour.page
    tour.search_upload([image, other], TRUE)
    labels = page.locator("#search-gallery").inner_text()
    assert "1. " in labels and "S " in labels and "L2L" in labels  # every score on the labels
    first = page.locator("#search-step3-summary").inner_text()
    assert "Against the runner-up" in first
    tour.search_pick(1)
    assert "Against the best image" in page.locator("#search-step3-summary").inner_text()
    picked = page.locator("#search-image-select input").input_value()
    assert picked.startswith("2. ")
    _shot(tour, "search.png", tmp)


def test_phone_width_has_no_sideways_page(served, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        t = shots.Tour(page, served[0])
        t.open()
        t.match_upload(served[1], f"{TRUE}\na green triangle")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 392, f"the page is {width} px wide at a 390 px screen"
        box = page.locator("#step1-heatmap img").bounding_box()
        assert box is not None and box["width"] <= 390
    finally:
        page.close()
