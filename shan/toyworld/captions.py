"""Captions with grounding: a small grammar from scene facts to words.

Every caption is made in two steps: a *plan* (what it claims, :mod:`shan.toyworld.meaning`) is
chosen from the scene, then :func:`realise` says it, recording for every token the objects it
refers to and its role (:data:`shan.toyworld.lexicon.ROLES`). Captions contain no punctuation, so
:func:`shan.data.vocab.tokenize` returns exactly ``Caption.tokens``.

Caption forms (``WorldConfig.caption_weights``): ``list`` (every or most objects, counts for
objects of the same kind), ``count`` (how many shapes), ``relation`` (left/right/above/below with a
clear gap, next to / far from, in front of / behind), ``background`` (tone, hue, texture), ``fact``
("all shapes are striped", "the only red object is a circle"), ``position`` (grid cell), ``order``
("from left to right ..."). Attributes go before the noun ("a large red circle"), after it ("a
circle that is large and red") or are coordinated ("a red and striped circle"). Referring
expressions of relations, positions and orders pick out one object.

Caption 0 of every scene (``list_all``) mentions every object, singly where the scene allows; the
first hard negative is made from it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shan.toyworld import lexicon as lx
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
    nps_of,
)
from shan.toyworld.truth import referents
from shan.toyworld.world import (
    CAPTION_FORMS,
    Scene,
    ToyWorldError,
    WorldConfig,
    _weighted,
    cell_of,
    relation_holds,
)

TEMPLATES = ("list_all", *CAPTION_FORMS)
_ADJ_ORDER = ("size", "pattern", "colour")  # adjectives before the noun, in this order


@dataclass
class Caption:
    """A caption with per-token grounding.

    ``tokens[j]`` is the j-th token of ``tokenize(text)``; ``token_objects[j]`` lists the indices of
    the objects the token refers to (empty for function and background words); ``token_roles[j]``
    is one of :data:`shan.toyworld.lexicon.ROLES`. ``plan`` is what the caption claims (not saved
    in annotations; regenerate the scene to get it).
    """

    text: str
    tokens: list[str]
    token_objects: list[list[int]]
    token_roles: list[str]
    template: str = ""
    plan: list = field(default_factory=list, repr=False, compare=False)

    def to_record(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "token_objects": self.token_objects,
            "token_roles": self.token_roles,
            "template": self.template,
        }


# ----------------------------------------------------------------------------------------------
# Saying a plan
# ----------------------------------------------------------------------------------------------


class _Builder:
    """Accumulates tokens with their grounding while a caption is said."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.objects: list[list[int]] = []
        self.roles: list[str] = []

    def words(self, text: str | Sequence[str], objs: Sequence[int] = (), role: str = "") -> None:
        for w in text.split() if isinstance(text, str) else text:
            self.tokens.append(w)
            self.objects.append(sorted(objs))
            self.roles.append(role)


def plural(word: str) -> str:
    """Plural of a shape or generic noun (``crosses``, ``rhombuses``, ``circles``)."""
    return lx.PLURALS.get(word, lx.GENERIC_NOUNS.get(word, word + "s"))


def article(next_word: str) -> str:
    """``a`` or ``an`` by sound (``an orange``, ``a uniform``)."""
    return "an" if next_word[:1] in "aeiou" and not next_word.startswith("uni") else "a"


def attribute_word(attribute: str, value: str, chosen: dict[str, str]) -> str:
    """The word for ``value``: the chosen synonym if it names ``value``, else the first one."""
    options = lx.ATTRIBUTE_WORDS[attribute][value]
    w = chosen.get(attribute)
    return w if w in options else options[0]


def _copula(count: int) -> str:
    return "is" if count == 1 else "are"


