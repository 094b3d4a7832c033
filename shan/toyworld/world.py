"""Objects, backgrounds, scenes: sampling, layout (occlusion, visible boxes), contrast, rendering.

A scene is ``image_size`` × ``image_size`` RGB with 1–5 objects (8 shapes, 8 colours, 2 sizes,
3 fill patterns) drawn in order over a background (5 textures × 3 tones × grey or 8 hues). Every
random choice comes from the scene's seed, so ``(seed, WorldConfig)`` regenerates the same scene.

Guarantees of :func:`sample_scene` (checked again on rendered pixels by the tests):

* **visible and nameable**: every object's colour differs from the background pixels under it by
  at least ``min_contrast`` (CIE76 ΔE in CIELAB, 5th percentile over its pixels) and from every
  object it overlaps by as much, so its shape is visible and its colour reads as the named one;
* **bounded occlusion**: a later object may cover part of an earlier one (``overlap_p``), but never
  more than ``max_occlusion`` of its pixels; ``ToyObject.box`` is the box of the *visible* pixels;
* **duplicates on purpose**: with ``duplicate_p`` an object repeats the shape and colour of one
  already placed, so counts ("two red circles") occur.
"""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from shan.errors import ShanError

IMAGE_SIZE = 256
SPLITS = ("train", "dev", "test")
_SPLIT_IDS = {"train": 0, "dev": 1, "test": 2}

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")
# Base RGB per colour: hues spaced around the wheel, all saturated. A small per-object jitter
# (± COLOUR_JITTER per channel) is added when an object is sampled.
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
COLOUR_JITTER = 15
SIZES = ("small", "large")
SIZE_RANGE = {"small": (24, 38), "large": (54, 80)}  # box side in pixels at 256 (before aspect)
PATTERNS = ("solid", "striped", "dotted")
ATTRIBUTES = ("shape", "colour", "size", "pattern")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "pattern": PATTERNS,
}

CAPTION_FORMS = ("list", "count", "relation", "background", "fact", "position", "order")
RELATIONS = ("left", "right", "above", "below", "next_to", "far_from", "in_front_of", "behind")
BACKGROUND_TEXTURES = ("plain", "gradient", "noise", "stripes", "checks")
BACKGROUND_TONES = ("dark", "mid", "light")
BACKGROUND_HUES = ("grey", *COLOURS)
# HSV value / saturation ranges per tone; hues come from the object colours' hues.
_TONE_V = {"dark": (0.13, 0.32), "mid": (0.46, 0.64), "light": (0.82, 0.96)}
_TONE_S = {"dark": (0.45, 0.8), "mid": (0.45, 0.8), "light": (0.16, 0.38)}
_GREY_S = (0.0, 0.05)
# Dark orange/yellow/pink read as brown/olive/maroon, mid orange/yellow as brown/olive: not drawn,
# so the hue words stay true.
_TONE_HUES = {
    "dark": ("grey", "red", "green", "cyan", "blue", "purple"),
    "mid": ("grey", "red", "green", "cyan", "blue", "purple", "pink"),
    "light": BACKGROUND_HUES,
}
_HUE = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLOURS.items()}
NOISE_SIGMA = 14.0


class ToyWorldError(ShanError, ValueError):
    """Bad arguments, an impossible scene, or a malformed toy-world annotation file."""


