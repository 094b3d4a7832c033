"""Build a valid scene from a small spec (the app's scene builder) and read a scene back as one.

A spec is up to five objects — shape, colour, size, pattern, and a position given either as the
centre ``x, y`` in ``[0, 1]`` (left→right, top→bottom) or as a cell of the 3 × 3 grid (``"top
left"``, ``"center"``, ``"bottom"``, or ``(row, column)`` with 0..2) — plus a background phrase
(``"dark blue noisy"``: optional tone ``dark``/``mid``/``light``, a hue, a texture). Words may be
any of the world's synonyms (``turquoise`` = cyan). The scene is drawn by the same renderer as the
datasets; every rule of the world (contrast, occlusion) is checked, and a spec that breaks one is
refused with a one-line :class:`~shan.toyworld.world.ToyWorldError` saying which.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from shan.toyworld import lexicon as lx
from shan.toyworld.world import (
    BACKGROUND_TEXTURES,
    BACKGROUND_TONES,
    COLOURS,
    IMAGE_SIZE,
    PATTERNS,
    SHAPES,
    SIZE_RANGE,
    SIZES,
    Scene,
    ToyObject,
    ToyWorldError,
    WorldConfig,
    hues_for_tone,
    make_background,
    scene_problems,
    update_layout,
)

MAX_OBJECTS = 5
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "center", "right")
_DEFAULT_CELLS = ("center", "top left", "top right", "bottom left", "bottom right")


@dataclass
class ObjectSpec:
    """One object of a spec; ``x``/``y`` (centre, fractions of the image) win over ``cell``."""

    shape: str
    colour: str
    size: str = "large"
    pattern: str = "solid"
    x: float | None = None
    y: float | None = None
    cell: str | Sequence[int] | None = None


@dataclass
class SceneSpec:
    """A scene to build: objects (drawn in this order, later ones on top) and a background."""

    objects: list[ObjectSpec] = field(default_factory=list)
    background: str | Mapping[str, str] = "light grey plain"
    seed: int = 0
    image_size: int = IMAGE_SIZE


def _lookup(word: str, table: Mapping[str, Sequence[str]], what: str) -> str:
    w = str(word).strip().lower()
    for value, words in table.items():
        if w == value or w in words:
            return value
    raise ToyWorldError(f"unknown {what} {word!r}; choose one of {', '.join(table)}")


def parse_background(spec: str | Mapping[str, str]) -> tuple[str, str, str]:
    """``(texture, tone, hue)`` of a background phrase (``"dark blue noisy"``) or mapping."""
    if isinstance(spec, Mapping):
        texture = _lookup(spec.get("texture", "plain"), lx.BACKGROUND_TEXTURE_WORDS, "texture")
        tone = _lookup(spec.get("tone", "mid"), {t: [] for t in BACKGROUND_TONES}, "tone")
        hue = _lookup(spec.get("hue", "grey"), lx.BACKGROUND_HUE_WORDS, "background colour")
        return texture, tone, hue
    texture, tone, hue = "plain", "mid", "grey"
    for word in str(spec).lower().replace("background", " ").split():
        if word in BACKGROUND_TONES:
            tone = word
        elif any(word == h or word in ws for h, ws in lx.BACKGROUND_HUE_WORDS.items()):
            hue = _lookup(word, lx.BACKGROUND_HUE_WORDS, "background colour")
        elif any(word == t or word in ws for t, ws in lx.BACKGROUND_TEXTURE_WORDS.items()):
            texture = _lookup(word, lx.BACKGROUND_TEXTURE_WORDS, "texture")
        else:
            raise ToyWorldError(
                f"unknown background word {word!r}; use a tone ({', '.join(BACKGROUND_TONES)}), "
                f"a colour ({', '.join(lx.BACKGROUND_HUE_WORDS)}) and a texture "
                f"({', '.join(BACKGROUND_TEXTURES)})"
            )
    return texture, tone, hue


def _cell_centre(cell: str | Sequence[int]) -> tuple[float, float]:
    if isinstance(cell, str):
        words = cell.lower().replace("centre", "center").split()
        row = next((w for w in words if w in _ROWS), "middle")
        col = next((w for w in words if w in _COLS), "center")
        if not words or any(w not in _ROWS + _COLS + ("corner",) for w in words):
            raise ToyWorldError(f"unknown cell {cell!r}; e.g. 'top left', 'center', 'bottom'")
        r, c = _ROWS.index(row), _COLS.index(col)
    else:
        try:
            r, c = (int(v) for v in cell)
        except (TypeError, ValueError) as e:
            raise ToyWorldError(f"a cell is a phrase or (row, column), got {cell!r}") from e
        if not (0 <= r <= 2 and 0 <= c <= 2):
            raise ToyWorldError(f"cell (row, column) wants values 0..2, got {cell!r}")
    return (c + 0.5) / 3, (r + 0.5) / 3


def _as_spec(spec: SceneSpec | Mapping[str, Any]) -> SceneSpec:
    if isinstance(spec, SceneSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise ToyWorldError(f"a scene spec is a SceneSpec or a mapping, got {type(spec).__name__}")
    known = {f.name for f in fields(SceneSpec)}
    unknown = set(spec) - known
    if unknown:
        raise ToyWorldError(f"unknown scene spec fields: {', '.join(sorted(unknown))}")
    objs = []
    okeys = {f.name for f in fields(ObjectSpec)}
    for o in spec.get("objects", []):
        if isinstance(o, ObjectSpec):
            objs.append(o)
            continue
        if not isinstance(o, Mapping) or not {"shape", "colour"} <= set(o) or set(o) - okeys:
            raise ToyWorldError(f"an object spec needs shape and colour (and only {okeys}): {o!r}")
        objs.append(ObjectSpec(**o))
    return SceneSpec(
        objs,
        spec.get("background", "light grey plain"),
        int(spec.get("seed", 0)),
        int(spec.get("image_size", IMAGE_SIZE)),
    )


def build_scene(spec: SceneSpec | Mapping[str, Any], config: WorldConfig | None = None) -> Scene:
    """A valid :class:`Scene` from ``spec`` (render it with :func:`render_scene`, caption it with
    :func:`shan.toyworld.dataset.annotate_scene`). Object colours are the exact named colours."""
    s = _as_spec(spec)
    cfg = config or WorldConfig(image_size=s.image_size)
    size = s.image_size
    if not 32 <= size <= 2048:
        raise ToyWorldError(f"image_size must be in 32..2048, got {size}")
    if not 1 <= len(s.objects) <= MAX_OBJECTS:
        raise ToyWorldError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(s.objects)}")
    texture, tone, hue = parse_background(s.background)
    if hue not in hues_for_tone(tone):
        raise ToyWorldError(
            f"there is no {tone} {hue} background; {tone} colours: {', '.join(hues_for_tone(tone))}"
        )
    rng = random.Random(s.seed)
    scene = Scene(s.seed, make_background(texture, tone, hue, rng, size), [], size)
    for k, o in enumerate(s.objects):
        shape = _lookup(o.shape, lx.SHAPE_WORDS, "shape")
        colour = _lookup(o.colour, lx.COLOUR_WORDS, "colour")
        obj_size = _lookup(o.size, lx.SIZE_WORDS, "size")
        pattern = _lookup(o.pattern, lx.PATTERN_WORDS, "pattern")
        if o.x is not None or o.y is not None:
            try:
                x, y = (
                    float(o.x if o.x is not None else 0.5),
                    float(o.y if o.y is not None else 0.5),
                )
            except (TypeError, ValueError) as e:
                raise ToyWorldError(f"object {k}: x and y are numbers in [0, 1]") from e
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ToyWorldError(f"object {k}: x and y must be in [0, 1], got ({x}, {y})")
        else:
            x, y = _cell_centre(o.cell if o.cell is not None else _DEFAULT_CELLS[k])
        lo, hi = SIZE_RANGE[obj_size]
        side = max(8, round((lo + hi) / 2 * size / IMAGE_SIZE))
        x1 = min(max(0, round(x * size - side / 2)), size - side)
        y1 = min(max(0, round(y * size - side / 2)), size - side)
        scene.objects.append(
            ToyObject(
                shape,
                colour,
                obj_size,
                pattern,
                [0.0] * 4,
                [x1, y1, x1 + side, y1 + side],
                list(COLOURS[colour]),
                rng.getrandbits(31),
            )  # fmt: skip
        )
    update_layout(scene)
    problems = scene_problems(scene, cfg)
    if problems:
        raise ToyWorldError(f"this scene breaks the world's rules: {'; '.join(problems)}")
    return scene


def spec_of_scene(scene: Scene) -> SceneSpec:
    """The spec of a scene: objects with their frame centres, the background phrase."""
    size = scene.image_size
    objs = []
    for o in scene.objects:
        x1, y1, x2, y2 = o.frame
        objs.append(
            ObjectSpec(
                o.shape, o.colour, o.size, o.pattern, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size
            )  # fmt: skip
        )
    bg = scene.background
    return SceneSpec(objs, f"{bg.tone} {bg.hue} {bg.texture}", scene.seed, size)


def spec_choices() -> dict[str, list[str]]:
    """What a spec may say: values of every field (for the app's menus)."""
    return {
        "shape": list(SHAPES),
        "colour": list(COLOURS),
        "size": list(SIZES),
        "pattern": list(PATTERNS),
        "cell": [f"{r} {c}".replace("middle center", "center") for r in _ROWS for c in _COLS],
        "background_tone": list(BACKGROUND_TONES),
        "background_hue": list(lx.BACKGROUND_HUE_WORDS),
        "background_texture": list(BACKGROUND_TEXTURES),
    }


__all__ = [
    "MAX_OBJECTS",
    "ObjectSpec",
    "SceneSpec",
    "build_scene",
    "spec_of_scene",
    "spec_choices",
    "parse_background",
]
