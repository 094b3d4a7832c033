"""The truth evaluator: does a caption's plan hold in a scene?

Used to check every generated caption (true), every typed negative (false) and every distractor
scene (which captions it falsifies). It reads only the scene's ground truth — objects' attributes,
visible boxes, drawing order, background — never how the plan was made.
"""

from __future__ import annotations

from collections.abc import Sequence

from shan.toyworld.meaning import (
    NP,
    AllAre,
    At,
    BackgroundIs,
    Exists,
    OnlyOne,
    Order,
    Relation,
    There,
    Total,
    Words,
)
from shan.toyworld.world import Scene, ToyWorldError, WorldConfig, cell_of, relation_holds

_DEFAULT = WorldConfig()


def referents(np: NP, scene: Scene) -> list[int]:
    """Indices of the objects ``np`` describes (all that match its stated attributes)."""
    return [i for i, o in enumerate(scene.objects) if np.matches(o)]


def _exact(np: NP, scene: Scene) -> list[int] | None:
    refs = referents(np, scene)
    return refs if len(refs) == np.count else None


def claim_holds(item: object, scene: Scene, cfg: WorldConfig = _DEFAULT) -> bool:
    """Truth of one plan item (literal words are always true)."""
    if isinstance(item, (Words, There)):
        return True
    if isinstance(item, Exists):
        return _exact(item.np, scene) is not None
    if isinstance(item, Relation):
        a, b = _exact(item.a, scene), _exact(item.b, scene)
        if a is None or b is None or set(a) & set(b):
            return False
        return all(relation_holds(item.rel, i, j, scene, cfg) for i in a for j in b)
    if isinstance(item, Total):
        return len(scene.objects) == item.count
    if isinstance(item, BackgroundIs):
        bg = scene.background
        return all(
            want is None or want == have
            for want, have in ((item.tone, bg.tone), (item.hue, bg.hue), (item.texture, bg.texture))
        )
    if isinstance(item, AllAre):
        return len(scene.objects) >= 2 and all(
            o.value(item.attribute) == item.value for o in scene.objects
        )
    if isinstance(item, OnlyOne):
        hits = [o for o in scene.objects if o.value(item.attribute) == item.value]
        return len(hits) == 1 and all(hits[0].value(a) == v for a, v in item.predicate.items())
    if isinstance(item, At):
        refs = _exact(item.np, scene)
        return refs is not None and all(
            cell_of(scene.objects[i], scene.image_size, cfg.cell_margin) == tuple(item.cell)
            for i in refs
        )
    if isinstance(item, Order):
        seq = [_exact(np, scene) for np in item.nps]
        if any(r is None or len(r) != 1 for r in seq) or len({r[0] for r in seq}) != len(seq):
            return False
        rel = {("x", False): "left", ("x", True): "right", ("y", False): "above"}.get(
            (item.axis, item.reverse), "below"
        )
        return all(
            relation_holds(rel, seq[k][0], seq[k + 1][0], scene, cfg) for k in range(len(seq) - 1)
        )
    raise ToyWorldError(f"not a caption plan item: {item!r}")


def holds(plan: Sequence[object], scene: Scene, cfg: WorldConfig = _DEFAULT) -> bool:
    """Whether every claim of ``plan`` is true in ``scene``."""
    return all(claim_holds(item, scene, cfg) for item in plan)


__all__ = ["referents", "claim_holds", "holds"]
