"""Screenshots of every view of the app, made by driving it in headless Chromium (Playwright).

    python scripts/screenshots.py                       # the shipped model → docs/screenshots/
    python scripts/screenshots.py --checkpoint DIR --out DIR --width 1280 --scale 0.75

Starts the app in this process (127.0.0.1, a free port, the checkpoint's examples), then for each
view opens its tab, runs an example (or builds a scene), waits until every picture has loaded and
saves a PNG: ``match.png``, ``compare.png`` (with the minimal pairs), ``scene.png``,
``search.png`` (the runner-up image explained), ``about.png`` and ``phone.png`` (Match at phone
width, the first two screens). Pictures are scaled by ``--scale`` and stored with a 256-colour
palette, so the files stay small. Rerun it after retraining to show the new model.

The steps (:class:`Tour`) also drive ``tests/test_browser.py``: the screenshots show what the
tests check. Needs ``playwright`` and a Chromium on PATH (``scripts/test.sh`` installs both).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 120_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TAB_NAMES = {
    "match": "Match: one image, many captions",
    "compare": "Compare: two captions",
    "scene": "Build a scene",
    "search": "Search: many images, one caption",
    "about": "About",
}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch_browser(pw: Any) -> Any:
    """Headless Chromium from PATH with the flags a container needs."""
    return pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)


class Tour:
    """One browser page walking through the app's views; every step waits until its result is
    on the page (or raises ``AssertionError`` naming what never appeared)."""

    def __init__(self, page: Any, url: str, timeout_ms: int = TIMEOUT_MS) -> None:
        self.page, self.url, self.timeout = page, url, timeout_ms
        page.set_default_timeout(timeout_ms)

    # ---- waiting ------------------------------------------------------------------------------

    def text_in(self, selector: str, text: str) -> None:
        """Wait until the element's visible text contains ``text``."""
        try:
            self.page.wait_for_function(
                "([sel, t]) => { const e = document.querySelector(sel);"
                " return e && e.innerText.includes(t); }",
                arg=[selector, text],
                timeout=self.timeout,
            )
        except Exception as err:
            body = self.page.locator("body").inner_text()[:1500]
            raise AssertionError(f"{text!r} never appeared in {selector}; page: {body}") from err

    def picture(self, selector: str) -> None:
        """Wait until the ``<img>`` inside ``selector`` shows real pixels (scrolled into view
        first: Gradio loads images lazily)."""
        self.page.locator(selector).first.scroll_into_view_if_needed()
        self.page.wait_for_function(
            """sel => {
                const img = document.querySelector(sel + ' img');
                return img && img.complete && img.naturalWidth > 50;
            }""",
            arg=selector,
            timeout=self.timeout,
        )

    def pictures(self, selectors: Sequence[str]) -> None:
        for sel in selectors:
            self.picture(sel)

    def idle(self) -> None:
        """Wait until no event is in progress (Gradio shows a progress bar or text while one
        runs, and keeps the old output, greyed, until it ends)."""
        self.page.wait_for_function(
            "() => document.querySelectorAll('.eta-bar, .progress-text').length === 0",
            timeout=self.timeout,
        )

    def src(self, selector: str) -> str | None:
        return self.page.locator(f"{selector} img").first.get_attribute("src")

    def changed(self, selector: str, old: str | None) -> None:
        """Wait until the picture in ``selector`` is another one than ``old``."""
        self.page.wait_for_function(
            "([sel, old]) => { const i = document.querySelector(sel + ' img');"
            " return i && i.getAttribute('src') !== old && i.complete; }",
            arg=[selector, old],
            timeout=self.timeout,
        )

    def expand(self, elem_id: str) -> None:
        """Open a collapsed accordion (its pictures load only when shown)."""
        box = self.page.locator(f"#{elem_id}")
        if box.locator(".label-wrap.open").count() == 0:
            box.locator(".label-wrap").first.click()
        # the click only schedules the opening: wait until the label says it is open
        box.locator(".label-wrap.open").first.wait_for()

    # ---- the views ----------------------------------------------------------------------------

    def open(self) -> None:
        self.page.goto(self.url)
        self.page.locator("#model-banner").wait_for()

    def tab(self, tab_id: str) -> None:
        self.page.get_by_role("tab", name=TAB_NAMES[tab_id]).click()

    def match_example(self, k: int = 0) -> None:
        """Click Match example ``k`` and wait for the whole result."""
        self.tab("match")
        self.page.locator("#match-examples .gallery-item").nth(k).click()
        self.match_done()

    def match_upload(self, image: str | Path, captions: str) -> None:
        self.tab("match")
        self.page.locator("#match-image input[type=file]").set_input_files(str(image))
        self.page.wait_for_function("() => document.querySelector('#match-image img') !== null")
        self.page.locator("#match-captions textarea").fill(captions)
        self.page.locator("#match-btn").click()
        self.match_done()

    def match_done(self) -> None:
        self.text_in("#step3-summary", "S_G2G")
        self.idle()
        self.pictures(["#scores-chart", "#step1-heatmap", "#step3"])

    def compare_example(self, k: int = 0) -> None:
        self.tab("compare")
        self.page.locator("#compare-examples .gallery-item").nth(k).click()
        self.compare_done()

    def compare_inputs(self, image: str | Path, a: str, b: str) -> None:
        self.tab("compare")
        self.page.locator("#compare-image input[type=file]").set_input_files(str(image))
        self.page.wait_for_function("() => document.querySelector('#compare-image img') !== null")
        self.page.locator("#compare-a textarea, #compare-a input").first.fill(a)
        self.page.locator("#compare-b textarea, #compare-b input").first.fill(b)
        self.page.locator("#compare-btn").click()
        self.compare_done()

    def compare_done(self) -> None:
        self.text_in("#compare-summary", "Words that differ")
        self.idle()
        self.pictures(["#compare-chart", "#compare-pairs"])

    def minimal_pairs(self) -> None:
        """Make the minimal pairs of caption A (after a Compare)."""
        self.page.locator("#pairs-btn").click()
        self.text_in("#pairs-summary", "minimal pairs")
        self.text_in("#pairs-table", "prefers the true one")
        self.idle()

    def build_scene(self, third_object: bool = True) -> None:
        """Open the scene builder, switch on a third object, draw the scene."""
        self.tab("scene")
        if third_object:
            self.page.locator("#scene-on-2 input").check()
        old = self.src("#scene-image") if self.page.locator("#scene-image img").count() else None
        self.page.locator("#scene-draw").click()
        self.text_in("#scene-captions", "True captions")
        self.changed("#scene-image", old)
        self.idle()

    def mirror_scene(self) -> str:
        """Mirror the drawn scene; returns the new picture's address."""
        old = self.src("#scene-image")
        self.page.locator("#scene-mirror").click()
        self.changed("#scene-image", old)
        self.idle()
        return self.src("#scene-image") or ""

    def scene_to_match(self) -> None:
        old = self.page.locator("#step3-summary").inner_text()
        self.page.locator("#scene-to-match").click()
        self.page.wait_for_function(
            "old => { const e = document.querySelector('#step3-summary');"
            " return e && e.innerText.includes('S_G2G') && e.innerText !== old; }",
            arg=old,
            timeout=self.timeout,
        )
        self.match_done()

    def search_example(self, k: int = 0) -> None:
        self.tab("search")
        self.page.locator("#search-examples .gallery-item").nth(k).click()
        self.search_done()

    def search_upload(self, files: Sequence[str | Path], caption: str) -> None:
        self.tab("search")
        self.page.locator("#search-files input[type=file]").set_input_files([str(f) for f in files])
        self.page.locator("#search-caption textarea, #search-caption input").first.fill(caption)
        self.page.locator("#search-btn").click()
        self.search_done()

    def search_done(self) -> None:
        self.text_in("#search-step3-summary", "S_G2G")
        self.idle()
        self.pictures(["#search-gallery", "#search-step1-heatmap"])

    def search_pick(self, rank: int) -> None:
        """Click the image at ``rank`` (0 = best) in the gallery; wait for its step views."""
        old = self.page.locator("#search-step3-summary").inner_text()
        self.page.locator("#search-gallery button.thumbnail-item").nth(rank).click()
        self.page.wait_for_function(
            "old => { const e = document.querySelector('#search-step3-summary');"
            " return e && e.innerText !== old && e.innerText.includes('S_G2G'); }",
            arg=old,
            timeout=self.timeout,
        )
        self.idle()
        self.picture("#search-step1-heatmap")

    def about(self) -> None:
        self.tab("about")
        self.page.locator("#about-model").wait_for()

    # ---- pictures -----------------------------------------------------------------------------

    def shot(self, path: Path, full_page: bool = True, scale: float = 1.0) -> Path:
        """Save a screenshot as a small palette PNG (scaled by ``scale``)."""
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.evaluate(  # notices stay on the page; their pop-up copies would cover it
            "() => document.querySelectorAll('.toast-wrap, [data-testid=\"toast-body\"]')"
            ".forEach(e => e.remove())"
        )
        self.page.evaluate("window.scrollTo(0, 0)")
        time.sleep(0.3)
        raw = path.with_suffix(".raw.png")
        self.page.screenshot(path=str(raw), full_page=full_page)
        with Image.open(raw) as im:
            im = im.convert("RGB")
            if scale != 1.0:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            im.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        raw.unlink()
        return path


