"""The Gradio app: ``build_demo(pipeline, examples) -> gr.Blocks``, built from :mod:`demo.tabs`.

The page: a title, a one-line banner of what the loaded model knows and does not (from its
card, :func:`demo.views.banner`), a collapsed introduction, then one tab per module of
:data:`demo.tabs.TABS` — each renders its components and wires its events itself.

What arrives from the network is checked before a handler runs (:mod:`demo.uploads`): file inputs
are upload paths only, ``data:`` URLs obey the upload limit, and errors Gradio raises while reading
inputs become the app's own messages (each tab lists its own, ``REFUSALS``). Every event has an
explicit ``api_name`` and runs with ``preprocess=False``; events that can be called through the
API alone check their session state and indices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from demo import gradio_compat, texts, views
from demo.pipeline import MAX_PIXELS, DemoPipeline, Example
from demo.tabs import TABS
from demo.tabs.common import Context
from demo.uploads import MAX_UPLOAD_BYTES, GuardedBlocks, upload_roots

log = logging.getLogger(__name__)

CONCURRENCY_LIMIT = 2  # requests computed at once (the CPU has few cores; more only queue)
QUEUE_MAX_SIZE = 64  # requests waiting at most; more are refused with "queue full"
MAX_FILE_SIZE = MAX_UPLOAD_BYTES  # upload limit per file (data: URLs are held to it too)
STATE_SESSIONS = 256  # at most this many sessions keep a stored result (a few MB each)
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber")
CSS = """
.teach {font-size: 0.95em;}
#model-banner {border-left: 4px solid #ffb000; padding: 4px 12px; background: #fff8e6;}
#model-banner p {margin: 2px 0;}
.dark #model-banner {background: #3a2f10;}
/* gallery captions: below the picture, in full (Gradio overlays them, cut to one line) */
.labelled-gallery .thumbnail-item {
  height: auto !important; aspect-ratio: auto !important; overflow: visible !important;
  display: flex !important; flex-direction: column !important;
}
.labelled-gallery .thumbnail-item img {width: 100%; height: auto !important; object-fit: contain;}
.labelled-gallery .caption-label {
  position: static !important; max-width: 100% !important; white-space: normal !important;
  opacity: 1 !important; border: none !important; background: none !important;
  padding: 2px 4px !important;
}
.compact-examples .label {font-size: 0.85em;}
@media (max-width: 640px) {
  h1 {font-size: 1.3em !important;}
  #model-banner {font-size: 0.85em;}
  /* tables keep readable columns and scroll sideways inside their box */
  #ranking table, #search-table table, #compare-table table, #pairs-table table {min-width: 560px;}
}
"""


def build_demo(pipeline: DemoPipeline, examples: Sequence[Example] = ()) -> gr.Blocks:
    """Build the Blocks app around a loaded pipeline (launch it with :func:`launch_kwargs`)."""
    gradio_compat.install()  # identical pictures served concurrently must not be truncated
    # PIL's own decompression-bomb limit agrees with the app's pixel budget (Gradio uses PIL too)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    # the only files a handler may open: uploads (Gradio's upload folder / cache) and our assets
    roots = upload_roots(Path(ex.image).parent for ex in examples)
    ctx = Context(pipeline, tuple(examples), roots)
    refusals = {name: msg for tab in TABS for name, msg in tab.REFUSALS.items()}
    with GuardedBlocks(title="SHAN step-by-step image–text matching", refusals=refusals) as demo:
        gr.Markdown(f"# {texts.TITLE}")
        gr.Markdown(views.banner(ctx.card), elem_id="model-banner")
        with gr.Accordion("What is SHAN? Read me first", open=False, elem_id="intro"):
            gr.Markdown(texts.INTRO, elem_classes=["teach"])
        uis: dict[str, Any] = {}
        with gr.Tabs(elem_id="tabs") as tabs:
            for tab in TABS:
                with gr.Tab(tab.TITLE, id=tab.ID, elem_id=f"tab-{tab.ID}"):
                    uis[tab.ID] = tab.render(ctx)
        uis["tabs"] = tabs  # events that switch tabs return gr.Tabs(selected=...)
        for tab in TABS:
            tab.listen(ctx, uis[tab.ID], uis)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def warm_up(pipeline: DemoPipeline) -> float:
    """Run one small request end to end (model kernels, matplotlib fonts) so the first user
    does not pay for it. Returns the seconds it took; failures are logged, never raised."""
    import time

    t0 = time.perf_counter()
    try:
        img = Image.new("RGB", (96, 64), "white")
        img.paste((200, 40, 40), (10, 10, 40, 40))
        views.match_views(pipeline.match(img, ["a red square", "a blue circle"]))
    except Exception:  # a warm-up problem must not stop the app; the request will report it
        log.warning("warm-up request failed", exc_info=True)
    return time.perf_counter() - t0


def launch_kwargs(host: str, port: int, share: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` (server, upload limit, errors, theme).

    ``show_error=False``: only the app's own messages (``gr.Error``) reach a user; the text of any
    other exception stays in the server log.
    """
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        "show_error": False,
        "max_file_size": MAX_FILE_SIZE,
        "state_session_capacity": STATE_SESSIONS,
        "theme": THEME,
        "css": CSS,
    }


__all__ = [
    "CONCURRENCY_LIMIT",
    "CSS",
    "QUEUE_MAX_SIZE",
    "build_demo",
    "launch_kwargs",
    "warm_up",
]
