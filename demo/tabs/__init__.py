"""The app's tabs, one module each, in the order they appear (:data:`TABS`).

Every module has ``ID``, ``TITLE``, ``REFUSALS`` (event ``api_name`` → the message shown when
Gradio cannot read that event's inputs), ``render(ctx) -> UI`` and ``listen(ctx, ui, tabs)`` —
the pattern of facefusion's ``uis/components``, but with per-user ``gr.State`` instead of module
globals. :func:`demo.ui.build_demo` renders them all, then lets each listen.
"""

from __future__ import annotations

from demo.tabs import about, compare, match, scene, search

TABS = (match, compare, scene, search, about)

__all__ = ["TABS"]
