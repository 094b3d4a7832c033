"""The Gradio app: ``build_demo(pipeline) -> gr.Blocks`` with a Match tab and a Search tab.

Handlers are plain functions of their inputs; per-user results travel in ``gr.State`` (never in
module globals), so choosing another caption or word redraws the step views from the stored
explanation without running the detector or the model again. Every handler turns user mistakes
(:class:`demo.pipeline.InputError`) into a ``gr.Error`` with the message, and any unexpected
exception into a short ``gr.Error`` while the traceback goes to the server log.

What arrives from the network is checked before a handler runs (:mod:`demo.uploads`): file inputs
are upload paths only, ``data:`` URLs obey the upload limit, and errors Gradio raises while reading
inputs become the app's own messages. Handlers that can be called through the API alone
(``/explain_caption``, ``/explain_word``, ``/choose_word``) check their session state and indices.
"""

from __future__ import annotations

import functools
import logging
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from demo import explain_text, gradio_compat, render, texts
from demo.explain_text import STOPWORDS
from demo.pipeline import (
    MAX_CAPTIONS,
    MAX_PIXELS,
    MAX_SEARCH_IMAGES,
    DemoPipeline,
    Example,
    InputError,
    MatchResult,
    SearchResult,
)
from demo.uploads import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_TEXT,
    GuardedBlocks,
    file_inputs,
    image_input,
    upload_roots,
)
from shan.explain import StepExplanation, box_heatmap

log = logging.getLogger(__name__)

try:  # Hugging Face ZeroGPU: a GPU is attached only inside functions decorated with spaces.GPU
    import spaces  # type: ignore[import-not-found]

    gpu: Callable[[Callable], Callable] = spaces.GPU
except ImportError:  # anywhere else: a no-op

    def gpu(fn: Callable) -> Callable:
        return fn


CONCURRENCY_LIMIT = 2  # requests computed at once (the CPU has few cores; more only queue)
QUEUE_MAX_SIZE = 64  # requests waiting at most; more are refused with "queue full"
MAX_FILE_SIZE = MAX_UPLOAD_BYTES  # upload limit per file (data: URLs are held to it too)
STATE_TTL_S = 3600  # a session's stored match result is dropped after an hour without use
STATE_SESSIONS = 256  # at most this many sessions keep a stored result (a few MB each)
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber")
CSS = """
.step-box {border-left: 4px solid var(--color-accent); padding-left: 12px;}
.teach {font-size: 0.95em;}
"""
TABLE_HEADERS = ["Rank", "Caption", "As the model reads it", "S", "S_L2L", "S_G2L", "S_G2G"]
SEARCH_HEADERS = ["Rank", "Image", "S", "S_L2L", "S_G2L", "S_G2G"]


# --------------------------------------------------------------------------------------------
# Error handling


def friendly(action: str) -> Callable[[Callable], Callable]:
    """Decorate a handler: InputError → gr.Error(message); anything else → short gr.Error + log."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except InputError as err:
                raise gr.Error(
                    str(err), title="Please check the input", print_exception=False
                ) from None
            except Exception as err:
                log.exception("unexpected error while %s", action)
                raise gr.Error(
                    f"Something went wrong while {action} ({type(err).__name__}). "
                    "The details are in the server log; please try another input.",
                    print_exception=False,
                ) from None

        return wrapper

    return deco


NO_RESULT = "There is no match result in this session yet: run Match first."
PICK_CAPTION = "Pick one of the listed captions."
PICK_WORD = "Pick one of the caption's words."
IMAGE_REFUSED = (
    f"The image could not be used; please upload a PNG or JPEG file (at most {MAX_UPLOAD_TEXT})."
)
FILES_REFUSED = (
    f"The files could not be used; please upload PNG or JPEG images (at most {MAX_UPLOAD_TEXT} "
    "each)."
)
#: the app's message when Gradio cannot read an event's inputs (by api_name)
REFUSALS = {
    "match": IMAGE_REFUSED,
    "match_submit": IMAGE_REFUSED,
    "match_example": IMAGE_REFUSED,
    "search": FILES_REFUSED,
    "search_submit": FILES_REFUSED,
    "search_example": FILES_REFUSED,
    "on_match": IMAGE_REFUSED,  # an example click runs the handler under its own name
    "on_search": FILES_REFUSED,
    "explain_caption": "Pick one of the listed captions (after running Match).",
    "explain_word": "Pick one of the listed captions and one of its words (after running Match).",
    "choose_word": "Pick one of the listed captions and one of its words (after running Match).",
}


def _stored_result(result: Any) -> MatchResult:
    """The session's match result, or an :class:`InputError` saying to run Match first."""
    if not isinstance(result, MatchResult):
        raise InputError(NO_RESULT)
    return result


