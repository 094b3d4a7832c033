"""Compare: one image, two captions side by side — which step caught the difference?

Caption A (say the true one) and caption B (its hard negative) are scored on the same regions:
their words with the differing ones highlighted, each step's part of the score gap, the
differing words' heatmaps next to each other. Events: ``compare`` / ``compare_example``.
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
    picture,
    teach,
    warn,
)
from demo.uploads import image_input

ID = "compare"
TITLE = "Compare: two captions"
REFUSALS = {"compare": IMAGE_REFUSED, "compare_example": IMAGE_REFUSED}
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
    pairs: gr.Gallery

    def outputs(self) -> list[Any]:
        return [self.notices, *(getattr(self, n) for n in COMPARE_VIEWS)]


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
            image = gr.Image(
                label="Image",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=260,
                elem_id="compare-image",
            )
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
    pairs = gr.Gallery(
        label="The differing words, side by side (step 1 heatmaps: A's word | B's word)",
        columns=1,
        height="auto",
        allow_preview=False,
        elem_id="compare-pairs",
        elem_classes=["labelled-gallery"],
        object_fit="contain",
    )
    ui = CompareUI(
        image, caption_a, caption_b, button, examples_slot, notices, words_a, words_b, table,
        chart, text, pairs,
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
                example_labels=[
                    f"{i + 1} · true vs. hard negative" for i in range(len(pairs_examples))
                ],
                api_name="compare_example",
                elem_id="compare-examples",
            )
    return ui


def listen(ctx: Context, ui: CompareUI, tabs: dict[str, Any]) -> None:
    ui.button.click(
        make_on_compare(ctx),
        inputs=[ui.image, ui.caption_a, ui.caption_b],
        outputs=ui.outputs(),
        api_name="compare",
        **RAW,
    )


__all__ = ["COMPARE_VIEWS", "CompareUI", "ID", "REFUSALS", "TITLE", "listen", "render"]
