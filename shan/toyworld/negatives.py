"""Typed caption negatives and distractor scenes: minimal pairs, checked by the truth evaluator.

**Caption negatives** (:func:`typed_negatives`): a true caption's plan is edited in one way and said
again with the same words; the edit is kept only if the evaluator finds the new caption FALSE for
the scene. Types (:data:`NEGATIVE_TYPES`, the one list every consumer uses):

- ``colour_swap`` / ``size_swap`` / ``pattern_swap``: that attribute exchanged between two
  mentioned objects (said before the noun: "a red circle and a blue square" → "a blue circle and a
  red square");
- ``shape_swap``: the shapes of two mentioned objects exchanged;
- ``word_order``: an attribute exchanged between two objects that both say it after the noun ("a
  circle that is red and a square that is blue" → colours exchanged);
- ``relation_swap``: the two objects of a relation exchanged (or two neighbours of an ordering);
- ``relation_opposite``: left↔right, above↔below, next to↔far from, in front of↔behind; an
  ordering's direction reversed; a position's cell mirrored;
- ``count``: a number changed by one, with plural agreement ("a red circle" → "two red circles");
- ``absent``: one mention replaced by a kind of object (shape and colour) the scene does not have;
- ``background``: a background word (tone, hue or texture) replaced by a false one.

Annotations keep per caption a list of ``{"type", "text"}`` (the record shape of
``{split}_negs.jsonl``).

**Distractor scenes** (:func:`make_distractors`): the scene changed in one way and drawn on the same
background — ``mirror`` (layout mirrored left-right), ``colour_swap`` / ``shape_swap`` (two objects
exchange colours / shapes), ``add`` (one more object), ``remove`` (one object fewer) — with the
indices of the scene's captions that become false for it (i2t minimal pairs).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from shan.toyworld import lexicon as lx
from shan.toyworld.captions import Caption, realise
from shan.toyworld.meaning import At, BackgroundIs, Order, Relation, Total, clone, nps_of
from shan.toyworld.truth import holds, referents
from shan.toyworld.world import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    Scene,
    ToyObject,
    ToyWorldError,
    WorldConfig,
    hues_for_tone,
    mirror_scene,
    place_object,
    scene_problems,
    update_layout,
)

COLOUR_SWAP = "colour_swap"
SHAPE_SWAP = "shape_swap"
SIZE_SWAP = "size_swap"
PATTERN_SWAP = "pattern_swap"
WORD_ORDER = "word_order"
RELATION_SWAP = "relation_swap"
RELATION_OPPOSITE = "relation_opposite"
COUNT = "count"
ABSENT = "absent"
BACKGROUND = "background"
NEGATIVE_TYPES = (
    COLOUR_SWAP,
    SHAPE_SWAP,
    SIZE_SWAP,
    PATTERN_SWAP,
    WORD_ORDER,
    RELATION_SWAP,
    RELATION_OPPOSITE,
    COUNT,
    ABSENT,
    BACKGROUND,
)
"""Every caption-negative type, in the order annotations list them."""
SWAP_TYPES = {
    "colour": COLOUR_SWAP,
    "shape": SHAPE_SWAP,
    "size": SIZE_SWAP,
    "pattern": PATTERN_SWAP,
}

MIRROR = "mirror"
ADD = "add"
REMOVE = "remove"
DISTRACTOR_TYPES = (MIRROR, COLOUR_SWAP, SHAPE_SWAP, ADD, REMOVE)
"""Every distractor-scene type."""

_DEFAULT = WorldConfig()
_FLIP = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


@dataclass
class Negative:
    """A false caption made from a true one: its type, the caption (grounded in the scene), and
    the objects whose description changed (for binding swaps, the two mentions' objects)."""

    type: str
    caption: Caption
    objects: list[int] = field(default_factory=list)

    def to_record(self) -> dict[str, str]:
        return {"type": self.type, "text": self.caption.text}


def _candidates(
    plan: list, scene: Scene, rng: random.Random, cfg: WorldConfig
) -> dict[str, list[tuple[list, list]]]:
    """Every edit of ``plan`` by type: ``{type: [(edited plan, changed objects)]}`` (unchecked).
    Background edits use only tones, hues and textures the world draws."""
    out: dict[str, list[tuple[list, list]]] = {t: [] for t in NEGATIVE_TYPES}
    nps = nps_of(plan)
    # Binding swaps: one attribute exchanged between two mentions.
    for p in range(len(nps)):
        for q in range(p + 1, len(nps)):
            for a in ATTRIBUTES:
                vp, vq = getattr(nps[p], a), getattr(nps[q], a)
                if vp is None or vq is None or vp == vq:
                    continue
                new = clone(plan)
                n2 = nps_of(new)
                setattr(n2[p], a, vq)
                setattr(n2[q], a, vp)
                post = a in nps[p].post and a in nps[q].post
                objs = sorted(set(referents(nps[p], scene)) | set(referents(nps[q], scene)))
                out[WORD_ORDER if post else SWAP_TYPES[a]].append((new, objs))
    # Counts and absent kinds, per mention.
    for p, np in enumerate(nps):
        objs = referents(np, scene)
        for c in (np.count - 1, np.count + 1):
            if c in lx.NUMBER_WORDS:
                new = clone(plan)
                nps_of(new)[p].count = c
                out[COUNT].append((new, objs))
        stated = [a for a in ("shape", "colour") if getattr(np, a) is not None]
        for _ in range(12):
            new_vals = {a: rng.choice(ATTRIBUTE_VALUES[a]) for a in stated}
            if any(new_vals[a] == getattr(np, a) for a in stated):
                continue
            new = clone(plan)
            changed = nps_of(new)[p]
            for a, v in new_vals.items():
                setattr(changed, a, v)
            if referents(changed, scene):  # the new mention must describe no object at all
                continue
            out[ABSENT].append((new, objs))
            break
    # Relations, orders, positions, totals, backgrounds.
    for k, item in enumerate(plan):
        if isinstance(item, Relation):
            objs = referents(item.a, scene) + referents(item.b, scene)
            if item.rel not in lx.SYMMETRIC_RELATIONS:
                new = clone(plan)
                new[k].a, new[k].b = new[k].b, new[k].a
                out[RELATION_SWAP].append((new, objs))
            new = clone(plan)
            new[k].rel = lx.OPPOSITE_RELATION[item.rel]
            out[RELATION_OPPOSITE].append((new, objs))
        elif isinstance(item, Order):
            objs = [r for np in item.nps for r in referents(np, scene)]
            for j in range(len(item.nps) - 1):
                new = clone(plan)
                seq = new[k].nps
                seq[j], seq[j + 1] = seq[j + 1], seq[j]
                out[RELATION_SWAP].append((new, objs))
            new = clone(plan)
            new[k].reverse = not item.reverse
            out[RELATION_OPPOSITE].append((new, objs))
        elif isinstance(item, At):
            cell = tuple(_FLIP.get(x, x) for x in item.cell)
            if cell != tuple(item.cell):
                new = clone(plan)
                new[k].cell = cell
                out[RELATION_OPPOSITE].append((new, referents(item.np, scene)))
        elif isinstance(item, Total):
            for c in (item.count - 1, item.count + 1):
                if c in lx.NUMBER_WORDS:
                    new = clone(plan)
                    new[k].count = c
                    out[COUNT].append((new, list(range(len(scene.objects)))))
        elif isinstance(item, BackgroundIs):
            options: list[tuple[str, str]] = []
            tones = [t for t, w in cfg.background_tones.items() if w > 0 and t != "mid"]
            if item.tone in ("dark", "light"):
                options += [("tone", t) for t in tones if t != item.tone]
            if item.hue is not None:
                tone = item.tone or scene.background.tone
                hues = hues_for_tone(tone) if cfg.background_grey_p < 1 else ("grey",)
                options += [("hue", h) for h in hues if h != item.hue]
            if item.texture is not None:
                textures = [t for t, w in cfg.background_textures.items() if w > 0]
                options += [("texture", t) for t in textures if t != item.texture]
            if options:
                attr, value = rng.choice(options)
                new = clone(plan)
                setattr(new[k], attr, value)
                out[BACKGROUND].append((new, []))
    return out


def typed_negatives(
    caption: Caption,
    scene: Scene,
    rng: random.Random,
    config: WorldConfig | None = None,
    types: tuple[str, ...] = NEGATIVE_TYPES,
) -> list[Negative]:
    """At most one negative per type (in :data:`NEGATIVE_TYPES` order) for ``caption``, each
    checked FALSE for ``scene`` by the truth evaluator and different from the caption's text."""
    cfg = config or _DEFAULT
    if not caption.plan:
        raise ToyWorldError("this caption has no plan (regenerate the scene to get one)")
    cands = _candidates(caption.plan, scene, rng, cfg)
    out = []
    for t in types:
        options = cands.get(t, [])
        rng.shuffle(options)
        for plan, objs in options:
            if holds(plan, scene, cfg):
                continue
            neg = realise(plan, scene, caption.template)
            if neg.text != caption.text:
                out.append(Negative(t, neg, objs))
                break
    return out


# ----------------------------------------------------------------------------------------------
# Distractor scenes
# ----------------------------------------------------------------------------------------------


@dataclass
class Distractor:
    """A modified scene, what changed (``change``, a JSON-able record that
    :func:`apply_change` replays) and which captions of the original it makes false."""

    type: str
    scene: Scene
    change: dict[str, Any]
    false_captions: list[int]

    def to_record(self) -> dict[str, Any]:
        return {**self.change, "false_captions": self.false_captions}


def apply_change(scene: Scene, change: dict[str, Any]) -> Scene:
    """The scene ``change`` describes (same background and seed; boxes recomputed)."""
    t = change.get("type")
    if t == MIRROR:
        return mirror_scene(scene)
    new = scene.copy()
    if t in (COLOUR_SWAP, SHAPE_SWAP):
        i, j = change["objects"]
        a, b = new.objects[i], new.objects[j]
        if t == COLOUR_SWAP:
            a.colour, b.colour = b.colour, a.colour
            a.rgb, b.rgb = b.rgb, a.rgb
        else:
            a.shape, b.shape = b.shape, a.shape
    elif t == REMOVE:
        del new.objects[int(change["object"])]
    elif t == ADD:
        new.objects.append(ToyObject(**{**change["object"], "box": [0.0] * 4}))
    else:
        raise ToyWorldError(f"unknown distractor type {t!r}; expected {DISTRACTOR_TYPES}")
    update_layout(new)
    return new


def make_distractors(
    scene: Scene,
    captions: list[Caption],
    rng: random.Random,
    config: WorldConfig | None = None,
) -> list[Distractor]:
    """One distractor per type that applies (valid by the world's rules), with the indices of
    ``captions`` that are false for it."""
    cfg = config or _DEFAULT
    n = len(scene.objects)
    changes: list[dict[str, Any]] = [{"type": MIRROR}]
    for t, attr in ((COLOUR_SWAP, "colour"), (SHAPE_SWAP, "shape")):
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
                 if scene.objects[i].value(attr) != scene.objects[j].value(attr)]  # fmt: skip
        rng.shuffle(pairs)
        for i, j in pairs[:6]:
            ch = {"type": t, "objects": [i, j]}
            if not scene_problems(apply_change(scene, ch), cfg):
                changes.append(ch)
                break
    grown = scene.copy()
    obj = place_object(grown, cfg, rng)
    if obj is not None:
        rec = {k: v for k, v in obj.__dict__.items() if k not in ("box", "visible")}
        changes.append({"type": ADD, "object": copy.deepcopy(rec)})
    if n >= 2:
        changes.append({"type": REMOVE, "object": rng.randrange(n)})
    out = []
    for ch in changes:
        new = apply_change(scene, ch)
        false = [k for k, c in enumerate(captions) if not holds(c.plan, new, cfg)]
        out.append(Distractor(ch["type"], new, ch, false))
    return out


__all__ = [
    "NEGATIVE_TYPES",
    "DISTRACTOR_TYPES",
    "SWAP_TYPES",
    "COLOUR_SWAP",
    "SHAPE_SWAP",
    "SIZE_SWAP",
    "PATTERN_SWAP",
    "WORD_ORDER",
    "RELATION_SWAP",
    "RELATION_OPPOSITE",
    "COUNT",
    "ABSENT",
    "BACKGROUND",
    "MIRROR",
    "ADD",
    "REMOVE",
    "Negative",
    "Distractor",
    "typed_negatives",
    "make_distractors",
    "apply_change",
]