def _index(value: Any, n: int, message: str) -> int:
    """``value`` as an index in ``[0, n)`` (an int, an integral float or a digit string)."""
    if isinstance(value, bool):
        raise InputError(message)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
        value = int(value.strip())
    if not isinstance(value, int) or not 0 <= value < n:
        raise InputError(message)
    return value


def _warn(notices: Sequence[str]) -> str:
    """Show notices as toasts and return them as Markdown for the page."""
    for note in notices:
        gr.Warning(note, duration=8)
    return "\n".join(f"⚠️ {n}" for n in notices)


# --------------------------------------------------------------------------------------------
# Views: result → pictures / tables (pure functions, used by the handlers and the benchmark)


def _fmt(x: float) -> float:
    return round(float(x), 4)


def ranking_table(result: MatchResult) -> pd.DataFrame:
    """One row per caption, best first: rank, caption, tokens (unknown marked ``?``), scores."""
    rows = []
    for rank, m in enumerate(result.order, start=1):
        s = result.scores[m]
        words = " ".join(result.display_words(m))
        rows.append([rank, result.captions[m], words, *(_fmt(v) for v in s)])
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def caption_choices(result: MatchResult) -> list[tuple[str, int]]:
    """Dropdown choices ``(label, caption index)`` in rank order."""
    return [
        (f"{r}. {render.shorten(result.captions[m], 70)}  (S = {result.scores[m, 0]:.3f})", m)
        for r, m in enumerate(result.order, start=1)
    ]


def default_word(expl: StepExplanation) -> int:
    """The word to show first: a known content word (no punctuation) with the sharpest attention."""
    best, best_val = 0, -10.0
    for j, w in enumerate(expl.words):
        if all(ch in string.punctuation for ch in w):
            continue
        val = float(expl.beta[:, j].max())
        val -= 2.0 if expl.unknown[j] else 0.0
        val -= 1.0 if w.lower() in STOPWORDS else 0.0
        if val > best_val:
            best, best_val = j, val
    return best


def word_choices(expl: StepExplanation) -> list[tuple[str, int]]:
    return [(f"{w}", j) for j, w in enumerate(expl.display_words)]


def word_heatmap(image: Any, expl: StepExplanation, j: int) -> np.ndarray:
    """Step 1: word ``j``'s attention over the regions (β[:, j]) as a heatmap with colour bar."""
    heat = box_heatmap(expl.beta[:, j], expl.boxes, expl.image_size, uncovered=np.nan)
    word = expl.display_words[j]
    return render.heatmap_image(
        image,
        heat,
        title=f"Step 1 · where does the word “{word}” look?  (β, peak {expl.beta[:, j].max():.2f})",
        boxes=expl.boxes,
        top=expl.top_regions(j, 3),
        labels=expl.region_labels,
        cbar_label="β of the box ÷ the peak β",
    )


def word_thumbnails(image: Any, expl: StepExplanation) -> list[tuple[np.ndarray, str]]:
    """Step 1: one small heatmap per word, labelled ``j. word → best region``."""
    out = []
    for j, w in enumerate(expl.display_words):
        heat = box_heatmap(
            expl.beta[:, j], expl.boxes, expl.image_size, max_side=128, uncovered=np.nan
        )
        (i, b), *_ = expl.top_regions(j, 1)
        label = f"{j + 1}. “{w}” → #{i} {expl.region_labels[i]} (β={b:.2f})"
        out.append((render.heat_thumbnail(image, heat), label))
    return out


