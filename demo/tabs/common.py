"""What every tab shares: the context it is built around, error handling, input checks, slots.

A tab module (:mod:`demo.tabs.match`, ...) has ``render(ctx) -> UI`` (lay out its components,
return them in a dataclass) and ``listen(ctx, ui, tabs)`` (wire its events; ``tabs`` holds every
tab's UI, for events that fill another tab). Results live per user in ``gr.State``, never in
module globals, so one process can serve several apps and many users.

Handlers turn user mistakes (:class:`demo.pipeline.InputError`, any
:class:`shan.errors.ShanError`) into a ``gr.Error`` with the message, and any other exception into
a short ``gr.Error`` while the traceback goes to the server log (:func:`friendly`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from demo.card import ModelCard
from demo.pipeline import DemoPipeline, Example, InputError
from demo.uploads import MAX_UPLOAD_TEXT
from demo.views import Choices
from shan.errors import ShanError

log = logging.getLogger(__name__)

try:  # Hugging Face ZeroGPU: a GPU is attached only inside functions decorated with spaces.GPU
    import spaces  # type: ignore[import-not-found]

    gpu: Callable[[Callable], Callable] = spaces.GPU
except ImportError:  # anywhere else: a no-op

    def gpu(fn: Callable) -> Callable:
        return fn


STATE_TTL_S = 3600  # a session's stored result is dropped after an hour without use
#: events read their raw inputs (demo.uploads checks files, index() choices): Gradio opens nothing
RAW = {"preprocess": False}

NO_RESULT = "There is no match result in this session yet: run Match first."
NO_SEARCH = "There is no search result in this session yet: run Search first."
PICK_CAPTION = "Pick one of the listed captions."
PICK_WORD = "Pick one of the caption's words."
PICK_IMAGE = "Pick one of the ranked images."
IMAGE_REFUSED = (
    f"The image could not be used; please upload a PNG or JPEG file (at most {MAX_UPLOAD_TEXT})."
)
FILES_REFUSED = (
    f"The files could not be used; please upload PNG or JPEG images (at most {MAX_UPLOAD_TEXT} "
    "each)."
)


@dataclass
class Context:
    """What a tab is built around: the loaded pipeline, the examples, the folders files may come
    from (:func:`demo.uploads.upload_roots`)."""

    pipeline: DemoPipeline
    examples: Sequence[Example] = ()
    roots: tuple[Path, ...] = ()

    @property
    def card(self) -> ModelCard:
        return getattr(self.pipeline, "card", None) or ModelCard()


def friendly(action: str) -> Callable[[Callable], Callable]:
    """Decorate a handler: InputError / ShanError → gr.Error(message); anything else → a short
    gr.Error, the traceback in the log."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except (InputError, ShanError) as err:
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


def stored(value: Any, cls: type, message: str) -> Any:
    """The session's stored result if it is a ``cls``, else an :class:`InputError`."""
    if not isinstance(value, cls):
        raise InputError(message)
    return value


def index(value: Any, n: int, message: str) -> int:
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


def flag(value: Any) -> bool:
    """A checkbox's raw value as a bool (anything but ``True`` is off)."""
    return value is True


def event_index(evt: Any) -> Any:
    """The index a ``select`` event carries, or None (an API call without event data)."""
    data = getattr(evt, "_data", None)
    return data.get("index") if isinstance(data, dict) else None


def warn(notices: Sequence[str]) -> str:
    """Show notices as toasts and return them as Markdown for the page."""
    for note in notices:
        gr.Warning(note, duration=8)
    return "\n".join(f"⚠️ {n}" for n in notices)


def choices(c: Choices) -> dict:
    """A :class:`demo.views.Choices` as a component update."""
    return gr.update(choices=c.choices, value=c.value)


def picture(label: str, elem_id: str, **kwargs: Any) -> gr.Image:
    """An output-only image slot; its figure carries its own title, so the label stays hidden."""
    kwargs.setdefault("show_label", False)
    return gr.Image(label=label, elem_id=elem_id, interactive=False, **kwargs)


def image_slot(elem_id: str, height: int = 260) -> gr.Image:
    """An image input: upload or paste, read by the handler itself (``preprocess=False``)."""
    return gr.Image(
        label="Image",
        type="filepath",
        image_mode=None,
        sources=["upload", "clipboard"],
        height=height,
        elem_id=elem_id,
    )


def teach(text: str, title: str = "How to read this", open: bool = False) -> None:
    """A fixed teaching text in a collapsed accordion (the pictures stay in view)."""
    with gr.Accordion(title, open=open, elem_classes=["teach-box"]):
        gr.Markdown(text, elem_classes=["teach"])


def output(view: Any) -> Any:
    """A view's value as a component value (Choices → an update, the rest as it is)."""
    return choices(view) if isinstance(view, Choices) else view


__all__ = [
    "Context",
    "FILES_REFUSED",
    "IMAGE_REFUSED",
    "NO_RESULT",
    "NO_SEARCH",
    "PICK_CAPTION",
    "PICK_IMAGE",
    "PICK_WORD",
    "RAW",
    "STATE_TTL_S",
    "choices",
    "event_index",
    "flag",
    "friendly",
    "gpu",
    "image_slot",
    "index",
    "output",
    "picture",
    "stored",
    "teach",
    "warn",
]