def _say_np(b: _Builder, np: NP, scene: Scene) -> list[int]:
    refs = referents(np, scene)
    stated = [a for a in _ADJ_ORDER if getattr(np, a) is not None]
    pre = [(attribute_word(a, getattr(np, a), np.words), a) for a in stated if a not in np.post]
    post = [(attribute_word(a, getattr(np, a), np.words), a) for a in stated if a in np.post]
    if np.shape is not None:
        noun, noun_role = attribute_word("shape", np.shape, np.words), "shape"
    else:
        noun, noun_role = np.generic, "noun"
    if np.count != 1:
        noun = plural(noun)
    if np.count == 1:
        b.words("the" if np.definite else article(pre[0][0] if pre else noun), refs, "det")
    else:
        b.words(lx.NUMBER_WORDS.get(np.count, str(np.count)), refs, "count")
    for k, (w, role) in enumerate(pre):
        if np.coord and k == len(pre) - 1 and k > 0:
            b.words("and")
        b.words(w, refs, role)
    b.words(noun, refs, noun_role)
    if post:
        b.words([np.pronoun, _copula(np.count)])
        for k, (w, role) in enumerate(post):
            if k == len(post) - 1 and k > 0:
                b.words("and")
            b.words(w, refs, role)
    return refs


def _position_words(cell: Sequence[str]) -> list[str]:
    row, col = cell
    if row == "middle" and col == "center":
        return ["in", "the", "center"]
    if row == "middle":
        return ["on", "the", col]
    if col == "center":
        return ["at", "the", row]
    return ["in", "the", row, col, "corner"]


def _say_background(b: _Builder, item: BackgroundIs) -> None:
    colour = []
    if item.tone is not None and lx.BACKGROUND_TONE_WORDS[item.tone]:
        colour.append(lx.BACKGROUND_TONE_WORDS[item.tone][0])
    if item.hue is not None:
        options = lx.BACKGROUND_HUE_WORDS[item.hue]
        colour.append(item.words.get("hue") if item.words.get("hue") in options else options[0])
    texture = []
    if item.texture is not None:
        options = lx.BACKGROUND_TEXTURE_WORDS[item.texture]
        w = item.words.get("texture")
        texture.append(w if w in options else options[0])
    if item.copula:
        b.words(["the"])
        b.words(lx.BACKGROUND_NOUN, role="background")
        b.words(["is"])
        b.words(colour, role="background")
        if colour and texture:
            b.words(["and"])
        b.words(texture, role="background")
    else:
        adjs = texture + colour if item.words.get("order") == "texture_first" else colour + texture
        b.words(["on", article(adjs[0] if adjs else lx.BACKGROUND_NOUN)])
        b.words(adjs, role="background")
        b.words(lx.BACKGROUND_NOUN, role="background")


def _next_count(plan: Sequence[object], k: int) -> int:
    for item in plan[k + 1 :]:
        if isinstance(item, Total):
            return item.count
        nps = nps_of([item])
        if nps:
            return nps[0].count
    return 1


def realise(plan: Sequence[object], scene: Scene, template: str = "") -> Caption:
    """Say ``plan`` about ``scene``: the caption's tokens and each token's objects and role."""
    b = _Builder()
    everyone = list(range(len(scene.objects)))
    for k, item in enumerate(plan):
        if isinstance(item, Words):
            b.words(item.tokens, role=item.role)
        elif isinstance(item, There):
            b.words(["there", _copula(_next_count(plan, k))])
        elif isinstance(item, Exists):
            _say_np(b, item.np, scene)
        elif isinstance(item, Relation):
            refs_a = referents(item.a, scene)
            _say_np(b, item.a, scene)
            if item.copula:
                b.words(_copula(item.a.count))
            options = lx.RELATION_WORDS[item.rel]
            refs_b = referents(item.b, scene)
            b.words(options[item.variant % len(options)], refs_a + refs_b, "relation")
            _say_np(b, item.b, scene)
        elif isinstance(item, Total):
            b.words(lx.NUMBER_WORDS.get(item.count, str(item.count)), everyone, "count")
            b.words(item.noun if item.count != 1 else item.noun.rstrip("s"), everyone, "noun")
            if item.in_total:
                b.words("in")
                b.words("total", everyone, "scene")
        elif isinstance(item, BackgroundIs):
            _say_background(b, item)
        elif isinstance(item, AllAre):
            words = lx.ATTRIBUTE_WORDS[item.attribute][item.value]
            value_word = item.word if item.word in words else words[0]
            b.words("every" if item.every else "all", everyone, "scene")
            b.words("shape" if item.every else "shapes", everyone, "noun")
            b.words("is" if item.every else "are")
            b.words(value_word, everyone, item.attribute)
        elif isinstance(item, OnlyOne):
            refs = [i for i, o in enumerate(scene.objects) if o.value(item.attribute) == item.value]
            b.words("the", refs, "det")
            b.words("only", refs, "scene")
            if item.attribute == "shape":
                b.words(attribute_word("shape", item.value, item.words), refs, "shape")
            else:
                chosen = {item.attribute: item.words.get("restrict", "")}
                b.words(attribute_word(item.attribute, item.value, chosen), refs, item.attribute)
                b.words(item.generic, refs, "noun")
            b.words("is")
            pred = item.predicate
            adjs = [(attribute_word(a, pred[a], item.words), a) for a in _ADJ_ORDER if a in pred]
            if "shape" in pred:
                shape_word = attribute_word("shape", pred["shape"], item.words)
                b.words(article(adjs[0][0] if adjs else shape_word), refs, "det")
                for w, role in adjs:
                    b.words(w, refs, role)
                b.words(shape_word, refs, "shape")
            else:
                for j, (w, role) in enumerate(adjs):
                    if j and j == len(adjs) - 1:
                        b.words("and")
                    b.words(w, refs, role)
        elif isinstance(item, At):
            refs = _say_np(b, item.np, scene)
            b.words(_position_words(item.cell), refs, "position")
        elif isinstance(item, Order):
            refs = [r for np in item.nps for r in referents(np, scene)]
            b.words(lx.ORDER_WORDS[(item.axis, item.reverse)], refs, "relation")
            for j, np in enumerate(item.nps):
                if j and item.connectives:
                    b.words(item.connectives[j - 1])
                _say_np(b, np, scene)
        else:
            raise ToyWorldError(f"not a caption plan item: {item!r}")
    return Caption(" ".join(b.tokens), b.tokens, b.objects, b.roles, template, list(plan))


