"""Search: several images, one caption → the images ranked, and the steps of any of them.

The gallery labels carry every score; clicking an image (or picking it in the list) shows that
image's step views — word choice included — computed from the stored regions, so the detector
does not run again. Events: ``search`` / ``search_submit`` / ``search_example``,
``search_explain_image``, ``search_choose_image`` and the step views' word events with the
``search_`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo import texts, views
from demo.pipeline import MAX_SEARCH_IMAGES, InputError, SearchResult
from demo.tabs import steps
from demo.tabs.common import (
    FILES_REFUSED,
    NO_SEARCH,
    PICK_IMAGE,
    RAW,
    STATE_TTL_S,
    Context,
    event_index,
    flag,
    friendly,
    gpu,
    index,
    output,
    stored,
    warn,
)
from demo.uploads import file_inputs

ID = "search"
TITLE = "Search: many images, one caption"
REFUSALS = {
    "search": FILES_REFUSED,
    "search_submit": FILES_REFUSED,
    "search_example": FILES_REFUSED,
    "on_search": FILES_REFUSED,
    "search_explain_image": "Pick one of the ranked images (after running Search).",
    "search_choose_image": "Pick one of the ranked images (after running Search).",
    "search_explain_word": "Pick one of the ranked images and a word (after running Search).",
    "search_choose_word": "Pick one of the ranked images and a word (after running Search).",
    "search_show_words": "Run Search first.",
}


@dataclass
class SearchUI:
    files: gr.File
    query: gr.Textbox
    button: gr.Button
    examples_slot: gr.Column
    notices: gr.Markdown
    gallery: gr.Gallery
    table: gr.Dataframe
    image_sel: gr.Dropdown
    steps: steps.StepsUI
    state: gr.State

    def outputs(self) -> list[Any]:
        """What a new search fills: notices, gallery, table, image picker, steps, state."""
        return [
            self.notices, self.gallery, self.table, self.image_sel, *self.steps.outputs(),
            self.state,
        ]  # fmt: skip


def lookup(result: Any, i: Any) -> tuple[Any, Any]:
    """The stored search's image ``i`` and its explanation (InputError otherwise)."""
    result = stored(result, SearchResult, NO_SEARCH)
    i = index(i, len(result.images), PICK_IMAGE)
    expl = result.explanations[i]
    if expl is None:
        raise InputError("Explain this image first (pick it in the list of images).")
    return result.images[i], expl


def make_on_search(ctx: Context):
    @gpu
    @friendly("searching the images")
    def on_search(files: Any, caption: Any, show_all: Any = False) -> tuple:
        result = ctx.pipeline.search(file_inputs(files, ctx.roots), caption)
        notes = warn(result.notices)
        v = views.search_views(result, all_words=flag(show_all))
        names = ("gallery", "table", "image_choices", *views.STEP_VIEWS)
        return (notes, *(output(v[n]) for n in names), result)

    return on_search


def render(ctx: Context) -> SearchUI:
    gr.Markdown(texts.SEARCH_HOWTO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            files = gr.File(
                label=f"Images (up to {MAX_SEARCH_IMAGES})",
                file_count="multiple",
                file_types=["image"],
                type="filepath",
                elem_id="search-files",
            )
            query = gr.Textbox(label="Caption", lines=1, elem_id="search-caption")
            button = gr.Button("Search", variant="primary", elem_id="search-btn")
            examples_slot = gr.Column(elem_classes=["compact-examples"])
        with gr.Column(scale=3, min_width=300):
            notices = gr.Markdown(elem_id="search-notices")
            gr.Markdown("**Images, best match first** — click one to see its steps")
            gallery = gr.Gallery(
                label="Images, best match first",
                show_label=False,
                columns=3,
                height="auto",
                allow_preview=False,
                elem_id="search-gallery",
                elem_classes=["labelled-gallery"],
                object_fit="contain",
            )
            with gr.Accordion("Scores as a table", open=False):
                table = gr.Dataframe(
                    headers=views.SEARCH_HEADERS,
                    label="Scores",
                    interactive=False,
                    elem_id="search-table",
                )
    image_sel = gr.Dropdown(
        label="Explain the caption on this image (the step views below follow it)",
        choices=[],
        interactive=True,
        elem_id="search-image-select",
    )
    step_ui = steps.render(prefix="search-", item="image")
    state = gr.State(None, time_to_live=STATE_TTL_S)
    ui = SearchUI(
        files, query, button, examples_slot, notices, gallery, table, image_sel, step_ui, state
    )
    if ctx.examples:
        with examples_slot:
            pics = [ex.image for ex in ctx.examples]
            queries = [ex.captions[0] for ex in ctx.examples if ex.captions][:3]
            gr.Examples(
                examples=[[pics, q] for q in queries],
                inputs=[files, query],
                outputs=ui.outputs(),
                fn=make_on_search(ctx),
                run_on_click=True,
                cache_examples=False,
                label="Examples — every example image, one caption",
                example_labels=[f"“{q}”" for q in queries],
                api_name="search_example",
                elem_id="search-examples",
            )
    return ui


def listen(ctx: Context, ui: SearchUI, tabs: dict[str, Any]) -> None:
    on_search = make_on_search(ctx)

    def image_views(result: Any, i: Any, show_all: Any) -> tuple[SearchResult, int, dict]:
        result = stored(result, SearchResult, NO_SEARCH)
        i = index(i, len(result.images), PICK_IMAGE)
        ctx.pipeline.explain_image(result, i)  # SHAN on the stored regions; no new detection
        return result, i, views.search_image_views(result, i, all_words=flag(show_all))

    @gpu
    @friendly("explaining the image")
    def on_image(result: Any, i: Any, show_all: Any) -> tuple:
        result, _, v = image_views(result, i, show_all)
        return (*(output(v[n]) for n in views.STEP_VIEWS), result)

    @gpu
    @friendly("explaining the image")
    def on_gallery(result: Any, show_all: Any, evt: gr.EventData) -> tuple:
        result = stored(result, SearchResult, NO_SEARCH)
        rank = index(event_index(evt), len(result.order), PICK_IMAGE)
        result, i, v = image_views(result, result.order[rank], show_all)
        picker = views.Choices(views.image_choices(result), i)
        return (output(picker), *(output(v[n]) for n in views.STEP_VIEWS), result)

    inputs = [ui.files, ui.query, ui.steps.words_mode]
    event = dict(fn=on_search, inputs=inputs, outputs=ui.outputs(), **RAW)
    ui.button.click(**event, api_name="search")
    ui.query.submit(**event, api_name="search_submit")
    ui.image_sel.input(
        on_image,
        inputs=[ui.state, ui.image_sel, ui.steps.words_mode],
        outputs=[*ui.steps.outputs(), ui.state],
        api_name="search_explain_image",
        **RAW,
    )
    ui.gallery.select(
        on_gallery,
        inputs=[ui.state, ui.steps.words_mode],
        outputs=[ui.image_sel, *ui.steps.outputs(), ui.state],
        api_name="search_choose_image",
        **RAW,
    )
    steps.listen(ui.steps, ui.state, ui.image_sel, lookup, api="search_")


__all__ = ["ID", "REFUSALS", "SearchUI", "TITLE", "listen", "lookup", "render"]
