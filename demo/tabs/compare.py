"""Compare: one image, two captions side by side — which step caught the difference?

Caption A (say the true one) and caption B (its hard negative) are scored on the same regions:
their words with the differing ones highlighted, each step's part of the score gap, the
differing words' heatmaps next to each other. Below, **automatic minimal pairs** of caption A:
its colour / shape / size swaps, relation swap and opposite, count change and word order, all
scored on the image, in one table of which step prefers the true caption. Events: ``compare``
/ ``compare_example``, ``minimal_pairs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo import texts, views
from demo.tabs.common import (
    IMAGE_REFUSED,
    RAW,
    Context,
    friendly,
    gpu,
    image_slot,
    picture,
    teach,
    warn,
)
from demo.uploads import image_input

ID = "compare"
TITLE = "Compare: two captions"
REFUSALS = {
    "compare": IMAGE_REFUSED,
    "compare_example": IMAGE_REFUSED,
    "minimal_pairs": IMAGE_REFUSED,
}
#: the Compare views, in the order of :meth:`CompareUI.outputs` (after the notices)
COMPARE_VIEWS = ("words_a", "words_b", "table", "chart", "text", "pairs")
HIGHLIGHT = {"changed": "#ffb000", "unknown": "#bbbbbb"}


@dataclass
class CompareUI:
    image: gr.Image
    caption_a: gr.Textbox
    caption_b: gr.Textbox
    button: gr.Button
    examples_slot: gr.Column
    notices: gr.Markdown
    words_a: gr.HighlightedText
    words_b: gr.HighlightedText
    table: gr.Dataframe
    chart: gr.Image
    text: gr.Markdown
    pairs: gr.Image
    pairs_button: gr.Button
    pairs_notices: gr.Markdown
    pairs_table: gr.Dataframe
    pairs_text: gr.Markdown

    def outputs(self) -> list[Any]:
        return [self.notices, *(getattr(self, n) for n in COMPARE_VIEWS)]

    def pairs_outputs(self) -> list[Any]:
        return [self.pairs_notices, self.pairs_table, self.pairs_text]


def make_on_compare(ctx: Context):
    @gpu
    @friendly("comparing the captions")
    def on_compare(image: Any, caption_a: Any, caption_b: Any) -> tuple:
        result = ctx.pipeline.compare(image_input(image, ctx.roots), caption_a, caption_b)
        notes = warn(result.notices)
        v = views.compare_views(result)
        return (notes, *(v[n] for n in COMPARE_VIEWS))

    return on_compare


def render(ctx: Context) -> CompareUI:
    gr.Markdown(texts.COMPARE_HOWTO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            image = image_slot("compare-image")
            caption_a = gr.Textbox(
                label="Caption A (e.g. the true one)", lines=1, elem_id="compare-a"
            )
            caption_b = gr.Textbox(
                label="Caption B (e.g. its hard negative)", lines=1, elem_id="compare-b"
            )
            button = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            examples_slot = gr.Column(elem_classes=["compact-examples"])
        with gr.Column(scale=3, min_width=300):
            notices = gr.Markdown(elem_id="compare-notices")
            words_a = gr.HighlightedText(
                label="A, as the model reads it (differing words highlighted)",
                color_map=HIGHLIGHT,
                show_legend=False,
                elem_id="compare-words-a",
            )
            words_b = gr.HighlightedText(
                label="B, as the model reads it",
                color_map=HIGHLIGHT,
                show_legend=False,
                elem_id="compare-words-b",
            )
            text = gr.Markdown(elem_id="compare-summary")
            table = gr.Dataframe(
                headers=views.COMPARE_HEADERS,
                label="Step by step",
                interactive=False,
                elem_id="compare-table",
            )
    chart = picture("Which step caught it", "compare-chart")
    teach(texts.COMPARE_READ)
    gr.Markdown("**The differing words, side by side** — step 1 heatmaps: A's word | B's word")
    pairs = picture("The differing words, side by side", "compare-pairs")
    with gr.Accordion("Automatic minimal pairs of caption A", open=True, elem_id="pairs-box"):
        gr.Markdown(texts.PAIRS_HOWTO)
        pairs_button = gr.Button(
            "Make the minimal pairs of caption A", variant="secondary", elem_id="pairs-btn"
        )
        pairs_notices = gr.Markdown(elem_id="pairs-notices")
        pairs_text = gr.Markdown(elem_id="pairs-summary")
        pairs_table = gr.Dataframe(
            headers=views.PAIRS_HEADERS,
            datatype=["str", "markdown", "number", "number", "number", "number", "str"],
            label="The true caption minus each pair (green: that score prefers the true one)",
            interactive=False,
            wrap=True,
            column_widths=["12%", "40%", "8%", "8%", "8%", "8%", "16%"],
            elem_id="pairs-table",
        )
    ui = CompareUI(
        image, caption_a, caption_b, button, examples_slot, notices, words_a, words_b, table,
        chart, text, pairs, pairs_button, pairs_notices, pairs_table, pairs_text,
    )  # fmt: skip
    pairs_examples = [ex for ex in ctx.examples if ex.captions and ex.hard_negative]
    if pairs_examples:
        with examples_slot:
            gr.Examples(
                examples=[[ex.image, ex.captions[0], ex.hard_negative] for ex in pairs_examples],
                inputs=[image, caption_a, caption_b],
                outputs=ui.outputs(),
                fn=make_on_compare(ctx),
                run_on_click=True,
                cache_examples=False,
                label="Examples — a true caption (A) and its hard negative (B)",
                visible_columns=[0],  # the pictures only: compact
                api_name="compare_example",
                elem_id="compare-examples",
            )
    return ui


def listen(ctx: Context, ui: CompareUI, tabs: dict[str, Any]) -> None:
    @gpu
    @friendly("making the minimal pairs")
    def on_pairs(image: Any, caption: Any) -> tuple:
        result = ctx.pipeline.minimal_pairs(image_input(image, ctx.roots), caption)
        notes = warn(result.notices)
        v = views.pairs_views(result)
        return notes, v["table"], v["text"]

    ui.pairs_button.click(
        on_pairs,
        inputs=[ui.image, ui.caption_a],
        outputs=ui.pairs_outputs(),
        api_name="minimal_pairs",
        **RAW,
    )
    ui.button.click(
        make_on_compare(ctx),
        inputs=[ui.image, ui.caption_a, ui.caption_b],
        outputs=ui.outputs(),
        api_name="compare",
        **RAW,
    )


__all__ = ["COMPARE_VIEWS", "CompareUI", "ID", "REFUSALS", "TITLE", "listen", "render"]