# ----------------------------------------------------------------------------------------------
# Describing objects
# ----------------------------------------------------------------------------------------------


def _matching(scene: Scene, attrs: dict[str, str]) -> set[int]:
    return {
        i for i, o in enumerate(scene.objects) if all(o.value(a) == v for a, v in attrs.items())
    }


def _shared(scene: Scene, members: Sequence[int], attribute: str) -> str | None:
    values = {scene.objects[i].value(attribute) for i in members}
    return values.pop() if len(values) == 1 else None


def _exact_attrs(scene: Scene, members: Sequence[int]) -> dict[str, str] | None:
    """Smallest description (shape + colour [+ size] [+ pattern]) matching exactly ``members``."""
    o = scene.objects[members[0]]
    base = {"shape": o.shape, "colour": o.colour}
    target = set(members)
    for extra in ((), ("size",), ("pattern",), ("size", "pattern")):
        attrs = dict(base)
        for a in extra:
            v = _shared(scene, members, a)
            if v is None:
                break
            attrs[a] = v
        else:
            if _matching(scene, attrs) == target:
                return attrs
    return None


class _Describer:
    """Noun phrases for objects, with the caption's random choices of words and syntax."""

    def __init__(self, scene: Scene, rng: random.Random, cfg: WorldConfig) -> None:
        self.scene, self.rng, self.cfg = scene, rng, cfg
        self.full = cfg.grammar == "full"
        single = len(scene.objects) == 1  # say more about lone objects (else they look alike)
        self.p_size = 1.0 if single else cfg.p_size
        self.p_pattern = 1.0 if single else cfg.p_pattern

    def np(self, members: Sequence[int], attrs: dict[str, str], reduce: bool = False) -> NP:
        """An exact phrase for ``members`` from ``attrs``, with optional extra attributes, a
        generic noun or a dropped colour (``reduce``, full grammar), words and syntax."""
        rng, scene = self.rng, self.scene
        attrs = dict(attrs)
        target = set(members)
        for a, p in (("size", self.p_size), ("pattern", self.p_pattern)):
            v = _shared(scene, members, a)
            if a not in attrs and v is not None and rng.random() < p:
                attrs[a] = v
        if self.full and reduce and rng.random() < 2 * self.cfg.p_generic:
            drop = rng.choice(["shape", "colour"])
            rest = {a: v for a, v in attrs.items() if a != drop}
            if rest and _matching(scene, rest) == target and ("shape" in rest or "colour" in rest):
                attrs = rest
        np = NP(
            **{a: attrs.get(a) for a in ("shape", "colour", "size", "pattern")},
            count=len(members),
        )
        for a, v in attrs.items():
            np.words[a] = rng.choice(lx.ATTRIBUTE_WORDS[a][v])
        if self.full:
            np.generic = rng.choice(list(lx.GENERIC_NOUNS))
            np.pronoun = rng.choice(lx.RELATIVE_PRONOUNS)
            adjs = [a for a in _ADJ_ORDER if getattr(np, a) is not None]
            r = rng.random()
            if adjs and r < self.cfg.p_post:
                k = rng.randint(1, len(adjs))
                np.post = tuple(a for a in adjs if a in rng.sample(adjs, k))
            elif len(adjs) >= 2 and r < self.cfg.p_post + self.cfg.p_coord:
                np.coord = True
        return np

    def unique(self, i: int, definite: bool = False) -> NP | None:
        attrs = _exact_attrs(self.scene, [i])
        if attrs is None:
            return None
        np = self.np([i], attrs, reduce=True)
        np.definite = definite
        return np

    def cover(self, members: Sequence[int], singly: bool = False) -> list[NP]:
        """Exact phrases for ``members`` (objects of one kind merged into a count, split by size
        or pattern, or one by one — one by one first when ``singly``); objects that cannot be
        described without also describing a non-member are left out."""
        scene, rng = self.scene, self.rng
        kinds: dict[tuple[str, str], list[int]] = {}
        for i in members:
            kinds.setdefault(scene.objects[i].kind(), []).append(i)
        out: list[NP] = []
        for group in kinds.values():
            options: list[list[tuple[list[int], dict[str, str]]]] = []
            merged = _exact_attrs(scene, group)
            singles = [(i, _exact_attrs(scene, [i])) for i in group] if len(group) > 1 else []
            if len(group) > 1 and all(a is not None for _, a in singles):
                options.append([([i], a) for i, a in singles])
            for a in ("size", "pattern"):
                parts: dict[str, list[int]] = {}
                for i in group:
                    parts.setdefault(scene.objects[i].value(a), []).append(i)
                if 1 < len(parts) < len(group):
                    split = [(p, _exact_attrs(scene, p)) for p in parts.values()]
                    if all(x is not None for _, x in split):
                        options.append(split)
            if merged is not None and not (singly and options):
                options.append([(group, merged)])
            if not options:  # describe who can be described alone
                options.append([([i], a) for i, a in singles if a is not None])
            for part, attrs in rng.choice(options):
                out.append(self.np(part, attrs))
        return out


