"""What a caption claims: noun phrases and claims, the structure behind every caption's words.

A caption is a *plan*: a list of items, each either literal words (:class:`Words`,
:class:`There`) or a claim about the scene (:class:`Exists`, :class:`Relation`, :class:`Total`,
:class:`BackgroundIs`, :class:`AllAre`, :class:`OnlyOne`, :class:`At`, :class:`Order`). The
caption is true iff every claim holds (:func:`shan.toyworld.truth.holds`);
:mod:`shan.toyworld.captions` turns a plan into grounded tokens. Typed negatives edit a copy of the
plan and say it again with the same words.

Noun phrases have *exact* count semantics: ``NP(shape="circle", colour="red", count=2)`` ("two
red circles") claims that exactly two objects of the scene are red circles. So "a red circle" is
false in a scene with two red circles, and a count changed by one is always false.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shan.toyworld.world import ATTRIBUTES, ToyObject


@dataclass
class NP:
    """A noun phrase: the attributes it states, its number, and how it is said.

    ``post`` lists the attributes said after the noun ("a circle *that is red*"); ``coord`` joins
    the last two adjectives before the noun with "and" ("a red and striped circle"); ``words``
    holds the synonym chosen per attribute (kept when a negative changes the value, if it fits).
    A phrase without ``shape`` uses the generic noun ``generic`` ("a red shape").
    """

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    pattern: str | None = None
    count: int = 1
    definite: bool = False
    post: tuple[str, ...] = ()
    coord: bool = False
    pronoun: str = "that"
    generic: str = "shape"
    words: dict[str, str] = field(default_factory=dict)

    def stated(self) -> dict[str, str]:
        """The attributes this phrase states, ``{attribute: value}``."""
        return {a: getattr(self, a) for a in ATTRIBUTES if getattr(self, a) is not None}

    def matches(self, obj: ToyObject) -> bool:
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
            and (self.pattern is None or obj.pattern == self.pattern)
        )


@dataclass
class Words:
    """Literal words (connectives, frames) with their role (``""`` = function word)."""

    tokens: tuple[str, ...]
    role: str = ""


@dataclass
class There:
    """``there is`` / ``there are``, agreeing with the next noun phrase."""


@dataclass
class Exists:
    """The scene has exactly ``np.count`` objects matching ``np``."""

    np: NP


@dataclass
class Relation:
    """``a`` <rel> ``b``: both phrases exact, and the relation holds for every pair of referents.

    ``variant`` picks the wording (``to the left of`` / ``left of``); ``copula`` says it as a
    sentence ("the red circle is left of the blue star").
    """

    a: NP
    rel: str
    b: NP
    variant: int = 0
    copula: bool = False


@dataclass
class Total:
    """The scene has exactly ``count`` objects ("three shapes", "three shapes in total")."""

    count: int
    noun: str = "shapes"
    in_total: bool = False


@dataclass
class BackgroundIs:
    """The background has the stated tone / hue / texture (``None`` = not said)."""

    tone: str | None = None
    hue: str | None = None
    texture: str | None = None
    copula: bool = False
    words: dict[str, str] = field(default_factory=dict)


@dataclass
class AllAre:
    """Every object (at least two) has ``attribute == value`` ("all shapes are striped")."""

    attribute: str
    value: str
    every: bool = False
    word: str = ""


@dataclass
class OnlyOne:
    """Exactly one object has ``attribute == value`` and it has every ``predicate`` attribute
    ("the only red object is a circle")."""

    attribute: str
    value: str
    predicate: dict[str, str]
    generic: str = "object"
    words: dict[str, str] = field(default_factory=dict)


@dataclass
class At:
    """Every referent of ``np`` (exact) has its centre clearly in grid cell ``(row, column)``."""

    np: NP
    cell: tuple[str, str]


@dataclass
class Order:
    """The phrases (each exact, one object) appear in this order along ``axis`` (``x``: left to
    right, ``y``: top to bottom; ``reverse`` flips the direction), each clearly past the last."""

    axis: str
    reverse: bool
    nps: list[NP]
    connectives: list[tuple[str, ...]] = field(default_factory=list)


CLAIMS = (Exists, Relation, Total, BackgroundIs, AllAre, OnlyOne, At, Order)
Item = Words | There | Exists | Relation | Total | BackgroundIs | AllAre | OnlyOne | At | Order


def _shallow(obj):
    c = object.__new__(type(obj))
    c.__dict__.update(obj.__dict__)
    return c


def _clone_np(np: NP) -> NP:
    c = _shallow(np)
    c.words = dict(np.words)
    return c


def clone(plan: list) -> list:
    """A copy of ``plan`` whose items and noun phrases can be edited without touching ``plan``
    (much cheaper than ``copy.deepcopy``)."""
    out = []
    for item in plan:
        c = _shallow(item)
        if isinstance(c, (Exists, At)):
            c.np = _clone_np(c.np)
        elif isinstance(c, Relation):
            c.a, c.b = _clone_np(c.a), _clone_np(c.b)
        elif isinstance(c, Order):
            c.nps = [_clone_np(np) for np in c.nps]
            c.connectives = list(c.connectives)
        elif isinstance(c, (BackgroundIs, OnlyOne)):
            c.words = dict(c.words)
            if isinstance(c, OnlyOne):
                c.predicate = dict(c.predicate)
        out.append(c)
    return out


def nps_of(plan: list) -> list[NP]:
    """Every noun phrase of a plan, in caption order (references into the plan)."""
    out: list[NP] = []
    for item in plan:
        if isinstance(item, (Exists, At)):
            out.append(item.np)
        elif isinstance(item, Relation):
            out += [item.a, item.b]
        elif isinstance(item, Order):
            out += item.nps
    return out


__all__ = [
    "NP",
    "Words",
    "There",
    "Exists",
    "Relation",
    "Total",
    "BackgroundIs",
    "AllAre",
    "OnlyOne",
    "At",
    "Order",
    "CLAIMS",
    "nps_of",
    "clone",
]
