"""Toy-world captions, typed negatives and distractor scenes, checked against the scenes.

Every caption tokenizes to its grounded tokens, uses only listed words in their roles and is TRUE
(truth evaluator); referring expressions pick one object; relations hold with their margin; every
typed negative is FALSE and differs from its caption only where its type says; distractor scenes
differ from their scene as stated and the captions they falsify are exactly those the evaluator
rejects.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from shan import toyworld as tw
from shan.data.vocab import tokenize
from shan.toyworld import lexicon as lx
from shan.toyworld import negatives as ng
from shan.toyworld.captions import plural, realise
from shan.toyworld.meaning import NP, At, Exists, Order, Relation, Words, nps_of
from shan.toyworld.truth import holds, referents

CFG = tw.WorldConfig()
SEEDS = [tw.image_seed(5, "train", i) for i in range(150)]


@pytest.fixture(scope="module")
def scenes():
    return [tw.generate_scene(s)[1] for s in SEEDS]


def _attribute_words(role: str, value: str) -> list[str]:
    forms = lx.ATTRIBUTE_WORDS[role][value]
    return forms + [plural(f) for f in forms] if role == "shape" else forms


def test_captions_tokenize_and_ground_consistently(scenes):
    vocab = lx.vocabulary_by_role("full")
    for scene in scenes:
        assert len(scene.captions) == 5
        assert len({c.text for c in scene.captions}) == 5
        assert scene.captions[0].template == "list_all"
        for cap in scene.captions:
            assert tokenize(cap.text) == cap.tokens
            assert len(cap.token_objects) == len(cap.tokens) == len(cap.token_roles)
            for word, objs, role in zip(cap.tokens, cap.token_objects, cap.token_roles):
                assert role in lx.ROLES
                assert word in vocab[role], (word, role, cap.text)
                assert all(0 <= o < len(scene.objects) for o in objs)
                if role in ("shape", "colour", "size", "pattern"):
                    assert objs, (cap.text, word)
                    for o in objs:
                        value = scene.objects[o].value(role)
                        assert word in _attribute_words(role, value), (cap.text, word, value)
                if role in ("det", "count", "noun", "relation", "position", "scene"):
                    assert objs, (cap.text, word, role)
                if role == "relation":
                    assert len(objs) >= 2
                if role in ("", "background"):
                    assert not objs


def test_caption_0_mentions_every_object(scenes):
    for scene in scenes:
        cap = scene.captions[0]
        shown = {o for objs, r in zip(cap.token_objects, cap.token_roles) if r == "shape"
                 for o in objs}  # fmt: skip
        assert shown == set(range(len(scene.objects))), cap.text


def test_every_caption_is_true_and_says_its_plan(scenes):
    for scene in scenes:
        for cap in scene.captions:
            assert holds(cap.plan, scene, CFG), cap.text
            assert realise(cap.plan, scene, cap.template).text == cap.text


def test_referring_expressions_are_unique_and_relations_clear(scenes):
    margin = CFG.relation_gap * tw.IMAGE_SIZE
    seen = Counter()
    for scene in scenes:
        for cap in scene.captions:
            for item in cap.plan:
                if isinstance(item, (Relation, At, Order)):
                    for np_ in nps_of([item]):
                        assert np_.count == 1 and len(referents(np_, scene)) == 1, cap.text
                if not isinstance(item, Relation):
                    continue
                seen[item.rel] += 1
                (i,), (j,) = referents(item.a, scene), referents(item.b, scene)
                a, b = scene.objects[i].box, scene.objects[j].box
                # Measured here from the boxes, not through the generator's predicate.
                gap = {
                    "left": b[0] - a[2],
                    "right": a[0] - b[2],
                    "above": b[1] - a[3],
                    "below": a[1] - b[3],
                }
                if item.rel in gap:
                    assert gap[item.rel] >= margin, cap.text
                    opposite = lx.OPPOSITE_RELATION[item.rel]
                    assert gap[opposite] < 0, cap.text  # the opposite is plainly false
                elif item.rel in ("next_to", "far_from"):
                    dx = max(0.0, b[0] - a[2], a[0] - b[2])
                    dy = max(0.0, b[1] - a[3], a[1] - b[3])
                    dist = float(np.hypot(dx, dy)) / tw.IMAGE_SIZE
                    if item.rel == "next_to":
                        assert dist <= CFG.near < CFG.far, cap.text
                    else:
                        assert dist >= CFG.far, cap.text
                elif item.rel == "in_front_of":
                    assert i > j and tw.world.hidden_by(scene, j, i) > 0.02
                elif item.rel == "behind":
                    assert j > i and tw.world.hidden_by(scene, i, j) > 0.02
    assert {"left", "right", "above", "below", "next_to"} <= set(seen), seen


def test_varied_syntax_counts_and_scene_facts_occur(scenes):
    texts = [c.text for s in scenes for c in s.captions]
    joined = "\n".join(texts)
    needles = [" that is ", " which is ", " that are ", " in front of ", " behind ", " two ",
               "all shapes are", "the only ", " background", "from left to right"]  # fmt: skip
    for needle in needles:
        assert needle in joined, needle
    templates = Counter(c.template for s in scenes for c in s.captions)
    assert set(templates) == set(tw.TEMPLATES), templates
    # Pre-nominal coordination ("a red and striped circle").
    assert any(np_.coord for s in scenes for c in s.captions for np_ in nps_of(c.plan))


def test_only_a_few_function_words_are_frequent(scenes):
    share = Counter()
    n = 0
    for scene in scenes:
        for cap in scene.captions:
            n += 1
            share.update({w for w, r in zip(cap.tokens, cap.token_roles) if r == ""})
    frequent = {w for w, k in share.items() if k / n > 0.10}
    assert frequent <= lx.FREQUENT_FUNCTION_WORDS, {w: share[w] / n for w in frequent}
    assert len(lx.FREQUENT_FUNCTION_WORDS) <= 10


def _scene(*objects: tuple[str, str, str]) -> tw.Scene:
    """A built scene of (shape, colour, grid cell) objects on a light grey background."""
    return tw.build_scene(
        {"objects": [{"shape": a, "colour": b, "cell": c} for a, b, c in objects]}
    )


def test_exact_count_semantics():
    scene = _scene(("circle", "red", "top left"), ("circle", "red", "bottom right"))
    one = [Exists(NP("circle", "red", count=1))]
    two = [Exists(NP("circle", "red", count=2))]
    assert not holds(one, scene) and holds(two, scene)
    assert realise(two, scene).text == "two red circles"
    assert realise([Words(("and",))] + one, scene).tokens == ["and", "a", "red", "circle"]


# ----------------------------------------------------------------------------------------------
# Typed negatives
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def negatives(scenes):
    rng = random.Random(0)
    return [
        (scene, cap, ng.typed_negatives(cap, scene, rng, CFG))
        for scene in scenes
        for cap in scene.captions
    ]


def _diff(a: list[str], b: list[str]) -> list[int]:
    return [k for k, (x, y) in enumerate(zip(a, b)) if x != y]


def test_every_negative_is_false_and_typed(negatives):
    kinds = Counter()
    for scene, cap, negs in negatives:
        types = [n.type for n in negs]
        assert len(types) == len(set(types))
        assert types == [t for t in ng.NEGATIVE_TYPES if t in types]  # canonical order
        for n in negs:
            kinds[n.type] += 1
            assert holds(cap.plan, scene, CFG)
            assert not holds(n.caption.plan, scene, CFG), (n.type, n.caption.text)
            assert n.caption.text != cap.text
            assert tokenize(n.caption.text) == n.caption.tokens
    assert set(kinds) == set(ng.NEGATIVE_TYPES), kinds


def test_negatives_change_only_what_their_type_says(negatives):
    for scene, cap, negs in negatives:
        for n in negs:
            new = n.caption.tokens
            if n.type in ng.SWAP_TYPES.values() or n.type == ng.WORD_ORDER:
                assert len(new) == len(cap.tokens)
                roles = {cap.token_roles[k] for k in _diff(cap.tokens, new)}
                swapped = {t: a for a, t in ng.SWAP_TYPES.items()}.get(n.type)
                allowed = {swapped, "det"} if swapped else {"colour", "size", "pattern", "det"}
                assert roles <= allowed and roles - {"det"}, (n.type, cap.text, n.caption.text)
            elif n.type == ng.RELATION_SWAP:
                assert sorted(new) == sorted(cap.tokens)
            elif n.type == ng.RELATION_OPPOSITE:
                if len(new) == len(cap.tokens):
                    roles = {cap.token_roles[k] for k in _diff(cap.tokens, new)}
                    assert roles <= {"relation", "position"}, (cap.text, n.caption.text)
            elif n.type == ng.COUNT:
                changed = [w for w in new if w in lx.NUMBER_WORDS.values()] != [
                    w for w in cap.tokens if w in lx.NUMBER_WORDS.values()
                ]
                assert changed or sum(w in ("a", "an") for w in new) != sum(
                    w in ("a", "an") for w in cap.tokens
                )
            elif n.type == ng.ABSENT:
                kinds = {o.kind() for o in scene.objects}
                mentioned = {(p.shape, p.colour) for p in nps_of(n.caption.plan)}
                assert any(k not in kinds and None not in k for k in mentioned) or any(
                    not referents(p, scene) for p in nps_of(n.caption.plan)
                )
            elif n.type == ng.BACKGROUND:
                roles = {cap.token_roles[k] for k in _diff(cap.tokens, new)}
                assert roles <= {"background", ""}


def test_word_order_negatives_swap_words_after_the_noun(negatives):
    found = 0
    for _, cap, negs in negatives:
        for n in negs:
            if n.type != ng.WORD_ORDER:
                continue
            found += 1
            for k in _diff(cap.tokens, n.caption.tokens):
                if cap.token_roles[k] == "det":
                    continue
                before = cap.tokens[max(0, k - 4) : k]
                assert "is" in before or "are" in before, (cap.text, k)
    assert found >= 10


def test_colour_swap_of_a_simple_pair():
    scene = _scene(("circle", "red", "left"), ("square", "blue", "right"))
    pre = [Exists(NP("circle", "red")), Words(("and",)), Exists(NP("square", "blue"))]
    post = [Exists(NP("circle", "red", post=("colour",))), Words(("and",)),
            Exists(NP("square", "blue", post=("colour",)))]  # fmt: skip
    cap = realise(pre, scene)
    negs = {n.type: n.caption.text for n in ng.typed_negatives(cap, scene, random.Random(1))}
    assert negs[ng.COLOUR_SWAP] == "a blue circle and a red square"
    assert negs[ng.SHAPE_SWAP] == "a red square and a blue circle"
    assert negs[ng.COUNT] in (
        "two red circles and a blue square",
        "a red circle and two blue squares",
    )
    cap2 = realise(post, scene)
    assert cap2.text == "a circle that is red and a square that is blue"
    negs2 = {n.type: n.caption.text for n in ng.typed_negatives(cap2, scene, random.Random(1))}
    assert negs2[ng.WORD_ORDER] == "a circle that is blue and a square that is red"
    assert ng.COLOUR_SWAP not in negs2
    rel = realise([Relation(NP("circle", "red"), "left", NP("square", "blue"), variant=1)], scene)
    assert rel.text == "a red circle left of a blue square" and holds(rel.plan, scene)
    negs3 = {n.type: n.caption.text for n in ng.typed_negatives(rel, scene, random.Random(1))}
    assert negs3[ng.RELATION_SWAP] == "a blue square left of a red circle"
    assert negs3[ng.RELATION_OPPOSITE] == "a red circle right of a blue square"


def test_a_swap_that_stays_true_is_not_a_negative():
    # Red circle + blue square + blue circle + red square: exchanging colours of the first two
    # mentions describes the other two objects, so it is true and must not be returned.
    scene = _scene(
        ("circle", "red", "top left"),
        ("square", "blue", "top right"),
        ("circle", "blue", "bottom left"),
        ("square", "red", "bottom right"),
    )
    cap = realise(
        [Exists(NP("circle", "red")), Words(("and",)), Exists(NP("square", "blue"))], scene
    )
    types = {n.type for n in ng.typed_negatives(cap, scene, random.Random(0))}
    assert ng.COLOUR_SWAP not in types and ng.SHAPE_SWAP not in types


def test_hard_negative_record_is_caption_0s_colour_swap(scenes):
    n = 0
    for scene in scenes:
        hn = scene.hard_negative
        if hn is None:
            assert ng.COLOUR_SWAP not in {x["type"] for x in scene.negatives[0]}
            continue
        n += 1
        assert hn["source_caption"] == 0 and hn["type"] == ng.COLOUR_SWAP
        assert {"type": hn["type"], "text": hn["text"]} in scene.negatives[0]
        src = scene.captions[0]
        roles = {src.token_roles[k] for k in _diff(src.tokens, hn["tokens"])}
        assert roles <= {"colour", "det"} and "colour" in roles
    assert n > len(scenes) / 2


# ----------------------------------------------------------------------------------------------
# Distractor scenes
# ----------------------------------------------------------------------------------------------


def _same_background(a: tw.Scene, b: tw.Scene) -> bool:
    ia, ib = np.asarray(tw.render_scene(a)), np.asarray(tw.render_scene(b))
    free = (tw.world.owner_map(a.objects, a.image_size) < 0) & (
        tw.world.owner_map(b.objects, b.image_size) < 0
    )
    return free.any() and np.array_equal(ia[free], ib[free])


def test_distractors_differ_as_stated(scenes):
    seen = Counter()
    for scene in scenes[:60]:
        for rec in scene.distractors:
            d = tw.apply_change(scene, rec)
            t = rec["type"]
            seen[t] += 1
            old, new = scene.objects, d.objects
            if t == ng.MIRROR:
                assert len(new) == len(old)
                for a, b in zip(old, new):
                    s = scene.image_size
                    assert b.frame == [s - a.frame[2], a.frame[1], s - a.frame[0], a.frame[3]]
                    assert (a.shape, a.colour, a.size, a.pattern) == (
                        b.shape,
                        b.colour,
                        b.size,
                        b.pattern,
                    )
            elif t in (ng.COLOUR_SWAP, ng.SHAPE_SWAP):
                attr = "colour" if t == ng.COLOUR_SWAP else "shape"
                i, j = rec["objects"]
                changed = [k for k in range(len(old)) if old[k].value(attr) != new[k].value(attr)]
                assert changed == [i, j]
                assert new[i].value(attr) == old[j].value(attr)
                assert new[j].value(attr) == old[i].value(attr)
                assert [o.frame for o in old] == [o.frame for o in new]
            elif t == ng.ADD:
                assert len(new) == len(old) + 1
                assert [o.kind() for o in new[:-1]] == [o.kind() for o in old]
            elif t == ng.REMOVE:
                assert len(new) == len(old) - 1
                k = rec["object"]
                assert [o.frame for o in new] == [o.frame for j, o in enumerate(old) if j != k]
                assert 0 in rec["false_captions"]  # caption 0 mentions every object
            assert not tw.scene_problems(d, CFG), (t, tw.scene_problems(d, CFG))
            assert _same_background(scene, d)
            false = [c for c, cap in enumerate(scene.captions) if not holds(cap.plan, d, CFG)]
            assert rec["false_captions"] == false
    assert set(seen) == set(ng.DISTRACTOR_TYPES), seen


def test_mirror_falsifies_left_right_captions():
    scene = _scene(("circle", "red", "left"), ("square", "blue", "right"))
    cap = realise([Relation(NP("circle", "red"), "left", NP("square", "blue"))], scene)
    listing = realise([Exists(NP("circle", "red"))], scene)
    d = ng.make_distractors(scene, [cap, listing], random.Random(0))
    mirror = next(x for x in d if x.type == ng.MIRROR)
    assert mirror.false_captions == [0]