# ----------------------------------------------------------------------------------------------
# Caption forms
# ----------------------------------------------------------------------------------------------


class _Composer:
    def __init__(self, scene: Scene, rng: random.Random, cfg: WorldConfig) -> None:
        self.scene, self.rng, self.cfg = scene, rng, cfg
        self.full = cfg.grammar == "full"
        self.d = _Describer(scene, rng, cfg)
        self.n = len(scene.objects)

    # helpers --------------------------------------------------------------------------------
    def connective(self) -> tuple[str, ...]:
        return tuple(self.rng.choice(lx.CONNECTIVES[self.cfg.grammar]).split())

    def listing(self, nps: Sequence[NP]) -> list[object]:
        plan: list[object] = []
        for k, np in enumerate(nps):
            if k:
                plan.append(Words(self.connective()))
            plan.append(Exists(np))
        return plan

    def frame(self) -> list[object]:
        f = self.rng.choice(lx.FRAMES[self.cfg.grammar])
        if not f:
            return []
        return [There()] if f == "there" else [Words(tuple(f.split()))]

    def rest(self, members: Sequence[int]) -> list[object]:
        """``and there is ...`` for objects not yet mentioned (or nothing)."""
        nps = self.d.cover(members)
        if not nps:
            return []
        if self.full:
            return [Words(("and",)), There(), *self.listing(nps)]
        return [Words(tuple(self.rng.choice(["and", "and also", "with"]).split()))] + self.listing(
            nps
        )

    def most(self) -> list[int]:
        """All objects, in random order, sometimes leaving out one of a kind of its own."""
        order = list(range(self.n))
        self.rng.shuffle(order)
        if self.n >= 4 and self.rng.random() < 0.25:
            lone = [i for i in order if sum(o.kind() == self.scene.objects[i].kind()
                                            for o in self.scene.objects) == 1]  # fmt: skip
            if lone:
                order.remove(lone[-1])
        return order

    # forms ----------------------------------------------------------------------------------
    def list_all(self) -> list[object] | None:
        order = list(range(self.n))
        self.rng.shuffle(order)
        return self.frame() + self.listing(self.d.cover(order, singly=True))

    def list(self) -> list[object] | None:
        return self.frame() + self.listing(self.d.cover(self.most()))  # never empty: see cover

    def count(self) -> list[object] | None:
        lead = self.rng.choice(lx.COUNT_LEADS[self.cfg.grammar])
        noun = self.rng.choice(["shapes", "objects"])
        if not self.full and self.n == 1:
            noun = "shapes"  # the first grammar said "one shape", never "one object"
        listing = self.listing(self.d.cover(self.most()))
        plan: list[object] = []
        for part in lead.replace("{noun} in total", "{noun}+").split():
            if part == "{list}":
                plan += listing
            elif part == "{n}":
                plan.append(Total(self.n, noun))
            elif part == "{noun}+":
                plan[-1].in_total = True  # type: ignore[union-attr]
            elif part != "{noun}":
                plan.append(Words((part,)))
        if "{list}" not in lead:
            plan += listing
        return plan

    def relation(self) -> list[object] | None:
        rng, scene = self.rng, self.scene
        cands: list[tuple[int, int, str]] = []
        weights: list[float] = []
        for i in range(self.n):
            for j in range(self.n):
                if i == j:
                    continue
                for rel, w in self.cfg.relation_weights.items():
                    if w > 0 and relation_holds(rel, i, j, scene, self.cfg):
                        cands.append((i, j, rel))
                        weights.append(w)
        for _ in range(min(6, len(cands))):
            i, j, rel = cands[rng.choices(range(len(cands)), weights=weights)[0]]
            copula = self.full and rng.random() < 0.35
            a, b = self.d.unique(i, copula), self.d.unique(j, copula)
            if a is None or b is None:
                continue
            variant = rng.randrange(len(lx.RELATION_WORDS[rel]))
            plan = self.frame() if not copula else []
            plan.append(Relation(a, rel, b, variant, copula))
            others = [k for k in self.most() if k not in (i, j)]
            return plan + self.rest(others)
        return None

    def background(self) -> list[object] | None:
        rng, bg = self.rng, self.scene.background
        if self.full:
            fields = ["hue", "texture"] + (["tone"] if bg.tone != "mid" else [])
            keep = set(rng.sample(fields, rng.randint(1, len(fields))))
            if "tone" in keep:
                keep.add("hue")
            item = BackgroundIs(
                tone=bg.tone if "tone" in keep else None,
                hue=bg.hue if "hue" in keep else None,
                texture=bg.texture if "texture" in keep else None,
                copula=rng.random() < 0.4,
            )
            item.words["hue"] = rng.choice(lx.BACKGROUND_HUE_WORDS[bg.hue])
        else:
            item = BackgroundIs(texture=bg.texture)
        item.words["texture"] = rng.choice(lx.BACKGROUND_TEXTURE_WORDS[bg.texture])
        listing = self.listing(self.d.cover(self.most()))
        if item.copula:
            return listing + [Words(("and",)), item]
        if rng.random() < 0.5:
            return [item, There()] + listing
        return listing + [item]

    def fact(self) -> list[object] | None:
        if not self.full:
            return None
        rng, scene = self.rng, self.scene
        facts: list[list[object]] = []
        for a in ("pattern", "size", "colour"):
            v = _shared(scene, range(self.n), a)
            if v is not None and self.n >= 2:
                item = AllAre(a, v, every=rng.random() < 0.3)
                item.word = rng.choice(lx.ATTRIBUTE_WORDS[a][v])
                facts.append(self.listing(self.d.cover(self.most())) + [Words(("and",)), item])
        for a, predicate_attrs in (
            ("colour", ("shape",)),
            ("shape", ("colour",)),
            ("pattern", ("colour", "shape")),
            ("size", ("colour", "shape")),
        ):
            values: dict[str, list[int]] = {}
            for i, o in enumerate(scene.objects):
                values.setdefault(o.value(a), []).append(i)
            lone = [(v, m[0]) for v, m in values.items() if len(m) == 1]
            if not lone or self.n < 2:
                continue
            v, i = rng.choice(lone)
            o = scene.objects[i]
            item = OnlyOne(a, v, {p: o.value(p) for p in predicate_attrs})
            item.generic = rng.choice(["object", "shape"])
            item.words = {p: rng.choice(lx.ATTRIBUTE_WORDS[p][o.value(p)]) for p in predicate_attrs}
            if a == "shape":
                item.words["shape"] = rng.choice(lx.ATTRIBUTE_WORDS["shape"][v])
            else:
                item.words["restrict"] = rng.choice(lx.ATTRIBUTE_WORDS[a][v])
            facts.append([item] + self.rest([k for k in self.most() if k != i]))
        return rng.choice(facts) if facts else None

    def position(self) -> list[object] | None:
        plan: list[object] = []
        placed: list[int] = []
        for i in self.most():
            cell = cell_of(self.scene.objects[i], self.scene.image_size, self.cfg.cell_margin)
            np = self.d.unique(i)
            if cell is None or np is None:
                continue
            if plan:
                plan.append(Words(self.connective()))
            plan.append(At(np, cell))
            placed.append(i)
        if not plan:
            return None
        return self.frame() + plan + self.rest([k for k in self.most() if k not in placed])

    def order(self) -> list[object] | None:
        rng, scene = self.rng, self.scene
        axis = rng.choice(["x", "y"])
        reverse = self.full and rng.random() < 0.3
        rel = {("x", False): "left", ("x", True): "right", ("y", False): "above"}.get(
            (axis, reverse), "below"
        )
        k = 0 if axis == "x" else 1
        ordered = sorted(
            range(self.n), key=lambda i: scene.objects[i].box[k] + scene.objects[i].box[k + 2]
        )
        if reverse:
            ordered.reverse()
        chain: list[int] = []
        for i in ordered:
            if self.d.unique(i) is None:
                continue
            if not chain or relation_holds(rel, chain[-1], i, scene, self.cfg):
                chain.append(i)
        if len(chain) < 2:
            return None
        nps = [self.d.unique(i) for i in chain]
        conns = [self.connective() for _ in chain[1:]]
        item = Order(axis, reverse, nps, conns)  # type: ignore[arg-type]
        return [item] + self.rest([i for i in self.most() if i not in chain])


