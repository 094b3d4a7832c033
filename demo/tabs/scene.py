"""Build a scene: up to five objects (shape, colour, size, pattern, place on a 3 × 3 grid) and a
background, drawn by the toy world's own renderer and captioned by its grammar — a scene and its
mirror without a drawing program — then sent to Match or Compare. The loaded model's vocabulary
is listed by role, each word marked known or not.

Events: ``scene_draw``, ``scene_mirror`` (left ↔ right, then drawn), ``scene_to_match`` and
``scene_to_compare`` (fill that tab with the scene and its captions, switch to it and run it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo import scene, texts
from demo.pipeline import InputError
from demo.tabs import compare as compare_tab
from demo.tabs import match as match_tab
from demo.tabs.common import (
    IMAGE_REFUSED,
    RAW,
    STATE_TTL_S,
    Context,
    friendly,
    stored,
    teach,
)

ID = "scene"
TITLE = "Build a scene"
REFUSALS = {
    "scene_draw": "Choose a shape, colour, size, pattern and place for each object.",
    "scene_mirror": "Choose a place for each object.",
    "scene_to_match": "Draw a scene first.",
    "scene_to_compare": "Draw a scene first.",
    "scene_mirror_draw": "Choose a shape, colour, size, pattern and place for each object.",
    "scene_match": IMAGE_REFUSED,
    "scene_compare": IMAGE_REFUSED,
}
NO_DRAWING = "Draw a scene first (press Draw)."


@dataclass
class SceneUI:
    rows: list[list[Any]]  # per object: on, shape, colour, size, pattern, cell
    background: list[gr.Dropdown]  # tone, hue, texture
    draw: gr.Button
    mirror: gr.Button
    image: gr.Image
    captions: gr.Markdown
    to_match: gr.Button
    to_compare: gr.Button
    vocabulary: gr.Markdown
    state: gr.State

    def inputs(self) -> list[Any]:
        return [c for row in self.rows for c in row] + list(self.background)

    def cells(self) -> list[Any]:
        return [row[-1] for row in self.rows]


def _drawing(values: tuple) -> scene.Drawing:
    n = len(scene.OBJECT_FIELDS)
    rows = [values[i : i + n] for i in range(0, n * len(scene.DEFAULT_OBJECTS), n)]
    background = values[n * len(scene.DEFAULT_OBJECTS) :]
    return scene.draw(scene.scene_spec(rows, background))


def captions_markdown(drawing: scene.Drawing) -> str:
    """The toy world's captions of the scene (and its hard negative), for the page."""
    lines = ["**True captions** (from the toy world's grammar):"]
    lines += [f"{i + 1}. {c}" for i, c in enumerate(drawing.captions)]
    if drawing.hard_negative:
        lines.append(
            f"\n**Hard negative** (two colours swapped, false here): {drawing.hard_negative}"
        )
    return "\n".join(lines)