def word_matrix(expl: StepExplanation, j: int | None) -> np.ndarray:
    return render.matrix_image(
        expl.beta,
        expl.display_words,
        expl.region_labels,
        title="Step 1 · the word × region attention matrices",
        highlight_word=j,
        second=expl.alpha,
    )


def word_summary(expl: StepExplanation, j: int) -> str:
    """One line: which regions word j attends to most."""
    tops = ", ".join(f"#{i} {expl.region_labels[i]} ({b:.2f})" for i, b in expl.top_regions(j, 3))
    note = " It is an **unknown word**, read as `<unk>`." if expl.unknown[j] else ""
    return f"**“{expl.display_words[j]}”** looks most at: {tops}.{note}"


def step2_views(image: Any, expl: StepExplanation) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: the photo, δ and image-pooling heatmaps; γ and text-pooling bars per word.

    Titles and the line under the bars are generated from the numbers
    (:mod:`demo.explain_text`): the most weighted word is named, pooling weights that are all
    equal are said to be.
    """
    delta = box_heatmap(expl.delta, expl.boxes, expl.image_size, uncovered=np.nan)
    pool = box_heatmap(expl.img_pool, expl.boxes, expl.image_size, uncovered=np.nan)
    (r, d), *_ = explain_text.top_items(expl.delta, 1)
    titles = (
        f"δ: text context → regions (peak {d:.2f} on #{r})",
        explain_text.pooling_title(
            "image", expl.img_pool, [f"#{i}" for i in range(len(expl.img_pool))]
        ),
    )
    pic = render.context_regions_image(image, delta, pool, titles=titles)
    bars = render.word_weights_chart(
        expl.display_words,
        expl.gamma,
        expl.txt_pool,
        title="Step 2 · the words seen from the whole image",
        note=explain_text.step2_words_note(expl),
        uniform_pool=explain_text.is_uniform(expl.txt_pool),
    )
    return pic, bars


def step3_views(
    expl: StepExplanation,
    captions: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    m: int | None = None,
    calibration: Any = None,
) -> tuple[np.ndarray, str]:
    """Step 3: contributions chart (and, given all captions' ``(M, 4)`` scores and this
    caption's index ``m``, each step's part of the gap to the other caption), and the text."""
    c, s = expl.contributions, expl.scores
    margins, reference = None, ""
    if captions is not None and scores is not None and m is not None:
        ref = explain_text.reference_caption(scores, m)
        if ref is not None:
            weights = explain_text.step_weights_of(expl)
            margins = explain_text.step_margins(scores, m, ref, weights)
            reference = captions[ref]
    chart = render.shares_chart(
        c, expl.shares, s.get("total", sum(c.values())), margins=margins, reference=reference
    )
    md = explain_text.step3_text(expl, captions, scores, m, calibration)
    return chart, md


def _calibration(result: Any, calibration: Any = None) -> Any:
    """The calibration to show: the one given, else the result's (None: none saved)."""
    return calibration if calibration is not None else getattr(result, "calibration", None)


def caption_views(
    result: MatchResult, m: int, j: int | None = None, calibration: Any = None
) -> tuple:
    """All step views of caption ``m`` (word ``j``, or the default word); needs its explanation."""
    expl = result.explanations[m]
    if expl is None:
        raise ValueError(f"caption {m} is not explained yet (DemoPipeline.explain)")
    if j is None or not 0 <= j < len(expl.words):
        j = default_word(expl)
    s2_pic, s2_bars = step2_views(result.image, expl)
    s3_chart, s3_md = step3_views(
        expl, result.captions, result.scores, m, _calibration(result, calibration)
    )
    return (
        gr.update(choices=word_choices(expl), value=j),
        word_heatmap(result.image, expl, j),
        word_summary(expl, j),
        word_thumbnails(result.image, expl),
        word_matrix(expl, j),
        s2_pic,
        s2_bars,
        s3_chart,
        s3_md,
    )