def serve(checkpoint: str, examples: str, device: str = "cpu") -> tuple[Any, str]:
    """The app on 127.0.0.1 (a free port), in this process: ``(demo, url)``."""
    sys.path.insert(0, str(REPO))
    import socket

    from demo.pipeline import DemoPipeline, load_examples
    from demo.ui import build_demo, launch_kwargs

    pipe = DemoPipeline.from_checkpoint(checkpoint, device=device)
    demo = build_demo(pipe, load_examples(examples))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _, url, _ = demo.launch(
        prevent_thread_lock=True, quiet=True, **launch_kwargs("127.0.0.1", port)
    )
    return demo, url


def take_all(url: str, out: Path, width: int = 1280, scale: float = 0.75) -> list[Path]:
    """Every view's screenshot into ``out``; returns the files written."""
    from playwright.sync_api import sync_playwright

    files = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            tour = Tour(page, url)
            tour.open()
            tour.match_example(0)
            files.append(tour.shot(out / "match.png", scale=scale))
            tour.compare_example(0)
            tour.minimal_pairs()
            files.append(tour.shot(out / "compare.png", scale=scale))
            tour.build_scene()
            files.append(tour.shot(out / "scene.png", scale=scale))
            tour.search_example(0)
            tour.search_pick(1)
            files.append(tour.shot(out / "search.png", scale=scale))
            tour.about()
            tour.expand("intro")
            files.append(tour.shot(out / "about.png", scale=scale))
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            small = Tour(phone, url)
            small.open()
            small.match_example(0)
            phone.set_viewport_size({"width": 390, "height": 1688})  # the first two screens
            files.append(small.shot(out / "phone.png", full_page=False, scale=1.0))
        finally:
            browser.close()
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "shan"))
    p.add_argument("--examples", default=str(REPO / "assets" / "examples.json"))
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--width", type=int, default=1280, help="browser width in CSS pixels")
    p.add_argument("--scale", type=float, default=0.75, help="picture scale of the saved PNGs")
    args = p.parse_args(argv)
    if chromium() is None:
        print("error: chromium is not on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    import os

    os.chdir(REPO)  # the page shows paths relative to the repository
    demo, url = serve(args.checkpoint, args.examples)
    try:
        for f in take_all(url, Path(args.out), args.width, args.scale):
            print(f"{f}  {f.stat().st_size / 1024:.0f} KB")
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