@dataclass
class WorldConfig:
    """Everything that defines a toy world; saved in every split's ``annotations.json``.

    Probabilities given as ``{name: weight}`` need not sum to 1. Distances are fractions of the
    image side. ``grammar`` picks the caption grammar: ``full`` (every caption form) or
    ``classic`` (the first world's words and templates only, which the first shipped model knows).
    """

    name: str = "toyworld2"
    image_size: int = IMAGE_SIZE
    num_objects: dict[int, float] = field(
        default_factory=lambda: {1: 0.1, 2: 0.2, 3: 0.25, 4: 0.25, 5: 0.2}
    )
    background_textures: dict[str, float] = field(
        default_factory=lambda: {"plain": 1, "gradient": 1, "noise": 1, "stripes": 1, "checks": 1}
    )
    background_tones: dict[str, float] = field(
        default_factory=lambda: {"dark": 1, "mid": 1, "light": 1}
    )
    background_grey_p: float = 0.4
    min_contrast: float = 40.0
    overlap_p: float = 0.25
    max_occlusion: float = 0.3
    max_iou: float = 0.0
    duplicate_p: float = 0.25
    relation_gap: float = 0.02
    near: float = 0.06
    far: float = 0.3
    cell_margin: float = 0.04
    grammar: str = "full"
    num_captions: int = 5
    caption_weights: dict[str, float] = field(
        default_factory=lambda: {
            "list": 2.5,
            "count": 1.0,
            "relation": 3.0,
            "background": 1.0,
            "fact": 1.0,
            "position": 0.7,
            "order": 0.8,
        }
    )
    relation_weights: dict[str, float] = field(
        default_factory=lambda: {
            "left": 1,
            "right": 1,
            "above": 1,
            "below": 1,
            "next_to": 0.5,
            "far_from": 0.3,
            "in_front_of": 0.6,
            "behind": 0.6,
        }
    )
    p_size: float = 0.35
    p_pattern: float = 0.3
    p_post: float = 0.3
    p_coord: float = 0.15
    p_generic: float = 0.1
    distractor_image_splits: tuple[str, ...] = ("test",)

    def __post_init__(self) -> None:
        try:
            self.num_objects = {int(k): float(v) for k, v in self.num_objects.items()}
            for name in ("background_textures", "background_tones", "caption_weights",
                         "relation_weights"):  # fmt: skip
                setattr(self, name, {str(k): float(v) for k, v in getattr(self, name).items()})
            for name in ("image_size", "num_captions"):
                setattr(self, name, int(getattr(self, name)))
            for f in fields(self):
                if f.type == "float":
                    setattr(self, f.name, float(getattr(self, f.name)))
            self.distractor_image_splits = tuple(str(s) for s in self.distractor_image_splits)
        except (AttributeError, TypeError, ValueError) as e:
            raise ToyWorldError(f"malformed WorldConfig value: {e}") from e
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ToyWorldError` (one line) for a setting that cannot work."""
        if self.image_size < 32:
            raise ToyWorldError(f"image_size must be >= 32, got {self.image_size}")
        if not self.num_objects or min(self.num_objects) < 1 or max(self.num_objects) > 5:
            raise ToyWorldError(f"num_objects must use counts 1..5, got {self.num_objects}")
        for name, table, allowed in (
            ("background_textures", self.background_textures, BACKGROUND_TEXTURES),
            ("background_tones", self.background_tones, BACKGROUND_TONES),
            ("caption_weights", self.caption_weights, CAPTION_FORMS),
            ("relation_weights", self.relation_weights, RELATIONS),
        ):
            bad = set(table) - set(allowed)
            if bad or not any(v > 0 for v in table.values()) or min(table.values()) < 0:
                raise ToyWorldError(f"{name} wants weights for {', '.join(allowed)}; got {table}")
        for name in ("background_grey_p", "overlap_p", "duplicate_p", "p_size", "p_pattern",
                     "p_post", "p_coord", "p_generic", "max_iou"):  # fmt: skip
            if not 0 <= getattr(self, name) <= 1:
                raise ToyWorldError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.grammar not in ("full", "classic"):
            raise ToyWorldError(f"grammar must be 'full' or 'classic', got {self.grammar!r}")
        if not 0 <= self.max_occlusion < 1:
            raise ToyWorldError(f"max_occlusion must be in [0, 1), got {self.max_occlusion}")
        if not 1 <= self.num_captions <= 20:
            raise ToyWorldError(f"num_captions must be in 1..20, got {self.num_captions}")

    @classmethod
    def classic(cls, **overrides: Any) -> WorldConfig:
        """The first toy world's spirit: pale grey backgrounds (plain, gradient, noise), no
        deliberate overlaps (box IoU ≤ 0.1), no forced duplicates, the first caption grammar."""
        kw: dict[str, Any] = dict(
            name="classic",
            background_textures={"plain": 1, "gradient": 1, "noise": 1},
            background_tones={"light": 1},
            background_grey_p=1.0,
            overlap_p=0.0,
            max_iou=0.1,
            duplicate_p=0.0,
            grammar="classic",
            caption_weights={
                "list": 1,
                "count": 1,
                "background": 1,
                "position": 1,
                "relation": 2,
                "order": 1,
            },
            relation_weights={"left": 1, "right": 1, "above": 1, "below": 1},
        )
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WorldConfig:
        """``"toyworld2"`` (the default world) or ``"classic"``."""
        if name == "classic":
            return cls.classic(**overrides)
        if name in ("toyworld2", "default", "full"):
            return cls(**overrides)
        raise ToyWorldError(f"unknown world preset {name!r}; expected toyworld2 or classic")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_objects"] = {str(k): v for k, v in self.num_objects.items()}
        d["distractor_image_splits"] = list(self.distractor_image_splits)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ToyWorldError(f"unknown WorldConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class Background:
    """The background: a texture of one or two colours of the same tone and hue name."""

    texture: str
    tone: str
    hue: str
    colours: list[list[int]]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToyObject:
    """One drawn object.

    ``frame`` is the integer ``[x1, y1, x2, y2]`` the shape is drawn in; ``box`` the tight box of
    its *visible* pixels (a later object may hide part of it); ``visible`` the fraction of its
    pixels not hidden; ``rgb`` the drawn colour; ``style`` seeds the fill pattern's details.
    """

    shape: str
    colour: str
    size: str
    pattern: str
    box: list[float]
    frame: list[int] = field(default_factory=list)
    rgb: list[int] = field(default_factory=list)
    style: int = 0
    visible: float = 1.0

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)

    def kind(self) -> tuple[str, str]:
        return (self.shape, self.colour)

    def copy(self) -> ToyObject:
        return ToyObject(
            self.shape, self.colour, self.size, self.pattern, list(self.box), list(self.frame),
            list(self.rgb), self.style, self.visible,
        )  # fmt: skip


@dataclass
class Scene:
    """One toy-world image's ground truth: everything needed to redraw it and caption it."""

    seed: int
    background: Background
    objects: list[ToyObject]
    image_size: int = IMAGE_SIZE
    captions: list[Any] = field(default_factory=list)
    negatives: list[list[dict[str, str]]] = field(default_factory=list)
    hard_negative: dict[str, Any] | None = None
    distractors: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> Scene:
        """A deep copy without captions, negatives and distractors (for modified scenes)."""
        bg = self.background
        return Scene(
            self.seed,
            Background(bg.texture, bg.tone, bg.hue, [list(c) for c in bg.colours], dict(bg.params)),
            [o.copy() for o in self.objects],
            self.image_size,
        )


def image_seed(seed: int, split: str, index: int) -> int:
    """The seed of image ``index`` of ``split`` (stable across runs, platforms, worker counts)."""
    if split not in _SPLIT_IDS:
        raise ToyWorldError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    ss = np.random.SeedSequence([int(seed), _SPLIT_IDS[split], int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


# ----------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------


def _linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LINEAR_LUT = _linear(np.arange(256, dtype=np.float32) / 255.0)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0–255, ``(..., 3)``) → CIELAB (D65), ``(..., 3)`` float32."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        c = _LINEAR_LUT[rgb]
    else:
        c = _linear(rgb.astype(np.float32) / 255.0)
    m = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=np.float32,
    )
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    ).astype(np.float32)


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference of two sRGB colours (broadcasting, 0–255 inputs)."""
    return np.linalg.norm(rgb_to_lab(a) - rgb_to_lab(b), axis=-1)


@lru_cache(maxsize=65536)
def _lab(rgb: tuple[int, ...]) -> np.ndarray:
    lab = rgb_to_lab(np.array(rgb, dtype=np.float32))
    lab.setflags(write=False)
    return lab


def colour_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """CIE76 ΔE between two sRGB colours (cached per colour)."""
    return float(np.linalg.norm(_lab(tuple(a)) - _lab(tuple(b))))


_COLOUR_LAB = rgb_to_lab(np.array(list(COLOURS.values()), dtype=np.float32))


def nearest_colour(rgb: Sequence[float]) -> str:
    """The named object colour closest (in CIELAB) to ``rgb``."""
    d = np.linalg.norm(_COLOUR_LAB - rgb_to_lab(np.asarray(rgb, dtype=np.float32)), axis=-1)
    return list(COLOURS)[int(d.argmin())]


def _hsv_rgb(h: float, s: float, v: float) -> list[int]:
    return [int(round(255 * x)) for x in colorsys.hsv_to_rgb(h % 1.0, s, v)]


def background_colour(tone: str, hue: str, rng: random.Random) -> list[int]:
    """One colour whose name is ``tone`` + ``hue`` (e.g. dark + blue)."""
    v = rng.uniform(*_TONE_V[tone])
    if hue == "grey":
        return _hsv_rgb(rng.random(), rng.uniform(*_GREY_S), v)
    return _hsv_rgb(_HUE[hue] + rng.uniform(-0.015, 0.015), rng.uniform(*_TONE_S[tone]), v)


def hues_for_tone(tone: str) -> tuple[str, ...]:
    """The background hues drawn at ``tone`` (dark orange/yellow/pink are not)."""
    return _TONE_HUES[tone]


def make_background(
    texture: str, tone: str, hue: str, rng: random.Random, image_size: int = IMAGE_SIZE
) -> Background:
    """A background of the given kind with its colours and texture parameters drawn from ``rng``."""
    if texture not in BACKGROUND_TEXTURES:
        raise ToyWorldError(
            f"unknown background texture {texture!r}; expected {', '.join(BACKGROUND_TEXTURES)}"
        )
    if tone not in BACKGROUND_TONES:
        raise ToyWorldError(f"unknown tone {tone!r}; expected {', '.join(BACKGROUND_TONES)}")
    if hue not in _TONE_HUES[tone]:
        raise ToyWorldError(
            f"no {tone} {hue} background; {tone} hues are {', '.join(_TONE_HUES[tone])}"
        )
    c0 = background_colour(tone, hue, rng)
    for _ in range(20):  # the second colour differs visibly but keeps the name
        c1 = background_colour(tone, hue, rng)
        if texture in ("plain", "noise") or float(delta_e(np.array(c0), np.array(c1))) > 7:
            break
    scale = image_size / IMAGE_SIZE
    params: dict[str, Any] = {}
    if texture == "gradient":
        params["direction"] = rng.choice(["horizontal", "vertical", "diagonal", "antidiagonal"])
    elif texture == "stripes":
        params["period"] = max(4, round(rng.uniform(12, 24) * scale))
        params["angle"] = rng.choice([0, 45, 90, 135])
    elif texture == "checks":
        params["cell"] = max(3, round(rng.uniform(10, 22) * scale))
    return Background(texture, tone, hue, [c0, c1], params)


def sample_background(cfg: WorldConfig, rng: random.Random) -> Background:
    texture = _weighted(rng, cfg.background_textures)
    tone = _weighted(rng, cfg.background_tones)
    if rng.random() < cfg.background_grey_p:
        hue = "grey"
    else:
        hue = rng.choice([h for h in _TONE_HUES[tone] if h != "grey"])
    return make_background(texture, tone, hue, rng, cfg.image_size)


def _bg_key(bg: Background, size: int, seed: int) -> tuple:
    colours = tuple(tuple(c) for c in bg.colours)
    return (bg.texture, colours, tuple(sorted(bg.params.items())), size, seed)


def background_array(bg: Background, size: int, seed: int) -> np.ndarray:
    """The background's pixels ``(size, size, 3)`` uint8 (noise drawn from ``seed``; read-only,
    cached for the last few backgrounds)."""
    return _background_array(_bg_key(bg, size, seed))


@lru_cache(maxsize=4)
def _background_array(key: tuple) -> np.ndarray:
    texture, colours, params_items, size, seed = key
    bg = Background(texture, "", "", [list(c) for c in colours], dict(params_items))
    arr = _draw_background(bg, size, seed)
    arr.setflags(write=False)
    return arr


def _draw_background(bg: Background, size: int, seed: int) -> np.ndarray:
    c0 = np.array(bg.colours[0], dtype=np.float32)
    c1 = np.array(bg.colours[1], dtype=np.float32)
    ramp = np.arange(size, dtype=np.float32)
    yy, xx = ramp[:, None], ramp[None, :]
    if bg.texture == "plain":
        arr = np.broadcast_to(c0, (size, size, 3)).copy()
    elif bg.texture == "gradient":
        d = bg.params.get("direction", "horizontal")
        t = {
            "horizontal": xx,
            "vertical": yy,
            "diagonal": (xx + yy) / 2,
            "antidiagonal": (size - 1 - xx + yy) / 2,
        }[d] / max(1, size - 1)
        arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
    elif bg.texture == "noise":
        rng = np.random.default_rng(seed)
        arr = c0 + rng.normal(0.0, NOISE_SIGMA, size=(size, size, 1)).astype(np.float32)
    elif bg.texture == "stripes":
        a = math.radians(bg.params.get("angle", 0))
        u = xx * math.cos(a) + yy * math.sin(a)
        on = (np.floor(u / bg.params.get("period", 16)) % 2)[..., None]
        arr = c0 * (1 - on) + c1 * on
    elif bg.texture == "checks":
        cell = bg.params.get("cell", 16)
        on = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
        arr = c0 * (1 - on) + c1 * on
    else:
        raise ToyWorldError(f"unknown background texture {bg.texture!r}")
    return np.ascontiguousarray(
        np.broadcast_to(np.clip(arr, 0, 255).astype(np.uint8), (size, size, 3))
    )


# ----------------------------------------------------------------------------------------------
# Shapes and fills
# ----------------------------------------------------------------------------------------------


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
        return [(a, 0), (b, 0), (b, c), (w - 1, c), (w - 1, d), (b, d),
                (b, h - 1), (a, h - 1), (a, d), (0, d), (0, c), (a, c)]  # fmt: skip
    if shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        xs = (xs - xs.min()) / (xs.max() - xs.min()) * (w - 1)
        ys = (ys - ys.min()) / (ys.max() - ys.min()) * (h - 1)
        return list(zip(xs.tolist(), ys.tolist()))
    raise ToyWorldError(f"unknown shape {shape!r}")


@lru_cache(maxsize=4096)
def _mask_image(shape: str, w: int, h: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    poly = _polygon(shape, w, h)
    if poly is None:
        draw.ellipse([0, 0, w - 1, h - 1], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


@lru_cache(maxsize=4096)
def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """``(h, w)`` bool mask of ``shape`` drawn in a ``w`` × ``h`` frame (read-only, cached)."""
    m = np.asarray(_mask_image(shape, w, h)) > 0
    m.setflags(write=False)
    return m


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


# ----------------------------------------------------------------------------------------------
# Layout: occlusion and visible boxes
# ----------------------------------------------------------------------------------------------


def _object_mask(o: ToyObject) -> np.ndarray:
    x1, y1, x2, y2 = o.frame
    return shape_mask(o.shape, x2 - x1, y2 - y1)


def owner_map(objects: Sequence[ToyObject], size: int) -> np.ndarray:
    """``(size, size)`` int8: index of the object seen at each pixel (−1 = background)."""
    own = np.full((size, size), -1, dtype=np.int8)
    for i, o in enumerate(objects):
        x1, y1, x2, y2 = o.frame
        m = _object_mask(o)
        cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(size, x2), min(size, y2)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        sub = m[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
        own[cy1:cy2, cx1:cx2][sub] = i
    return own


def update_layout(scene: Scene) -> np.ndarray:
    """Set every object's ``box`` (visible pixels) and ``visible`` fraction; returns the owner map.

    An object hidden entirely gets ``visible = 0`` and its frame as box.
    """
    size = scene.image_size
    own = owner_map(scene.objects, size)
    for i, o in enumerate(scene.objects):
        x1, y1, x2, y2 = (max(0, o.frame[0]), max(0, o.frame[1]),
                          min(size, o.frame[2]), min(size, o.frame[3]))  # fmt: skip
        seen = own[y1:y2, x1:x2] == i
        cols, rows = np.flatnonzero(seen.any(0)), np.flatnonzero(seen.any(1))
        if len(cols) == 0:
            o.visible, o.box = 0.0, [float(v) for v in o.frame]
            continue
        o.visible = float(seen.sum() / max(1, int(_object_mask(o).sum())))
        o.box = [float(x1 + cols[0]), float(y1 + rows[0]), float(x1 + cols[-1] + 1),
                 float(y1 + rows[-1] + 1)]  # fmt: skip
    return own


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _weighted(rng: random.Random, table: dict[Any, float]) -> Any:
    keys = [k for k, v in table.items() if v > 0]
    return rng.choices(keys, weights=[table[k] for k in keys])[0]


def jitter_rgb(colour: str, rng: random.Random) -> list[int]:
    return [
        min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in COLOURS[colour]
    ]


def frame_size(size: str, rng: random.Random, image_size: int) -> tuple[int, int]:
    lo, hi = SIZE_RANGE[size]
    scale = image_size / IMAGE_SIZE
    side = rng.uniform(lo, hi) * scale
    aspect = rng.uniform(0.85, 1.18)
    return max(8, round(side * math.sqrt(aspect))), max(8, round(side / math.sqrt(aspect)))


class _Placer:
    """Checks candidate objects against a scene: contrast, occlusion, overlap limits."""

    def __init__(self, scene: Scene, cfg: WorldConfig) -> None:
        self.scene, self.cfg = scene, cfg
        size = scene.image_size
        self.bg = background_array(scene.background, size, scene.seed)
        self.own = owner_map(scene.objects, size)

    def contrast_ok(self, obj: ToyObject, mask: np.ndarray) -> bool:
        x1, y1, x2, y2 = obj.frame
        lab = _lab(tuple(obj.rgb))
        under = rgb_to_lab(self.bg[y1:y2, x1:x2][mask])
        if under.size and np.percentile(np.linalg.norm(under - lab, axis=-1), 5) < (
            self.cfg.min_contrast
        ):
            return False
        below = np.unique(self.own[y1:y2, x1:x2][mask])
        for j in below[below >= 0]:
            other = self.scene.objects[int(j)]
            if colour_distance(obj.rgb, other.rgb) < self.cfg.min_contrast:
                return False
        return True

    def occlusion_ok(self, obj: ToyObject, mask: np.ndarray) -> bool:
        x1, y1, x2, y2 = obj.frame
        hidden = self.own[y1:y2, x1:x2][mask]
        hidden = hidden[hidden >= 0]
        if hidden.size == 0:
            return True
        counts = np.bincount(hidden.astype(np.int64), minlength=len(self.scene.objects))
        for j, lost in enumerate(counts):
            if lost == 0:
                continue
            other = self.scene.objects[j]
            ox1, oy1, ox2, oy2 = other.frame
            seen = int((self.own[oy1:oy2, ox1:ox2] == j).sum())
            total = int(_object_mask(other).sum())
            if (seen - lost) / max(1, total) < 1 - self.cfg.max_occlusion:
                return False
        return True

    def fits(self, obj: ToyObject, overlap: bool) -> str:
        """``""`` if ``obj`` can be added on top, else the reason (``colour`` or ``place``)."""
        size = self.scene.image_size
        x1, y1, x2, y2 = obj.frame
        if x1 < 0 or y1 < 0 or x2 > size or y2 > size:
            return "place"
        if not overlap:
            for o in self.scene.objects:
                iou = _iou(obj.frame, o.frame)
                if iou > self.cfg.max_iou or (self.cfg.max_iou == 0 and _touch(obj.frame, o.frame)):
                    return "place"
        mask = shape_mask(obj.shape, x2 - x1, y2 - y1)
        if not self.occlusion_ok(obj, mask):
            return "place"
        if not self.contrast_ok(obj, mask):
            return "colour"
        return ""

    def add(self, obj: ToyObject) -> None:
        self.scene.objects.append(obj)
        x1, y1, x2, y2 = obj.frame
        self.own[y1:y2, x1:x2][shape_mask(obj.shape, x2 - x1, y2 - y1)] = (
            len(self.scene.objects) - 1
        )


def _touch(a: Sequence[float], b: Sequence[float], gap: float = 2) -> bool:
    """Frames that overlap or come closer than ``gap`` pixels."""
    return not (
        a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
    )


def place_object(
    scene: Scene,
    cfg: WorldConfig,
    rng: random.Random,
    kind: tuple[str, str] | None = None,
    placer: _Placer | None = None,
    tries: int = 60,
) -> ToyObject | None:
    """Sample one more object (on top of the others) that satisfies every rule, or ``None``.

    ``kind`` fixes ``(shape, colour)``; otherwise both are drawn (the colour is redrawn when it
    cannot stand out from the background there).
    """
    placer = placer or _Placer(scene, cfg)
    size = scene.image_size
    shape, colour = kind if kind is not None else (rng.choice(SHAPES), rng.choice(list(COLOURS)))
    obj_size, pattern = rng.choice(SIZES), rng.choice(PATTERNS)
    overlap = bool(scene.objects) and rng.random() < cfg.overlap_p
    style = rng.getrandbits(31)
    colour_fails = 0
    for _ in range(tries):
        w, h = frame_size(obj_size, rng, size)
        margin = 3
        if w + 2 * margin >= size or h + 2 * margin >= size:
            continue
        if overlap:
            t = rng.choice(scene.objects).frame
            ox, oy = max(2, w // 4), max(2, h // 4)
            x1 = rng.randint(min(t[0] - w + ox, t[2] - ox), max(t[0] - w + ox, t[2] - ox))
            y1 = rng.randint(min(t[1] - h + oy, t[3] - oy), max(t[1] - h + oy, t[3] - oy))
            x1 = min(max(margin, x1), size - w - margin)
            y1 = min(max(margin, y1), size - h - margin)
        else:
            x1 = rng.randint(margin, size - w - margin)
            y1 = rng.randint(margin, size - h - margin)
        obj = ToyObject(
            shape, colour, obj_size, pattern, [0.0] * 4, [x1, y1, x1 + w, y1 + h],
            jitter_rgb(colour, rng), style,
        )  # fmt: skip
        why = placer.fits(obj, overlap)
        if not why:
            placer.add(obj)
            return obj
        if why == "colour":
            colour_fails += 1
            if kind is None and colour_fails >= 4:
                colour, colour_fails = rng.choice(list(COLOURS)), 0
    return None


def sample_scene(seed: int, config: WorldConfig | None = None) -> Scene:
    """Sample one scene (background, objects, layout) from ``seed``; boxes are final."""
    cfg = config or WorldConfig()
    rng = random.Random(seed)
    n_target = _weighted(rng, cfg.num_objects)
    scene = Scene(seed, sample_background(cfg, rng), [], cfg.image_size)
    placer = _Placer(scene, cfg)
    for _ in range(n_target):
        kind = None
        if scene.objects and rng.random() < cfg.duplicate_p:
            kind = rng.choice(scene.objects).kind()
        if place_object(scene, cfg, rng, kind, placer) is None and kind is not None:
            place_object(scene, cfg, rng, None, placer)
    if not scene.objects:  # cannot happen with sane settings; keep the contract anyway
        raise ToyWorldError(f"could not place any object in scene {seed}")
    update_layout(scene)
    return scene


def scene_problems(scene: Scene, cfg: WorldConfig | None = None) -> list[str]:
    """Why ``scene`` breaks the world's rules (empty list = valid): an object outside the image,
    hidden beyond ``max_occlusion``, or too close in colour to the background or an object it
    touches. Boxes must be up to date (:func:`update_layout`)."""
    cfg = cfg or WorldConfig()
    size = scene.image_size
    bg = background_array(scene.background, size, scene.seed)
    own = owner_map(scene.objects, size)
    problems = []
    for i, o in enumerate(scene.objects):
        name = f"object {i} ({o.colour} {o.shape})"
        x1, y1, x2, y2 = o.frame
        if x1 < 0 or y1 < 0 or x2 > size or y2 > size or x2 <= x1 or y2 <= y1:
            problems.append(f"{name} does not fit in the image")
            continue
        if 1 - o.visible > cfg.max_occlusion + 1e-9:
            problems.append(f"{name} is {100 * (1 - o.visible):.0f}% hidden")
        mask = _object_mask(o)
        lab = _lab(tuple(o.rgb))
        under = rgb_to_lab(bg[y1:y2, x1:x2][mask])
        if np.percentile(np.linalg.norm(under - lab, axis=-1), 5) < cfg.min_contrast:
            problems.append(f"{name} does not stand out from the {scene.background.hue} background")
        for j in np.unique(own[y1:y2, x1:x2][mask]):
            if j < 0 or j == i:
                continue
            other = scene.objects[int(j)]
            if colour_distance(o.rgb, other.rgb) < cfg.min_contrast:
                problems.append(f"{name} touches object {int(j)} of a too similar colour")
    return problems


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` (deterministic: background from ``scene.seed``, fills from each ``style``)."""
    size = scene.image_size
    img = Image.fromarray(background_array(scene.background, size, scene.seed), "RGB")
    for o in scene.objects:
        x1, y1, x2, y2 = o.frame
        w, h = x2 - x1, y2 - y1
        img.paste(_fill(o.pattern, o.rgb, w, h, random.Random(o.style)), (x1, y1), _mask_image(
            o.shape, w, h))  # fmt: skip
    return img


# ----------------------------------------------------------------------------------------------
# Geometry of relations and positions (what the captions may claim)
# ----------------------------------------------------------------------------------------------


def gap(a: Sequence[float], b: Sequence[float], axis: int) -> float:
    """How far box ``b`` starts after box ``a`` ends along ``axis`` (0 = x, 1 = y); < 0 overlap."""
    return float(b[axis] - a[axis + 2])


def box_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Gap between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return float(math.hypot(dx, dy))


def relation_holds(rel: str, i: int, j: int, scene: Scene, cfg: WorldConfig) -> bool:
    """Whether "object ``i`` <rel> object ``j``" is clearly true (the margins make it unambiguous).

    ``left``/``right``/``above``/``below``: the visible boxes are apart along that axis by at least
    ``relation_gap`` of the image; ``next_to``: at most ``near`` apart; ``far_from``: at least
    ``far`` apart; ``in_front_of``/``behind``: one hides at least 2 % of the other's pixels.
    """
    a, b = scene.objects[i].box, scene.objects[j].box
    m = cfg.relation_gap * scene.image_size
    if rel == "left":
        return gap(a, b, 0) >= m
    if rel == "right":
        return gap(b, a, 0) >= m
    if rel == "above":
        return gap(a, b, 1) >= m
    if rel == "below":
        return gap(b, a, 1) >= m
    if rel == "next_to":
        return box_distance(a, b) <= cfg.near * scene.image_size
    if rel == "far_from":
        return box_distance(a, b) >= cfg.far * scene.image_size
    if rel in ("in_front_of", "behind"):
        front, back = (i, j) if rel == "in_front_of" else (j, i)
        return front > back and hidden_by(scene, back, front) >= 0.02
    raise ToyWorldError(f"unknown relation {rel!r}")


def hidden_by(scene: Scene, back: int, front: int) -> float:
    """Fraction of object ``back``'s pixels covered by object ``front`` (0 if drawn before it)."""
    if front <= back:
        return 0.0
    a, b = scene.objects[back], scene.objects[front]
    ax1, ay1, ax2, ay2 = a.frame
    bx1, by1, bx2, by2 = b.frame
    x1, y1, x2, y2 = max(ax1, bx1), max(ay1, by1), min(ax2, bx2), min(ay2, by2)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    ma, mb = _object_mask(a), _object_mask(b)
    inter = (
        ma[y1 - ay1 : y2 - ay1, x1 - ax1 : x2 - ax1] & mb[y1 - by1 : y2 - by1, x1 - bx1 : x2 - bx1]
    )
    return float(inter.sum() / max(1, ma.sum()))