def match_views(result: MatchResult, calibration: Any = None) -> tuple:
    """Everything the Match tab shows after a new request (the best caption explained).

    ``calibration`` (default: ``result.calibration`` when the pipeline sets it) places every
    score among the true and non-matching pairs saved with the model; without one the charts and
    texts say that none was saved.
    """
    cal = _calibration(result, calibration)
    best = result.order[0]
    ordered = [result.captions[m] for m in result.order]
    return (
        ranking_table(result),
        render.ranking_chart(ordered, result.scores[result.order], cal),
        render.regions_image(
            result.image,
            result.regions.boxes.numpy(),
            result.region_labels,
            result.regions.scores.numpy(),
        ),
        gr.update(choices=caption_choices(result), value=best),
        *caption_views(result, best, calibration=cal),
    )


def search_views(result: SearchResult) -> tuple:
    """Ranked gallery, score table, and the best image's per-word step-1 heatmaps."""
    gallery = []
    rows = []
    for r, i in enumerate(result.order, start=1):
        s = result.scores[i]
        gallery.append((np.asarray(result.images[i]), f"{r}. {result.names[i]} — S = {s[0]:.3f}"))
        rows.append([r, result.names[i], *(_fmt(v) for v in s)])
    table = pd.DataFrame(rows, columns=SEARCH_HEADERS)
    best = result.best
    j = default_word(best)
    heat = word_heatmap(result.best_image, best, j)
    return gallery, table, word_thumbnails(result.best_image, best), heat


# --------------------------------------------------------------------------------------------
# The app


def _picture(label: str, elem_id: str, **kwargs: Any) -> gr.Image:
    """An output-only image slot; its figure carries its own title, so the label stays hidden."""
    return gr.Image(label=label, elem_id=elem_id, interactive=False, show_label=False, **kwargs)


