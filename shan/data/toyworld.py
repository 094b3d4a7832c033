"""The toy world: synthetic scenes of coloured shapes with grounded captions and hard negatives.

No real dataset or pretrained detector is available offline, so the shipped model is trained on a
world we build ourselves. Every image is drawn with PIL from its own seed (so any image can be
regenerated from ``(seed, split, index)``), and its ground truth is complete: object boxes, shape,
colour, size and pattern, and for every caption which token positions refer to which object.

Scenes: ``IMAGE_SIZE`` × ``IMAGE_SIZE`` RGB, 1–5 objects, 8 shapes, 8 colours with clearly distinct
hues, 2 sizes, 3 fill patterns, 3 background styles, pairwise box IoU at most ``MAX_IOU``.

Captions: 5 per image from a small grammar (lists, counts, spatial relations, positions,
backgrounds, synonyms). Captions contain no punctuation, so :func:`shan.data.vocab.tokenize`
returns exactly the generator's tokens and token positions line up with the model's words.

Hard negatives: for images with two objects of different colours *and* shapes, caption 0 with the
colour words of those two objects swapped (checked to describe a scene that is not this one).

CLI::

    python -m shan.data.toyworld --seed 0 --split-sizes 10000,1000,1000 --out data/toyworld

writes ``<out>/<split>/images/*.png`` and ``<out>/<split>/annotations.json`` for train/dev/test.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from shan.errors import ShanError

IMAGE_SIZE = 256
MAX_IOU = 0.1
SPLITS = ("train", "dev", "test")
_SPLIT_IDS = {"train": 0, "dev": 1, "test": 2}

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")
# Base RGB per colour: hues spaced around the wheel, all saturated so they stand out from the pale
# neutral backgrounds. A small per-object jitter is added when drawing.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 0),
    "yellow": (235, 215, 0),
    "green": (30, 160, 40),
    "cyan": (0, 190, 210),
    "blue": (30, 60, 220),
    "purple": (130, 40, 180),
    "pink": (250, 110, 190),
}
SIZES = ("small", "large")
SIZE_RANGE = {"small": (24, 38), "large": (54, 80)}  # box side in pixels (before aspect jitter)
PATTERNS = ("solid", "striped", "dotted")
BACKGROUNDS = ("plain", "gradient", "noise")
NUM_OBJECTS_P = {1: 0.1, 2: 0.2, 3: 0.25, 4: 0.25, 5: 0.2}

# Words of the caption grammar (synonyms). Everything is lower-case and free of punctuation.
SHAPE_WORDS = {
    "circle": ["circle", "circle", "disc"],
    "square": ["square"],
    "triangle": ["triangle"],
    "star": ["star"],
    "diamond": ["diamond", "diamond", "rhombus"],
    "hexagon": ["hexagon"],
    "cross": ["cross"],
    "heart": ["heart"],
}
PLURALS = {"cross": "crosses", "rhombus": "rhombuses"}
COLOUR_WORDS = {
    "red": ["red"],
    "orange": ["orange"],
    "yellow": ["yellow"],
    "green": ["green"],
    "cyan": ["cyan", "cyan", "turquoise"],
    "blue": ["blue"],
    "purple": ["purple", "purple", "violet"],
    "pink": ["pink"],
}
SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "large": ["large", "large", "big"]}
PATTERN_WORDS = {
    "solid": ["solid", "filled"],
    "striped": ["striped", "stripy"],
    "dotted": ["dotted", "spotted"],
}
BACKGROUND_WORDS = {
    "plain": ["plain", "uniform"],
    "gradient": ["gradient", "fading"],
    "noise": ["noisy", "grainy"],
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
FRAMES = ["", "", "there is", "we can see", "this picture shows", "an image with", "a scene with"]
CONNECTIVES = ["and", "and", "and", "plus", "as well as", "along with"]
RELATION_WORDS = {
    "left": [["to", "the", "left", "of"], ["left", "of"]],
    "right": [["to", "the", "right", "of"], ["right", "of"]],
    "above": [["above"], ["over"]],
    "below": [["below"], ["under"], ["beneath"]],
}
NON_ROLE = ""


class ToyWorldError(ShanError, ValueError):
    """Bad arguments or a malformed toy-world annotation file."""


@dataclass
class ToyObject:
    """One drawn object. ``box`` is the tight ``[x1, y1, x2, y2]`` of its visible pixels."""

    shape: str
    colour: str
    size: str
    pattern: str
    box: list[float]


@dataclass
class Caption:
    """A caption with per-token grounding.

    ``tokens[j]`` is the j-th token of ``tokenize(text)``; ``token_objects[j]`` lists the indices of
    the objects the token refers to (empty for function words); ``token_roles[j]`` is one of
    ``shape``, ``colour``, ``size``, ``pattern``, ``det``, ``count``, ``position`` or ``""``.
    """

    text: str
    tokens: list[str]
    token_objects: list[list[int]]
    token_roles: list[str]
    template: str = ""


@dataclass
class Scene:
    """One toy-world image's ground truth (everything needed to redraw it and its captions)."""

    seed: int
    background: str
    bg_colours: list[list[int]]
    objects: list[ToyObject]
    object_rgb: list[list[int]]
    image_size: int = IMAGE_SIZE
    captions: list[Caption] = field(default_factory=list)
    hard_negative: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def image_seed(seed: int, split: str, index: int) -> int:
    """The seed of image ``index`` of ``split`` (stable across runs, platforms, worker counts)."""
    if split not in _SPLIT_IDS:
        raise ToyWorldError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    ss = np.random.SeedSequence([int(seed), _SPLIT_IDS[split], int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _polygon(shape: str, w: int, h: int) -> list[tuple[float, float]] | None:
    """Outline of ``shape`` inside a ``w`` × ``h`` box (``None`` = ellipse)."""
    if shape == "circle":
        return None
    if shape == "square":
        return [(0, 0), (w - 1, 0), (w - 1, h - 1), (0, h - 1)]
    if shape == "triangle":
        return [((w - 1) / 2, 0), (w - 1, h - 1), (0, h - 1)]
    if shape == "diamond":
        return [((w - 1) / 2, 0), (w - 1, (h - 1) / 2), ((w - 1) / 2, h - 1), (0, (h - 1) / 2)]
    cx, cy, rx, ry = (w - 1) / 2, (h - 1) / 2, (w - 1) / 2, (h - 1) / 2
    if shape == "hexagon":
        return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.arange(6) * math.pi / 3]
    if shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            r = 1.0 if i % 2 == 0 else 0.42
            pts.append((cx + rx * r * math.cos(a), cy + ry * r * 1.05 * math.sin(a) + 0.05 * ry))
        return pts
    if shape == "cross":
        a, b = (w - 1) / 3, 2 * (w - 1) / 3
        c, d = (h - 1) / 3, 2 * (h - 1) / 3
        return [
            (a, 0),
            (b, 0),
            (b, c),
            (w - 1, c),
            (w - 1, d),
            (b, d),
            (b, h - 1),
            (a, h - 1),
            (a, d),
            (0, d),
            (0, c),
            (a, c),
        ]
    if shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        xs = (xs - xs.min()) / (xs.max() - xs.min()) * (w - 1)
        ys = (ys - ys.min()) / (ys.max() - ys.min()) * (h - 1)
        return list(zip(xs.tolist(), ys.tolist()))
    raise ToyWorldError(f"unknown shape {shape!r}")


def _shape_mask(shape: str, w: int, h: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    poly = _polygon(shape, w, h)
    if poly is None:
        draw.ellipse([0, 0, w - 1, h - 1], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


def _fill(pattern: str, rgb: Sequence[int], w: int, h: int, rng: random.Random) -> Image.Image:
    """The object's texture: its colour, with light stripes or dots for the patterned kinds."""
    img = Image.new("RGB", (w, h), tuple(rgb))
    if pattern == "solid":
        return img
    light = tuple(int(0.45 * c + 0.55 * 255) for c in rgb)
    draw = ImageDraw.Draw(img)
    if pattern == "striped":
        step = rng.choice([6, 7, 8])
        width = max(2, step // 3)
        if rng.random() < 0.5:  # diagonal stripes
            for k in range(-h, w + h, step):
                draw.line([(k, 0), (k + h, h)], fill=light, width=width)
        else:  # horizontal stripes
            for y in range(step // 2, h, step):
                draw.line([(0, y), (w, y)], fill=light, width=width)
    elif pattern == "dotted":
        step = rng.choice([7, 8, 9])
        r = max(1.5, step / 4.5)
        off = rng.randint(0, step - 1)
        for y in range(off % step, h, step):
            for x in range((off + (y // step) * step // 2) % step, w, step):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=light)
    else:
        raise ToyWorldError(f"unknown pattern {pattern!r}")
    return img


def _background(scene: Scene, np_rng: np.random.Generator) -> Image.Image:
    s = scene.image_size
    c0 = np.array(scene.bg_colours[0], dtype=np.float32)
    if scene.background == "plain":
        arr = np.broadcast_to(c0, (s, s, 3)).copy()
    elif scene.background == "gradient":
        c1 = np.array(scene.bg_colours[1], dtype=np.float32)
        t = np.linspace(0.0, 1.0, s, dtype=np.float32)
        ramp = t[:, None] if scene.bg_colours[2][0] == 0 else t[None, :]
        ramp = np.broadcast_to(ramp, (s, s))[..., None]
        arr = c0 * (1 - ramp) + c1 * ramp
    elif scene.background == "noise":
        arr = c0 + np_rng.normal(0.0, 14.0, size=(s, s, 1)).astype(np.float32)
    else:
        raise ToyWorldError(f"unknown background {scene.background!r}")
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pale_colour(rng: random.Random) -> list[int]:
    """A light, low-saturation colour (so object hues stay unambiguous on it)."""
    base = rng.randint(175, 240)
    return [min(255, max(0, base + rng.randint(-14, 14))) for _ in range(3)]


def sample_scene(seed: int, image_size: int = IMAGE_SIZE) -> Scene:
    """Sample the layout of one scene (objects, placement, background) from ``seed``.

    Boxes here are the placement boxes; :func:`render_scene` tightens them to the drawn pixels.
    """
    rng = random.Random(seed)
    n_target = rng.choices(list(NUM_OBJECTS_P), weights=list(NUM_OBJECTS_P.values()))[0]
    background = rng.choice(BACKGROUNDS)
    bg_colours = [_pale_colour(rng), _pale_colour(rng), [rng.randint(0, 1)] * 3]
    objects: list[ToyObject] = []
    rgbs: list[list[int]] = []
    scale = image_size / IMAGE_SIZE
    for _ in range(n_target):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        size, pattern = rng.choice(SIZES), rng.choice(PATTERNS)
        lo, hi = SIZE_RANGE[size]
        for _try in range(60):
            side = rng.uniform(lo, hi) * scale
            aspect = rng.uniform(0.85, 1.18)
            w, h = max(8, round(side * math.sqrt(aspect))), max(8, round(side / math.sqrt(aspect)))
            margin = 3
            if w + 2 * margin >= image_size or h + 2 * margin >= image_size:
                continue
            x1 = rng.randint(margin, image_size - w - margin)
            y1 = rng.randint(margin, image_size - h - margin)
            box = [float(x1), float(y1), float(x1 + w), float(y1 + h)]
            if all(_iou(box, o.box) <= MAX_IOU for o in objects):
                objects.append(ToyObject(shape, colour, size, pattern, box))
                rgbs.append([min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[colour]])
                break
    return Scene(seed, background, bg_colours, objects, rgbs, image_size)


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` (deterministic); tightens every ``object.box`` to its visible pixels."""
    np_rng = np.random.default_rng(scene.seed)
    rng = random.Random(scene.seed + 1)
    img = _background(scene, np_rng)
    masks: list[tuple[Image.Image, int, int]] = []
    for obj, rgb in zip(scene.objects, scene.object_rgb):
        x1, y1, x2, y2 = (int(round(v)) for v in obj.box)
        w, h = x2 - x1, y2 - y1
        mask = _shape_mask(obj.shape, w, h)
        img.paste(_fill(obj.pattern, rgb, w, h, rng), (x1, y1), mask)
        masks.append((mask, x1, y1))
    # Tight boxes of the visible pixels (a later object may hide a sliver of an earlier one).
    s = scene.image_size
    for i, (mask, x1, y1) in enumerate(masks):
        full = Image.new("L", (s, s), 0)
        full.paste(mask, (x1, y1))
        for later, lx, ly in masks[i + 1 :]:
            full.paste(0, (lx, ly), later)
        bbox = full.getbbox()
        if bbox is not None:
            scene.objects[i].box = [float(v) for v in bbox]
    return img


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


class _Builder:
    """Accumulates tokens with their grounding while a caption is composed."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.objects: list[list[int]] = []
        self.roles: list[str] = []

    def words(self, text: str | Sequence[str], objs: Sequence[int] = (), role: str = "") -> None:
        parts = text.split() if isinstance(text, str) else list(text)
        for w in parts:
            self.tokens.append(w)
            self.objects.append(list(objs))
            self.roles.append(role)

    def caption(self, template: str) -> Caption:
        return Caption(" ".join(self.tokens), self.tokens, self.objects, self.roles, template)


def _plural(word: str) -> str:
    return PLURALS.get(word, word + "s")


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _mention(
    b: _Builder,
    scene: Scene,
    group: list[int],
    rng: random.Random,
    p_size: float,
    p_pattern: float,
    colour_override: dict[int, str] | None = None,
    word_choice: dict[tuple[int, str], str] | None = None,
) -> None:
    """Append a noun phrase for ``group`` (same colour and shape), e.g. ``two green squares``.

    ``word_choice`` (filled on first use) records the synonym chosen per (object, role), so a hard
    negative can be rendered with the words of its source caption except the swapped colours.
    """
    objs = [scene.objects[i] for i in group]
    first = objs[0]
    choice = word_choice if word_choice is not None else {}

    def pick(role: str, options: list[str]) -> str:
        key = (group[0], role)
        if key not in choice:
            choice[key] = rng.choice(options)
        return choice[key]

    def decide(role: str, prob: float) -> bool:
        key = (group[0], "use_" + role)
        if key not in choice:
            choice[key] = "y" if rng.random() < prob else "n"
        return choice[key] == "y"

    adjs: list[tuple[str, str]] = []
    if len({o.size for o in objs}) == 1 and decide("size", p_size):
        adjs.append((pick("size", SIZE_WORDS[first.size]), "size"))
    if len({o.pattern for o in objs}) == 1 and decide("pattern", p_pattern):
        adjs.append((pick("pattern", PATTERN_WORDS[first.pattern]), "pattern"))
    if colour_override and group[0] in colour_override:
        adjs.append((COLOUR_WORDS[colour_override[group[0]]][0], "colour"))
    else:
        adjs.append((pick("colour", COLOUR_WORDS[first.colour]), "colour"))
    shape_word = pick("shape", SHAPE_WORDS[first.shape])
    if len(group) == 1:
        b.words(_article(adjs[0][0]), group, "det")
    else:
        b.words(NUMBER_WORDS[len(group)], group, "count")
        shape_word = _plural(shape_word)
    for word, role in adjs:
        b.words(word, group, role)
    b.words(shape_word, group, "shape")


def _groups(scene: Scene, order: Sequence[int], merge: bool) -> list[list[int]]:
    """Objects grouped by identical (colour, shape), in order (singletons unless ``merge``)."""
    if not merge:
        return [[i] for i in order]
    groups: dict[tuple[str, str], list[int]] = {}
    for i in order:
        o = scene.objects[i]
        groups.setdefault((o.colour, o.shape), []).append(i)
    return list(groups.values())


def _list(
    b: _Builder,
    scene: Scene,
    groups: list[list[int]],
    rng: random.Random,
    p_size: float,
    p_pattern: float,
    **kw: Any,
) -> None:
    for gi, g in enumerate(groups):
        if gi > 0:
            b.words(rng.choice(CONNECTIVES))
        _mention(b, scene, g, rng, p_size, p_pattern, **kw)


def _relation(a: ToyObject, other: ToyObject) -> str:
    ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
    bx, by = (other.box[0] + other.box[2]) / 2, (other.box[1] + other.box[3]) / 2
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _position(obj: ToyObject, size: int) -> list[str]:
    cx, cy = (obj.box[0] + obj.box[2]) / 2 / size, (obj.box[1] + obj.box[3]) / 2 / size
    h = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "")
    v = "top" if cy < 1 / 3 else ("bottom" if cy > 2 / 3 else "")
    if not h and not v:
        return ["in", "the", "center"]
    if h and v:
        return ["in", "the", v, h, "corner"]
    return ["at", "the", v] if v else ["on", "the", h]


def _frame(b: _Builder, rng: random.Random, first_plural: bool) -> None:
    frame = rng.choice(FRAMES)
    if frame == "there is" and first_plural:
        frame = "there are"
    b.words(frame)


def make_caption(scene: Scene, rng: random.Random, template: str | None = None) -> Caption:
    """One caption of ``scene`` from ``template`` (random if ``None``); see ``TEMPLATES``."""
    n = len(scene.objects)
    if n == 0:
        raise ToyWorldError("a scene needs at least one object to be captioned")
    order = list(range(n))
    rng.shuffle(order)
    # Single objects are hard to tell apart from other single-object scenes: say more about them.
    p_size, p_pattern = (1.0, 1.0) if n == 1 else (0.35, 0.3)
    if n >= 4 and rng.random() < 0.25:  # omit one object now and then ("most objects")
        order = order[:-1]
    if template is None:
        options = ["list", "count", "background", "position"]
        if n >= 2:
            options += ["relation", "relation", "left_to_right"]
        template = rng.choice(options)
    b = _Builder()
    if template == "list":
        groups = _groups(scene, order, merge=rng.random() < 0.7)
        _frame(b, rng, len(groups[0]) > 1)
        _list(b, scene, groups, rng, p_size, p_pattern)
    elif template == "count":
        groups = _groups(scene, order, merge=True)
        total = sum(len(g) for g in groups)
        noun = "shape" if total == 1 else rng.choice(["shapes", "objects"])
        lead = rng.choice(["a picture of {} {} including", "{} {} namely", "{} {} in total"])
        if lead.endswith("in total"):
            _list(b, scene, groups, rng, p_size, p_pattern)
            b.words(NUMBER_WORDS[total], order, "count")
            b.words([noun, "in", "total"])
        else:
            pre, post = lead.split("{} {}")
            b.words(pre)
            b.words(NUMBER_WORDS[total], order, "count")
            b.words(noun)
            b.words(post)
            _list(b, scene, groups, rng, p_size, p_pattern)
    elif template == "background":
        groups = _groups(scene, order, merge=True)
        bg = rng.choice(BACKGROUND_WORDS[scene.background])
        if rng.random() < 0.5:
            b.words(["on", "a", bg, "background"])
            b.words("there are" if len(groups[0]) > 1 else "there is")
            _list(b, scene, groups, rng, p_size, p_pattern)
        else:
            _list(b, scene, groups, rng, p_size, p_pattern)
            b.words(["on", "a", bg, "background"])
    elif template == "position":
        groups = _groups(scene, order, merge=False)
        _frame(b, rng, False)
        for gi, g in enumerate(groups):
            if gi > 0:
                b.words(rng.choice(CONNECTIVES))
            _mention(b, scene, g, rng, p_size, p_pattern)
            b.words(_position(scene.objects[g[0]], scene.image_size), g, "position")
    elif template == "relation":
        if n < 2:
            raise ToyWorldError("the relation template needs two objects")
        a, c = (order[0], order[1]) if len(order) >= 2 else rng.sample(range(n), 2)
        _frame(b, rng, False)
        _mention(b, scene, [a], rng, p_size, p_pattern)
        rel = _relation(scene.objects[a], scene.objects[c])
        b.words(rng.choice(RELATION_WORDS[rel]))
        _mention(b, scene, [c], rng, p_size, p_pattern)
        rest = _groups(scene, order[2:], merge=True)
        if rest:
            b.words(rng.choice(["and", "and also", "with"]))
            _list(b, scene, rest, rng, p_size, p_pattern)
    elif template == "left_to_right":
        axis = rng.choice([0, 1])
        key = sorted(
            order, key=lambda i: scene.objects[i].box[axis] + scene.objects[i].box[axis + 2]
        )
        b.words("from left to right" if axis == 0 else "from top to bottom")
        _list(b, scene, [[i] for i in key], rng, p_size, p_pattern)
    else:
        raise ToyWorldError(f"unknown caption template {template!r}")
    return b.caption(template)


TEMPLATES = ("list", "count", "background", "position", "relation", "left_to_right")


def hard_negative_pair(scene: Scene, rng: random.Random) -> tuple[int, int] | None:
    """Two objects whose colours can be swapped to give a *false* description, or ``None``.

    They differ in colour and shape, and neither swapped (colour, shape) pair occurs in the scene.
    """
    present = {(o.colour, o.shape) for o in scene.objects}
    pairs = []
    for i, a in enumerate(scene.objects):
        for j in range(i + 1, len(scene.objects)):
            c = scene.objects[j]
            if a.colour == c.colour or a.shape == c.shape:
                continue
            if (c.colour, a.shape) in present or (a.colour, c.shape) in present:
                continue
            pairs.append((i, j))
    return rng.choice(pairs) if pairs else None


def make_captions(
    scene: Scene, rng: random.Random, num: int = 5
) -> tuple[list[Caption], dict | None]:
    """``num`` distinct captions (caption 0 lists every object singly) and the hard negative.

    The hard negative is caption 0 with the colour words of two objects swapped; returned as a dict
    ``{"text", "tokens", "source_caption": 0, "objects": [i, j]}`` (``None`` if no valid pair).
    """
    pair = hard_negative_pair(scene, rng)
    n = len(scene.objects)
    order = list(range(n))
    rng.shuffle(order)
    choice: dict[tuple[int, str], str] = {}
    b = _Builder()
    _frame(b, rng, False)
    conn = [rng.choice(CONNECTIVES) for _ in order]
    p_sz = 1.0 if n == 1 else 0.35
    for k, i in enumerate(order):
        if k:
            b.words(conn[k])
        _mention(b, scene, [i], rng, p_sz, p_sz, word_choice=choice)
    caps = [b.caption("list_all")]
    negative = None
    if pair is not None:
        i, j = pair
        swap = {i: scene.objects[j].colour, j: scene.objects[i].colour}
        nb = _Builder()
        nb.words(b.tokens[: _first_mention_start(b)])
        for k, o in enumerate(order):
            if k:
                nb.words(conn[k])
            _mention(nb, scene, [o], rng, p_sz, p_sz, colour_override=swap, word_choice=choice)
        neg = nb.caption("hard_negative")
        negative = {"text": neg.text, "tokens": neg.tokens, "source_caption": 0, "objects": [i, j]}
    seen = {caps[0].text}
    tries = 0
    while len(caps) < num:
        cap = make_caption(scene, rng)
        tries += 1
        if cap.text not in seen or tries > 50:
            seen.add(cap.text)
            caps.append(cap)
    return caps, negative


def _first_mention_start(b: _Builder) -> int:
    for k, objs in enumerate(b.objects):
        if objs:
            return k
    return len(b.tokens)


def generate_scene(seed: int, image_size: int = IMAGE_SIZE) -> tuple[Image.Image, Scene]:
    """Image + full ground truth (tight boxes, 5 captions, hard negative) from one seed."""
    scene = sample_scene(seed, image_size)
    img = render_scene(scene)
    scene.captions, scene.hard_negative = make_captions(scene, random.Random(seed + 2))
    return img, scene


# ----------------------------------------------------------------------------------------------
# Dataset files
# ----------------------------------------------------------------------------------------------


def _scene_record(scene: Scene, image_id: str, file: str) -> dict[str, Any]:
    d = asdict(scene)
    d.pop("object_rgb")
    d.pop("bg_colours")
    return {"id": image_id, "file": file, **d}


def _work(args: tuple[str, str, int, int, int]) -> dict[str, Any]:
    out_dir, split, seed, index, image_size = args
    s = image_seed(seed, split, index)
    img, scene = generate_scene(s, image_size)
    name = f"{split}_{index:06d}.png"
    img.save(Path(out_dir) / "images" / name, compress_level=1)
    return _scene_record(scene, f"{split}_{index:06d}", f"images/{name}")


def generate_split(
    out_dir: str | Path,
    split: str,
    num_images: int,
    seed: int = 0,
    workers: int = 1,
    image_size: int = IMAGE_SIZE,
) -> Path:
    """Write ``num_images`` PNGs under ``out_dir/images`` and ``out_dir/annotations.json``.

    Returns the annotations path. Uses ``workers`` processes; the output does not depend on it.
    """
    if num_images < 0:
        raise ToyWorldError(f"num_images must be >= 0, got {num_images}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), split, seed, i, image_size) for i in range(num_images)]
    if workers > 1 and num_images > 1:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers) as pool:
            records = pool.map(_work, jobs, chunksize=max(1, num_images // (workers * 8)))
    else:
        records = [_work(j) for j in jobs]
    ann = {
        "split": split,
        "seed": seed,
        "image_size": image_size,
        "shapes": list(SHAPES),
        "colours": list(COLOURS),
        "sizes": list(SIZES),
        "patterns": list(PATTERNS),
        "images": records,
    }
    path = out / "annotations.json"
    path.write_text(json.dumps(ann))
    return path


def generate_dataset(
    out_dir: str | Path,
    sizes: dict[str, int],
    seed: int = 0,
    workers: int = 1,
    image_size: int = IMAGE_SIZE,
) -> dict[str, Path]:
    """Generate every split in ``sizes`` (e.g. ``{"train": 10000, "dev": 1000, "test": 1000}``)."""
    return {
        split: generate_split(Path(out_dir) / split, split, n, seed, workers, image_size)
        for split, n in sizes.items()
    }


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Read a split's ``annotations.json`` (a directory holding one is accepted too)."""
    p = Path(path)
    if p.is_dir():
        p = p / "annotations.json"
    if not p.is_file():
        raise ToyWorldError(
            f"no toy-world annotations at {p} (generate them with shan.data.toyworld)"
        )
    try:
        ann = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ToyWorldError(f"{p} is not valid JSON: {e}") from e
    if "images" not in ann:
        raise ToyWorldError(f"{p} has no 'images' list; is it a toy-world annotation file?")
    return ann


def _parse_sizes(text: str) -> dict[str, int]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise ToyWorldError(f"--split-sizes wants TRAIN,DEV,TEST (three numbers), got {text!r}")
    try:
        return dict(zip(SPLITS, (int(p) for p in parts)))
    except ValueError as e:
        raise ToyWorldError(f"--split-sizes wants integers, got {text!r}") from e


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m shan.data.toyworld", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=1200, help="total; split 80/10/10")
    p.add_argument(
        "--split-sizes", default=None, help="TRAIN,DEV,TEST image counts (overrides --num-images)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 1)))
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    args = p.parse_args(argv)
    try:
        if args.split_sizes:
            sizes = _parse_sizes(args.split_sizes)
        else:
            n_dev = n_test = args.num_images // 10
            sizes = {"train": args.num_images - n_dev - n_test, "dev": n_dev, "test": n_test}
        t0 = time.time()
        for split, path in generate_dataset(
            args.out, sizes, args.seed, args.workers, args.image_size
        ).items():
            print(f"{split}: {sizes[split]} images -> {path}")
        print(f"done in {time.time() - t0:.1f}s")
    except ToyWorldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
