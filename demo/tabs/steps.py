"""The step views of one image–caption pair, shared by the Match and Search tabs.

Step 1 (a word picker with content words first — function words behind a switch —, the chosen
word's heatmap, every word's thumbnail, the word × region matrices), step 2 (regions and words
seen from the contexts, with a text generated from the numbers) and step 3 (how the final score is
built, what separates this pair from the other items), each in a collapsible section so a result
fits in about two screens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo import texts, views
from demo.tabs.common import (
    PICK_WORD,
    RAW,
    event_index,
    flag,
    friendly,
    index,
    output,
    picture,
    teach,
)
from shan.explain import StepExplanation

#: (result, item) → (image, explanation); raises InputError for a missing result or bad item
Lookup = Callable[[Any, Any], tuple[Any, StepExplanation]]


@dataclass
class StepsUI:
    word_sel: gr.Radio
    all_words: gr.Checkbox
    words_mode: gr.State
    heatmap: gr.Image
    word_summary: gr.Markdown
    thumbnails: gr.Gallery
    matrix: gr.Image
    step2_regions: gr.Image
    step2_words: gr.Image
    step2_text: gr.Markdown
    step3_chart: gr.Image
    step3_text: gr.Markdown

    def outputs(self) -> list[Any]:
        """The components of :data:`demo.views.STEP_VIEWS`, in that order."""
        slot = {"word_choices": "word_sel"}
        return [getattr(self, slot.get(name, name)) for name in views.STEP_VIEWS]


def render(prefix: str = "", item: str = "caption") -> StepsUI:
    """Lay out the three steps; element ids start with ``prefix`` (``""`` for Match)."""
    with gr.Accordion(
        "Step 1 · every word ↔ every region (local-to-local)", open=True, elem_id=f"{prefix}step1"
    ):
        words_mode = gr.State(False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                heatmap = picture("Step 1 heatmap of the chosen word", f"{prefix}step1-heatmap")
            with gr.Column(scale=2, min_width=260):
                word_sel = gr.Radio(
                    label="Word (unknown words end in ?)",
                    choices=[],
                    interactive=True,
                    elem_id=f"{prefix}word-select",
                )
                all_words = gr.Checkbox(
                    label="also function words (a, of, the, …)",
                    value=False,
                    elem_id=f"{prefix}word-all",
                )
                word_summary = gr.Markdown(elem_id=f"{prefix}word-summary")
                teach(texts.STEP1)
        with gr.Accordion(
            "Every word at once (click one to choose it)",
            open=False,
            elem_id=f"{prefix}step1-gallery-box",
        ):
            thumbnails = gr.Gallery(
                label=f"Step 1 · each word's heatmap on this {item}'s image",
                show_label=False,
                columns=3,
                height="auto",
                allow_preview=False,
                elem_id=f"{prefix}step1-gallery",
                elem_classes=["labelled-gallery"],
                object_fit="contain",
            )
        with gr.Accordion(
            "The word × region matrices", open=False, elem_id=f"{prefix}step1-matrix-box"
        ):
            matrix = picture("Step 1 · word × region matrix", f"{prefix}step1-matrix")
    with gr.Accordion(
        "Step 2 · the whole caption ↔ regions, the whole image ↔ words (global-to-local)",
        open=False,
        elem_id=f"{prefix}step2",
    ):
        step2_regions = picture("Step 2 · regions", f"{prefix}step2-regions")
        step2_words = picture("Step 2 · words", f"{prefix}step2-words")
        step2_text = gr.Markdown(elem_id=f"{prefix}step2-summary")
        teach(texts.STEP2)
    with gr.Accordion(
        "Step 3 · the whole image ↔ the whole caption (global-to-global), and the final score",
        open=True,
        elem_id=f"{prefix}step3-box",
    ):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                step3_chart = picture("Step 3 · the final score", f"{prefix}step3")
            with gr.Column(scale=2, min_width=260):
                step3_text = gr.Markdown(elem_id=f"{prefix}step3-summary")
                teach(texts.STEP3)
    return StepsUI(
        word_sel,
        all_words,
        words_mode,
        heatmap,
        word_summary,
        thumbnails,
        matrix,
        step2_regions,
        step2_words,
        step2_text,
        step3_chart,
        step3_text,
    )


def listen(ui: StepsUI, state: gr.State, item_sel: Any, lookup: Lookup, api: str = "") -> None:
    """Wire the word picker, the thumbnails and the function-word switch of one tab.

    ``item_sel`` is the component choosing the explained item (caption or image), ``lookup``
    finds its explanation in the stored result. Events: ``{api}explain_word`` (a word picked),
    ``{api}choose_word`` (a thumbnail clicked), ``{api}show_words`` (the switch).
    """

    def word(result: Any, item: Any, j: Any) -> tuple[Any, StepExplanation, int]:
        image, expl = lookup(result, item)
        return image, expl, index(j, len(expl.words), PICK_WORD)

    @friendly("showing the word")
    def on_word(result: Any, item: Any, j: Any) -> tuple:
        image, expl, j = word(result, item, j)
        v = views.word_views(image, expl, j)
        return v["heatmap"], v["word_summary"], v["matrix"]

    @friendly("showing the word")
    def on_thumb(result: Any, item: Any, mode: Any, evt: gr.EventData) -> tuple:
        # gr.EventData, not gr.SelectData: an API call without event data must reach the checks
        image, expl = lookup(result, item)
        shown = views.shown_words(expl, flag(mode))
        k = index(event_index(evt), len(shown), PICK_WORD)
        j = shown[k]
        v = views.word_views(image, expl, j)
        picker = views.word_choices(expl, j, flag(mode))
        return output(picker), v["heatmap"], v["word_summary"], v["matrix"]

    @friendly("listing the words")
    def on_mode(result: Any, item: Any, j: Any, show_all: Any) -> tuple:
        show_all = flag(show_all)
        try:
            image, expl = lookup(result, item)
        except Exception:  # no result yet: remember the choice for the next one
            return gr.skip(), gr.skip(), show_all
        j = j if isinstance(j, int) and 0 <= j < len(expl.words) else views.default_word(expl)
        thumbs = views.word_thumbnails(image, expl, views.shown_words(expl, show_all))
        return output(views.word_choices(expl, j, show_all)), thumbs, show_all

    ui.word_sel.input(
        on_word,
        inputs=[state, item_sel, ui.word_sel],
        outputs=[ui.heatmap, ui.word_summary, ui.matrix],
        api_name=f"{api}explain_word",
        **RAW,
    )
    ui.thumbnails.select(
        on_thumb,
        inputs=[state, item_sel, ui.words_mode],
        outputs=[ui.word_sel, ui.heatmap, ui.word_summary, ui.matrix],
        api_name=f"{api}choose_word",
        **RAW,
    )
    ui.all_words.input(
        on_mode,
        inputs=[state, item_sel, ui.word_sel, ui.all_words],
        outputs=[ui.word_sel, ui.thumbnails, ui.words_mode],
        api_name=f"{api}show_words",
        **RAW,
    )


__all__ = ["Lookup", "StepsUI", "listen", "render"]
