"""The scene builder's work, without any UI: menu values → a toy-world scene, its picture and its
captions; the mirror of a scene; the loaded model's vocabulary by role.

Scenes are built and drawn by the toy world itself (:func:`shan.toyworld.build_scene`,
:func:`shan.toyworld.render_scene`), so a scene made here looks like the ones the shipped model
was trained on, and the toy world's own grammar captions it (:func:`shan.toyworld.annotate_scene`:
true captions, typed negatives checked false by its truth evaluator). A spec that breaks a rule
of the world (too little contrast, an object hidden by another) is refused with the world's
one-line :class:`shan.toyworld.ToyWorldError`. No Gradio here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from shan.toyworld import (
    ObjectSpec,
    SceneSpec,
    ToyWorldError,
    annotate_scene,
    build_scene,
    render_scene,
    spec_choices,
    vocabulary_by_role,
)
from shan.toyworld.builder import MAX_OBJECTS

#: the objects a new page starts with: (on, shape, colour, size, pattern, cell)
DEFAULT_OBJECTS = (
    (True, "circle", "red", "large", "solid", "middle left"),
    (True, "square", "blue", "large", "striped", "middle right"),
    (False, "triangle", "green", "small", "solid", "top center"),
    (False, "star", "yellow", "small", "dotted", "bottom left"),
    (False, "heart", "purple", "small", "solid", "bottom right"),
)
DEFAULT_BACKGROUND = ("light", "grey", "plain")  # tone, hue, texture
OBJECT_FIELDS = ("on", "shape", "colour", "size", "pattern", "cell")
ROLE_NAMES = {
    "shape": "shapes",
    "colour": "colours",
    "size": "sizes",
    "pattern": "patterns",
    "noun": "other nouns",
    "det": "articles",
    "count": "numbers",
    "relation": "relations",
    "position": "positions",
    "background": "backgrounds",
    "scene": "scene words",
    "": "function words",
}
_MIRROR = {"left": "right", "right": "left"}


def choices() -> dict[str, list[str]]:
    """The menus' values (:func:`shan.toyworld.spec_choices`)."""
    return spec_choices()


def scene_spec(
    objects: Sequence[Sequence[Any]], background: Sequence[str], seed: int = 0
) -> SceneSpec:
    """A spec from the menus: ``objects`` rows ``(on, shape, colour, size, pattern, cell)`` (rows
    that are off are left out), ``background`` = ``(tone, hue, texture)``.

    Raises:
        ToyWorldError: no object switched on, or more than the world allows.
    """
    objs = []
    for row in objects:
        if len(row) != len(OBJECT_FIELDS):
            raise ToyWorldError(f"an object row has {len(OBJECT_FIELDS)} fields: {OBJECT_FIELDS}")
        on, shape, colour, size, pattern, cell = row
        if on is True:
            objs.append(ObjectSpec(str(shape), str(colour), str(size), str(pattern), cell=cell))
    if not objs:
        raise ToyWorldError("Switch on at least one object.")
    if len(objs) > MAX_OBJECTS:
        raise ToyWorldError(f"a scene has at most {MAX_OBJECTS} objects")
    tone, hue, texture = (str(v) for v in background)
    return SceneSpec(objs, {"tone": tone, "hue": hue, "texture": texture}, seed)


@dataclass
class Drawing:
    """A built scene: its picture, the toy world's true captions of it, and its hard negative
    (two colours swapped, checked false) when the grammar made one."""

    image: Image.Image
    captions: list[str]
    hard_negative: str | None = None
    negatives: list[dict[str, str]] = field(default_factory=list)

    @property
    def match_text(self) -> str:
        """The captions for the Match tab: the true ones, then the hard negative."""
        return "\n".join(self.captions + ([self.hard_negative] if self.hard_negative else []))


def draw(spec: SceneSpec) -> Drawing:
    """Build, draw and caption a scene.

    Raises:
        ToyWorldError: the spec breaks a rule of the world (the message says which).
    """
    scene = build_scene(spec)
    image = render_scene(scene)
    annotate_scene(scene)
    captions = [c.text for c in scene.captions]
    hard = (scene.hard_negative or {}).get("text")
    negatives = [n for per in scene.negatives[:1] for n in per]
    return Drawing(image, captions, hard, negatives)


def mirror_cells(cells: Sequence[Any]) -> list[Any]:
    """Each grid cell with left and right exchanged (``"top left"`` → ``"top right"``)."""
    out = []
    for cell in cells:
        if isinstance(cell, str):
            out.append(" ".join(_MIRROR.get(w, w) for w in cell.split()))
        else:
            out.append(cell)
    return out


def vocabulary_markdown(model_words: Sequence[str] | None) -> str:
    """The words of the toy world by role, each marked known or not by the loaded model, and the
    model's other words (Markdown)."""
    roles = vocabulary_by_role("full")
    if model_words is None:
        return (
            "The loaded model reads word pieces (a transformer tokenizer): every word is split "
            "into pieces it knows, so no word is unknown — but a piece it never saw in training "
            "means little to it.\n\n"
            + "\n".join(f"- **{ROLE_NAMES.get(r, r)}**: {', '.join(ws)}" for r, ws in roles.items())
        )
    known = set(model_words)
    lines = [
        "Words of the toy world by role. **Bold**: the loaded model knows the word; "
        "~~struck~~: it does not (read as *unknown*, the same for every unknown word)."
    ]
    world: set[str] = set()
    for role, words in roles.items():
        world.update(words)
        marked = ", ".join(f"**{w}**" if w in known else f"~~{w}~~" for w in words)
        n = sum(w in known for w in words)
        lines.append(f"- {ROLE_NAMES.get(role, role)} ({n} of {len(words)} known): {marked}")
    other = sorted(known - world)
    if other:
        lines.append(f"- words the model knows from elsewhere ({len(other)}): {', '.join(other)}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_OBJECTS",
    "Drawing",
    "OBJECT_FIELDS",
    "choices",
    "draw",
    "mirror_cells",
    "scene_spec",
    "vocabulary_markdown",
]