def cell_of(obj: ToyObject, size: int, margin: float) -> tuple[str, str] | None:
    """``(row, column)`` of the 3 × 3 grid cell holding the object's centre: row in
    ``top/middle/bottom``, column in ``left/center/right``; ``None`` when the centre lies within
    ``margin`` (fraction of the image) of a cell border."""
    out = []
    for axis, names in ((1, ("top", "middle", "bottom")), (0, ("left", "center", "right"))):
        c = (obj.box[axis] + obj.box[axis + 2]) / 2 / size
        k = min(2, int(c * 3))
        lo, hi = k / 3, (k + 1) / 3
        if (k > 0 and c - lo < margin) or (k < 2 and hi - c < margin):
            return None
        out.append(names[k])
    return out[0], out[1]


def mirror_scene(scene: Scene) -> Scene:
    """The scene with every object moved to its left-right mirrored place (same background)."""
    s = scene.copy()
    size = s.image_size
    for o in s.objects:
        x1, y1, x2, y2 = o.frame
        o.frame = [size - x2, y1, size - x1, y2]
    update_layout(s)
    return s


__all__ = [
    "IMAGE_SIZE",
    "SPLITS",
    "SHAPES",
    "COLOURS",
    "SIZES",
    "PATTERNS",
    "ATTRIBUTES",
    "BACKGROUND_TEXTURES",
    "BACKGROUND_TONES",
    "BACKGROUND_HUES",
    "ToyWorldError",
    "WorldConfig",
    "Background",
    "ToyObject",
    "Scene",
    "image_seed",
    "sample_scene",
    "render_scene",
    "update_layout",
    "scene_problems",
    "relation_holds",
    "cell_of",
    "delta_e",
    "colour_distance",
    "nearest_colour",
]