def make_caption(scene: Scene, rng: random.Random, template: str | None = None,
                 config: WorldConfig | None = None) -> Caption | None:  # fmt: skip
    """One caption of ``scene`` in form ``template`` (weighted random if ``None``); ``None`` when
    the form does not apply to this scene (e.g. a relation with one object)."""
    cfg = config or WorldConfig()
    if not scene.objects:
        raise ToyWorldError("a scene needs at least one object to be captioned")
    comp = _Composer(scene, rng, cfg)
    if template is None:
        template = _weighted(rng, cfg.caption_weights)
    if template not in TEMPLATES:
        raise ToyWorldError(f"unknown caption template {template!r}; expected {TEMPLATES}")
    plan = getattr(comp, template)()
    if plan is None:
        return None
    return realise(plan, scene, template)


def make_captions(scene: Scene, rng: random.Random, config: WorldConfig | None = None,
                  num: int | None = None) -> list[Caption]:  # fmt: skip
    """``num`` distinct captions (``config.num_captions`` by default); caption 0 is ``list_all``."""
    cfg = config or WorldConfig()
    num = cfg.num_captions if num is None else num
    caps = [make_caption(scene, rng, "list_all", cfg)]
    seen = {caps[0].text}
    tries = 0
    while len(caps) < num:
        tries += 1
        # A listing always applies: the fallback when the weighted forms do not fit the scene.
        cap = make_caption(scene, rng, None if tries <= 100 else "list", cfg)
        if cap is None:
            continue
        if cap.text not in seen or tries > 60:
            seen.add(cap.text)
            caps.append(cap)
    return caps  # type: ignore[return-value]


__all__ = [
    "TEMPLATES",
    "Caption",
    "realise",
    "make_caption",
    "make_captions",
    "plural",
    "article",
]
