"""About: how the demo works, and what the loaded model knows — from its card, not hard-coded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from demo import texts, views
from demo.tabs.common import Context

ID = "about"
TITLE = "About"
REFUSALS: dict[str, str] = {}


@dataclass
class AboutUI:
    facts: gr.Markdown


def render(ctx: Context) -> AboutUI:
    card = ctx.card
    gr.Markdown("### The loaded model")
    if ctx.pipeline.description:
        here = f"{Path.cwd()}{os.sep}"  # paths below the working directory: shown relative
        gr.Markdown(f"<small>{ctx.pipeline.description.replace(here, '')}</small>")
    facts = gr.Markdown(views.card_facts(card), elem_id="about-model")
    if card.text:
        with gr.Accordion("Model card of the loaded checkpoint", open=False):
            gr.Markdown(card.text, elem_id="model-card")
    gr.Markdown(texts.ABOUT)
    return AboutUI(facts)


def listen(ctx: Context, ui: AboutUI, tabs: dict[str, Any]) -> None:
    """No events: About is text."""


__all__ = ["AboutUI", "ID", "REFUSALS", "TITLE", "listen", "render"]
