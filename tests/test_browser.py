"""A real browser (headless Chromium through Playwright) uses the Match and Search tabs.

Skipped when Chromium is not on PATH (``scripts/test.sh`` installs the Debian package). Set
``SHAN_SCREENSHOT_DIR`` to keep full-page screenshots for a human to look at.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from demo.pipeline import DemoPipeline, load_examples
from demo.ui import build_demo
from tests.app_fixtures import (
    EXAMPLES_JSON,
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

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on 127.0.0.1: the shipped model when it exists, else a tiny random fixture model."""
    tmp = tmp_path_factory.mktemp("browser")
    examples = []
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
    if (SHIPPED_CHECKPOINT / "config.json").is_file() and examples:
        image = Path(examples[0].image)
        captions = "\n".join(examples[0].all_captions)
    else:
        image = tmp / "scene.png"
        scene((320, 220)).save(image)
        captions = "a red circle left of a blue square\na green triangle\na purple zebra"
    demo = build_demo(pipe, examples)
    url = launch_in_thread(demo)
    yield url, image, captions, tmp, examples
    demo.close()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        yield pg
        browser.close()


def _shot(pg, name: str, tmp: Path) -> Path:
    out_dir = Path(os.environ.get("SHAN_SCREENSHOT_DIR", tmp))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    pg.screenshot(path=str(path), full_page=True)
    return path


def _loaded_img(pg, selector: str) -> None:
    """Wait until an <img> inside ``selector`` has finished loading real pixels.

    Scrolls it into view first: Gradio's images load lazily.
    """
    pg.locator(selector).scroll_into_view_if_needed()
    pg.wait_for_function(
        """sel => {
            const img = document.querySelector(sel + ' img');
            return img && img.complete && img.naturalWidth > 50;
        }""",
        arg=selector,
        timeout=TIMEOUT_MS,
    )


def _text_in(pg, selector: str, text: str) -> None:
    """Wait until the element's visible text contains ``text``."""
    try:
        pg.wait_for_function(
            "([sel, t]) => { const e = document.querySelector(sel);"
            " return e && e.innerText.includes(t); }",
            arg=[selector, text],
            timeout=TIMEOUT_MS,
        )
    except sync_api.TimeoutError:
        shot = _shot(pg, "failure.png", Path(os.environ.get("SHAN_SCREENSHOT_DIR", "/tmp")))
        body = pg.locator("body").inner_text()[:1500]
        msg = f"{text!r} never appeared in {selector}; see {shot}; page: {body}"
        raise AssertionError(msg) from None


def test_match_in_a_real_browser(served, page):
    url, image, captions, tmp, _ = served
    page.goto(url)
    page.locator("#match-image input[type=file]").set_input_files(str(image))
    page.wait_for_function(
        "() => document.querySelector('#match-image img') !== null", timeout=TIMEOUT_MS
    )
    page.locator("#match-captions textarea").fill(captions)
    page.locator("#match-btn").click()
    first = captions.splitlines()[0]
    _text_in(page, "#ranking", first)
    for sel in ("#scores-chart", "#regions", "#step1-heatmap", "#step1-matrix", "#step2-regions"):
        _loaded_img(page, sel)
    _loaded_img(page, "#step3")
    assert page.locator("#step1-gallery img").count() >= 2
    table_text = page.locator("#ranking").inner_text()
    assert "S_L2L" in table_text and "S_G2G" in table_text
    assert page.locator("#step3-summary").inner_text().startswith("S_G2G")
    assert "Error" not in page.locator("body").inner_text()[:200]
    _shot(page, "match.png", tmp)

    # choose another word: only the heatmap, summary and matrix change
    old = page.locator("#step1-heatmap img").get_attribute("src")
    radios = page.locator("#word-select label")
    assert radios.count() >= 2
    radios.nth(0).click()
    page.wait_for_function(
        "old => { const i = document.querySelector('#step1-heatmap img');"
        " return i && i.getAttribute('src') !== old; }",
        arg=old,
        timeout=TIMEOUT_MS,
    )

    # clicking a word's thumbnail in the gallery chooses that word
    checked = "() => document.querySelector('#word-select input:checked')?.value"
    target = 1 if page.evaluate(checked) == "0" else 0
    page.locator("#step1-gallery button.thumbnail-item").nth(target).click()
    page.wait_for_function(f"t => ({checked})() === String(t)", arg=target, timeout=TIMEOUT_MS)


def test_bad_input_shows_a_message(served, page):
    url, image, _, tmp, _ = served
    page.goto(url)
    page.locator("#match-image input[type=file]").set_input_files(str(image))
    page.wait_for_function(
        "() => document.querySelector('#match-image img') !== null", timeout=TIMEOUT_MS
    )
    page.locator("#match-captions textarea").fill("   ")
    page.locator("#match-btn").click()
    page.get_by_text("at least one caption").first.wait_for()
    _shot(page, "error.png", tmp)


def test_search_in_a_real_browser(served, page):
    url, image, captions, tmp, _ = served
    other = tmp / "other.png"
    scene((200, 200), seed=5).save(other)
    page.goto(url)
    page.get_by_role("tab", name="Search: many images, one caption").click()
    page.locator("#search-files input[type=file]").set_input_files([str(image), str(other)])
    page.locator("#search-caption textarea, #search-caption input").first.fill(
        captions.splitlines()[0]
    )
    page.locator("#search-btn").click()
    _text_in(page, "#search-table", "other.png")
    assert page.locator("#search-gallery img").count() >= 2
    assert page.locator("#search-heatmaps img").count() >= 1
    _shot(page, "search.png", tmp)


def test_clicking_an_example_runs_it(served, page):
    url, _, _, tmp, examples = served
    page.goto(url)
    page.locator('[data-testid="dataset-cell-0-1"]').first.click()  # Match tab, first example
    _text_in(page, "#ranking", examples[0].all_captions[-1])  # the hard negative is ranked too
    _loaded_img(page, "#step1-heatmap")
    ranking = page.locator("#ranking").inner_text()
    assert all(c in ranking for c in examples[0].all_captions)