def render(ctx: Context) -> SceneUI:
    gr.Markdown(texts.SCENE_HOWTO)
    menus = scene.choices()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            rows = []
            for k, values in enumerate(scene.DEFAULT_OBJECTS):
                with gr.Row(equal_height=True, elem_classes=["scene-object"]):
                    row: list[Any] = [
                        gr.Checkbox(
                            value=values[0], label=f"object {k + 1}", min_width=90,
                            elem_id=f"scene-on-{k}",
                        )
                    ]  # fmt: skip
                    for field, value in zip(scene.OBJECT_FIELDS[1:], values[1:]):
                        menu = "cell" if field == "cell" else field
                        row.append(
                            gr.Dropdown(
                                menus[menu],
                                value=value,
                                label="place" if field == "cell" else field,
                                min_width=130 if field == "cell" else 95,
                                scale=2 if field == "cell" else 1,
                                elem_id=f"scene-{field}-{k}",
                            )
                        )
                    rows.append(row)
            with gr.Row():
                background = [
                    gr.Dropdown(menus[f"background_{key}"], value=value, label=f"background {key}",
                                elem_id=f"scene-bg-{key}")
                    for key, value in zip(("tone", "hue", "texture"), scene.DEFAULT_BACKGROUND)
                ]  # fmt: skip
            with gr.Row():
                draw = gr.Button("Draw", variant="primary", elem_id="scene-draw")
                mirror = gr.Button("Mirror left ↔ right", elem_id="scene-mirror")
        with gr.Column(scale=2, min_width=280):
            image = gr.Image(
                label="The scene (drawn by the toy world's renderer)",
                type="pil",
                interactive=False,
                height=300,
                elem_id="scene-image",
            )
            with gr.Row():
                to_match = gr.Button("Match these captions", elem_id="scene-to-match")
                to_compare = gr.Button("Compare with its hard negative", elem_id="scene-to-compare")
            captions = gr.Markdown(elem_id="scene-captions")
    with gr.Accordion("The loaded model's vocabulary", open=False, elem_id="scene-vocabulary"):
        vocabulary = gr.Markdown(scene.vocabulary_markdown(ctx.pipeline.vocabulary()))
    teach(texts.SCENE_READ, "Ideas for experiments")
    state = gr.State(None, time_to_live=STATE_TTL_S)
    return SceneUI(
        rows, background, draw, mirror, image, captions, to_match, to_compare, vocabulary, state
    )


def listen(ctx: Context, ui: SceneUI, tabs: dict[str, Any]) -> None:
    @friendly("drawing the scene")
    def on_draw(*values: Any) -> tuple:
        drawing = _drawing(values)
        return drawing.image, captions_markdown(drawing), drawing

    places = set(scene.choices()["cell"])

    @friendly("mirroring the scene")
    def on_mirror(*cells: Any) -> list:
        if not all(isinstance(c, str) and c in places for c in cells):  # API calls included
            raise InputError(REFUSALS["scene_mirror"])
        return scene.mirror_cells(cells)

    @friendly("sending the scene")
    def on_to_match(drawing: Any) -> tuple:
        drawing = stored(drawing, scene.Drawing, NO_DRAWING)
        return drawing.image, drawing.match_text, gr.Tabs(selected="match")

    @friendly("sending the scene")
    def on_to_compare(drawing: Any) -> tuple:
        drawing = stored(drawing, scene.Drawing, NO_DRAWING)
        other = drawing.hard_negative or next(
            (n["text"] for n in drawing.negatives), drawing.captions[-1]
        )
        return drawing.image, drawing.captions[0], other, gr.Tabs(selected="compare")

    drawn = [ui.image, ui.captions, ui.state]
    ui.draw.click(on_draw, inputs=ui.inputs(), outputs=drawn, api_name="scene_draw", **RAW)
    ui.mirror.click(
        on_mirror, inputs=ui.cells(), outputs=ui.cells(), api_name="scene_mirror", **RAW
    ).then(
        on_draw,
        inputs=ui.inputs(),
        outputs=drawn,
        api_name="scene_mirror_draw",
        api_visibility="undocumented",
        **RAW,
    )
    match, compare, switch = tabs["match"], tabs["compare"], tabs["tabs"]
    ui.to_match.click(
        on_to_match,
        inputs=[ui.state],
        outputs=[match.image, match.captions, switch],
        api_name="scene_to_match",
        **RAW,
    ).then(
        match_tab.make_on_match(ctx),
        inputs=[match.image, match.captions, match.steps.words_mode],
        outputs=match.outputs(),
        api_name="scene_match",
        api_visibility="undocumented",
        **RAW,
    )
    ui.to_compare.click(
        on_to_compare,
        inputs=[ui.state],
        outputs=[compare.image, compare.caption_a, compare.caption_b, switch],
        api_name="scene_to_compare",
        **RAW,
    ).then(
        compare_tab.make_on_compare(ctx),
        inputs=[compare.image, compare.caption_a, compare.caption_b],
        outputs=compare.outputs(),
        api_name="scene_compare",
        api_visibility="undocumented",
        **RAW,
    )


__all__ = ["ID", "REFUSALS", "SceneUI", "TITLE", "captions_markdown", "listen", "render"]
