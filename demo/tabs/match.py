"""Match: one image, many captions → the captions ranked, and each step of the chosen one.

Layout: inputs (with compact examples) beside the results (notices, ranking table, ranking
chart); the detected regions and the three steps below in collapsible sections.
Events: ``match`` / ``match_submit`` / ``match_example`` (a new request), ``explain_caption``
(another caption of the stored result; SHAN on the stored regions, no new detection) and the
step views' word events (:mod:`demo.tabs.steps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo import render as draw
from demo import texts, views
from demo.pipeline import MAX_CAPTIONS, InputError, MatchResult
from demo.tabs import steps
from demo.tabs.common import (
    IMAGE_REFUSED,
    NO_RESULT,
    PICK_CAPTION,
    RAW,
    STATE_TTL_S,
    Context,
    flag,
    friendly,
    gpu,
    image_slot,
    index,
    output,
    picture,
    stored,
    teach,
    warn,
)
from demo.uploads import image_input

ID = "match"
TITLE = "Match: one image, many captions"
REFUSALS = {
    "match": IMAGE_REFUSED,
    "match_submit": IMAGE_REFUSED,
    "match_example": IMAGE_REFUSED,
    "on_match": IMAGE_REFUSED,  # an example click runs the handler under its own name
    "explain_caption": "Pick one of the listed captions (after running Match).",
    "explain_word": "Pick one of the listed captions and one of its words (after running Match).",
    "choose_word": "Pick one of the listed captions and one of its words (after running Match).",
    "show_words": "Run Match first.",
}
TABLE_WIDTHS = ["8%", "52%", "10%", "10%", "10%", "10%"]


@dataclass
class MatchUI:
    image: gr.Image
    captions: gr.Textbox
    button: gr.Button
    examples_slot: gr.Column
    notices: gr.Markdown
    table: gr.Dataframe
    chart: gr.Image
    regions: gr.Image
    caption_sel: gr.Dropdown
    steps: steps.StepsUI
    state: gr.State

    def outputs(self) -> list[Any]:
        """What a new request fills: notices, the :data:`demo.views.MATCH_VIEWS`, the state."""
        first = [self.table, self.chart, self.regions, self.caption_sel]
        return [self.notices, *first, *self.steps.outputs(), self.state]


def lookup(result: Any, m: Any) -> tuple[Any, Any]:
    """The stored result's image and caption ``m``'s explanation (InputError otherwise)."""
    result = stored(result, MatchResult, NO_RESULT)
    m = index(m, len(result.captions), PICK_CAPTION)
    expl = result.explanations[m]
    if expl is None:
        raise InputError("Explain this caption first (pick it in the list of captions).")
    return result.image, expl


def make_on_match(ctx: Context):
    """The handler of a new request: ``(image, captions[, all words]) → outputs()``."""

    @gpu
    @friendly("matching the captions")
    def on_match(image: Any, captions: Any, show_all: Any = False) -> tuple:
        result = ctx.pipeline.match(image_input(image, ctx.roots), captions)
        notes = warn(result.notices)
        v = views.match_views(result, all_words=flag(show_all))
        return (notes, *(output(v[name]) for name in views.MATCH_VIEWS), result)

    return on_match


def render(ctx: Context) -> MatchUI:
    gr.Markdown(texts.MATCH_HOWTO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            image = image_slot("match-image")
            captions = gr.Textbox(
                label=f"Captions — one per line, at most {MAX_CAPTIONS}",
                lines=3,
                max_lines=6,
                placeholder="a red circle left of a blue square\na green triangle",
                elem_id="match-captions",
            )
            button = gr.Button("Match", variant="primary", elem_id="match-btn")
            examples_slot = gr.Column(elem_classes=["compact-examples"])
        with gr.Column(scale=3, min_width=300):
            notices = gr.Markdown(elem_id="match-notices")
            table = gr.Dataframe(
                headers=views.TABLE_HEADERS,
                label="Ranking (best first) — unknown words end in ?",
                interactive=False,
                wrap=True,
                column_widths=TABLE_WIDTHS,
                max_height=300,
                elem_id="ranking",
            )
            chart = picture("Scores", "scores-chart")
            teach(texts.RANKING, "How to read the ranking")
    with gr.Accordion(
        "What the model sees: the detected regions", open=False, elem_id="regions-box"
    ):
        regions = picture("Detected regions", "regions")
        gr.Markdown(texts.REGIONS, elem_classes=["teach"])
    caption_sel = gr.Dropdown(
        label="Explain this caption (the step views below follow it)",
        choices=[],
        interactive=True,
        elem_id="caption-select",
    )
    step_ui = steps.render()
    # per-session result (image, regions, explanations): never a module global
    state = gr.State(None, time_to_live=STATE_TTL_S)
    ui = MatchUI(
        image, captions, button, examples_slot, notices, table, chart, regions, caption_sel,
        step_ui, state,
    )  # fmt: skip
    if ctx.examples:
        with examples_slot:
            gr.Examples(
                examples=[[ex.image, "\n".join(ex.all_captions)] for ex in ctx.examples],
                inputs=[image, captions],
                outputs=ui.outputs(),
                fn=make_on_match(ctx),
                run_on_click=True,
                cache_examples=False,
                label="Examples (click one): its true captions + a hard negative, the last line",
                examples_per_page=12,
                visible_columns=[0],  # the pictures only: compact; the captions fill the box
                api_name="match_example",
                elem_id="match-examples",
            )
    return ui


def example_label(i: int, ex: Any) -> str:
    """A short button text for an example: its number and first caption."""
    first = ex.captions[0] if ex.captions else "(no caption)"
    return f"{i + 1} · {draw.shorten(first, 38)}"


def listen(ctx: Context, ui: MatchUI, tabs: dict[str, Any]) -> None:
    on_match = make_on_match(ctx)

    @gpu
    @friendly("explaining the caption")
    def on_caption(result: Any, m: Any, show_all: Any) -> tuple:
        result = stored(result, MatchResult, NO_RESULT)
        m = index(m, len(result.captions), PICK_CAPTION)
        ctx.pipeline.explain(result, m)  # SHAN on the stored regions; no new detection
        v = views.caption_views(result, m, all_words=flag(show_all))
        return (*(output(v[name]) for name in views.STEP_VIEWS), result)

    inputs = [ui.image, ui.captions, ui.steps.words_mode]  # the State is no API parameter
    event = dict(fn=on_match, inputs=inputs, outputs=ui.outputs(), **RAW)
    ui.button.click(**event, api_name="match")
    ui.captions.submit(**event, api_name="match_submit")
    ui.caption_sel.input(
        on_caption,
        inputs=[ui.state, ui.caption_sel, ui.steps.words_mode],
        outputs=[*ui.steps.outputs(), ui.state],
        api_name="explain_caption",
        **RAW,
    )
    steps.listen(ui.steps, ui.state, ui.caption_sel, lookup)


__all__ = ["ID", "MatchUI", "REFUSALS", "TITLE", "listen", "lookup", "render"]