def build_demo(
    pipeline: DemoPipeline,
    examples: Sequence[Example] = (),
) -> gr.Blocks:
    """Build the Blocks app around a loaded pipeline (launch it with :func:`launch_kwargs`)."""
    gradio_compat.install()  # identical pictures served concurrently must not be truncated
    # PIL's own decompression-bomb limit agrees with the app's pixel budget (Gradio uses PIL too)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    # the only files a handler may open: uploads (Gradio's upload folder / cache) and our assets
    roots = upload_roots(Path(ex.image).parent for ex in examples)

    @gpu
    @friendly("matching the captions")
    def on_match(image: Any, captions: Any) -> tuple:
        result = pipeline.match(image_input(image, roots), captions)
        notes = _warn(result.notices)
        return (notes, *match_views(result), result)

    @gpu
    @friendly("explaining the caption")
    def on_caption(result: Any, m: Any) -> tuple:
        result = _stored_result(result)
        m = _index(m, len(result.captions), PICK_CAPTION)
        pipeline.explain(result, m)  # SHAN on the stored regions; no new detection
        return (*caption_views(result, m), result)

    def word_views(result: Any, m: Any, j: Any) -> tuple:
        """``(j, heatmap, summary, matrix)`` of word ``j`` of the stored caption ``m``."""
        result = _stored_result(result)
        m = _index(m, len(result.captions), PICK_CAPTION)
        expl = result.explanations[m]
        if expl is None:
            raise InputError("Explain this caption first (pick it in the list of captions).")
        j = _index(j, len(expl.words), PICK_WORD)
        return j, word_heatmap(result.image, expl, j), word_summary(expl, j), word_matrix(expl, j)

    @friendly("showing the word")
    def on_word(result: Any, m: Any, j: Any) -> tuple:
        return word_views(result, m, j)[1:]

    @friendly("showing the word")
    def on_thumb(result: Any, m: Any, evt: gr.EventData) -> tuple:
        # gr.EventData, not gr.SelectData: an API call without event data must reach this check
        data = getattr(evt, "_data", None)
        return word_views(result, m, data.get("index") if isinstance(data, dict) else None)

    @gpu
    @friendly("searching the images")
    def on_search(files: Any, caption: Any) -> tuple:
        result = pipeline.search(file_inputs(files, roots), caption)
        notes = _warn(result.notices)
        return (notes, *search_views(result))

    with GuardedBlocks(title="SHAN step-by-step image–text matching", refusals=REFUSALS) as demo:
        gr.Markdown(f"# {texts.TITLE}")
        if pipeline.description:
            gr.Markdown(f"<small>Loaded: {pipeline.description}</small>")
        with gr.Accordion("What is SHAN? Read me first", open=True):
            gr.Markdown(texts.INTRO, elem_classes=["teach"])
        # per-session result (image, regions, explanations): never a module global
        state = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Tabs():
            with gr.Tab("Match: one image, many captions", id="match"):
                gr.Markdown(texts.MATCH_HOWTO)
                with gr.Row():
                    with gr.Column(scale=1):
                        image_in = gr.Image(
                            label="Image",
                            type="filepath",
                            image_mode=None,
                            sources=["upload", "clipboard"],
                            height=340,
                            elem_id="match-image",
                        )
                        captions_in = gr.Textbox(
                            label=f"Captions — one per line, at most {MAX_CAPTIONS}",
                            lines=5,
                            placeholder="a red circle left of a blue square\na green triangle",
                            elem_id="match-captions",
                        )
                        match_btn = gr.Button("Match", variant="primary", elem_id="match-btn")
                    with gr.Column(scale=1):
                        regions_out = _picture("Detected regions", "regions")
                        gr.Markdown(texts.REGIONS, elem_classes=["teach"])
                match_ex_slot = gr.Column()
                notices_out = gr.Markdown(elem_id="match-notices")
                gr.Markdown(texts.RANKING, elem_classes=["teach"])
                table_out = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    label="Ranking (best first)",
                    interactive=False,
                    wrap=True,
                    column_widths=["5%", "35%", "32%", "7%", "7%", "7%", "7%"],
                    max_height=900,
                    elem_id="ranking",
                )
                chart_out = _picture("Scores", "scores-chart")
                caption_sel = gr.Dropdown(
                    label="Explain this caption (the step views below follow it)",
                    choices=[],
                    interactive=True,
                    elem_id="caption-select",
                )
                with gr.Group(elem_classes=["step-box"]):
                    with gr.Row():
                        with gr.Column(scale=3):
                            word_sel = gr.Radio(
                                label="Word (unknown words end in ?)",
                                choices=[],
                                interactive=True,
                                elem_id="word-select",
                            )
                            heat_out = _picture(
                                "Step 1 heatmap of the chosen word", "step1-heatmap"
                            )
                            word_md = gr.Markdown(elem_id="word-summary")
                        with gr.Column(scale=2):
                            gr.Markdown(texts.STEP1, elem_classes=["teach"])
                    thumbs_out = gr.Gallery(
                        label="Step 1 · every word's heatmap (click one to choose it)",
                        columns=6,
                        fit_columns=False,
                        height=420,
                        allow_preview=False,
                        elem_id="step1-gallery",
                        object_fit="contain",
                    )
                    matrix_out = _picture("Step 1 · word × region matrix", "step1-matrix")
                with gr.Group(elem_classes=["step-box"]):
                    with gr.Row():
                        with gr.Column(scale=3):
                            s2_img_out = _picture("Step 2 · regions", "step2-regions")
                            s2_bar_out = _picture("Step 2 · words", "step2-words")
                        with gr.Column(scale=2):
                            gr.Markdown(texts.STEP2, elem_classes=["teach"])
                with gr.Group(elem_classes=["step-box"]):
                    with gr.Row():
                        with gr.Column(scale=3):
                            s3_out = _picture("Step 3 · the final score", "step3")
                            s3_md = gr.Markdown(elem_id="step3-summary")
                        with gr.Column(scale=2):
                            gr.Markdown(texts.STEP3, elem_classes=["teach"])

            with gr.Tab("Search: many images, one caption", id="search"):
                gr.Markdown(texts.SEARCH_HOWTO)
                with gr.Row():
                    with gr.Column(scale=1):
                        files_in = gr.File(
                            label=f"Images (up to {MAX_SEARCH_IMAGES})",
                            file_count="multiple",
                            file_types=["image"],
                            type="filepath",
                            elem_id="search-files",
                        )
                        query_in = gr.Textbox(label="Caption", lines=1, elem_id="search-caption")
                        search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
                    with gr.Column(scale=2):
                        s_notices = gr.Markdown(elem_id="search-notices")
                        s_gallery = gr.Gallery(
                            label="Images, best match first",
                            columns=4,
                            height="auto",
                            elem_id="search-gallery",
                            object_fit="contain",
                        )
                        s_table = gr.Dataframe(
                            headers=SEARCH_HEADERS,
                            label="Scores",
                            interactive=False,
                            elem_id="search-table",
                        )
                search_ex_slot = gr.Column()
                gr.Markdown(texts.SEARCH_HEATMAPS, elem_classes=["teach"])
                s_thumbs = gr.Gallery(
                    label="Best image · one heatmap per word",
                    columns=5,
                    fit_columns=False,
                    height="auto",
                    allow_preview=True,
                    elem_id="search-heatmaps",
                    object_fit="contain",
                )
                s_heat = _picture("Best image · the sharpest word", "search-heatmap", height=480)

            with gr.Tab("About", id="about"):
                gr.Markdown(texts.ABOUT)
                if pipeline.model_card:
                    with gr.Accordion("Model card of the loaded checkpoint", open=False):
                        gr.Markdown(pipeline.model_card, elem_id="model-card")

        step_outputs = [
            word_sel,
            heat_out,
            word_md,
            thumbs_out,
            matrix_out,
            s2_img_out,
            s2_bar_out,
            s3_out,
            s3_md,
        ]
        match_outputs = [
            notices_out,
            table_out,
            chart_out,
            regions_out,
            caption_sel,
            *step_outputs,
            state,
        ]
        # preprocess=False: the handlers read the raw inputs themselves (demo.uploads checks the
        # files; _index/_stored_result the choices), so Gradio never opens a path for them
        raw = dict(preprocess=False)
        match_event = dict(fn=on_match, inputs=[image_in, captions_in], outputs=match_outputs)
        match_btn.click(**match_event, **raw, api_name="match")
        captions_in.submit(**match_event, **raw, api_name="match_submit")
        caption_sel.input(
            on_caption,
            inputs=[state, caption_sel],
            outputs=[*step_outputs, state],
            api_name="explain_caption",
            **raw,
        )
        word_sel.input(
            on_word,
            inputs=[state, caption_sel, word_sel],
            outputs=[heat_out, word_md, matrix_out],
            api_name="explain_word",
            **raw,
        )
        thumbs_out.select(
            on_thumb,
            inputs=[state, caption_sel],
            outputs=[word_sel, heat_out, word_md, matrix_out],
            api_name="choose_word",
            **raw,
        )
        search_outputs = [s_notices, s_gallery, s_table, s_thumbs, s_heat]
        search_event = dict(fn=on_search, inputs=[files_in, query_in], outputs=search_outputs)
        search_btn.click(**search_event, **raw, api_name="search")
        query_in.submit(**search_event, **raw, api_name="search_submit")

        if examples:
            with match_ex_slot:
                gr.Examples(
                    examples=[[ex.image, "\n".join(ex.all_captions)] for ex in examples],
                    inputs=[image_in, captions_in],
                    outputs=match_outputs,
                    fn=on_match,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (true captions + one hard negative, the last line)",
                    api_name="match_example",
                )
            with search_ex_slot:
                pics = [ex.image for ex in examples]
                queries = [ex.captions[0] for ex in examples if ex.captions][:3]
                gr.Examples(
                    examples=[[pics, q] for q in queries],
                    inputs=[files_in, query_in],
                    outputs=search_outputs,
                    fn=on_search,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (all example images, one caption)",
                    api_name="search_example",
                )

    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def warm_up(pipeline: DemoPipeline) -> float:
    """Run one small request end to end (model kernels, matplotlib fonts) so the first user
    does not pay for it. Returns the seconds it took; failures are logged, never raised."""
    import time

    from PIL import Image

    t0 = time.perf_counter()
    try:
        img = Image.new("RGB", (96, 64), "white")
        img.paste((200, 40, 40), (10, 10, 40, 40))
        match_views(pipeline.match(img, ["a red square", "a blue circle"]))
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
    "QUEUE_MAX_SIZE",
    "build_demo",
    "caption_views",
    "friendly",
    "launch_kwargs",
    "warm_up",
    "match_views",
    "ranking_table",
    "search_views",
]
