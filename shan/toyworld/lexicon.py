"""Every word the toy world's captions use, listed by role (the one place that lists them).

A caption token has one *role* (``Caption.token_roles``):

========== ======================================================================================
role        words
========== ======================================================================================
shape       a shape noun (``circle``, ``crosses``, ...) naming the objects it refers to
colour      an object colour adjective (``red``, ``turquoise``, ...)
size        ``small``/``large`` and synonyms
pattern     an object fill pattern (``striped``, ``dotted``, ``solid`` and synonyms)
noun        a generic noun standing for objects whose shape is not said (``shape``, ``objects``)
det         the article of a singular noun phrase (``a``, ``an``, ``the``)
count       a number word (``two`` red circles, ``three`` shapes)
relation    the words of a spatial relation between two objects (``to the left of``, ``behind``)
            or of an ordering (``from left to right``)
position    where one object is in the picture (``in the top left corner``)
background  a word about the background (``dark``, ``blue``, ``noisy``, ``background``)
scene       a quantifier of a scene-level fact (``all``, ``only``, ``total``)
``""``      a function word that refers to nothing (``and``, ``that``, ``is``, ``there``, ...)
========== ======================================================================================

:func:`vocabulary_by_role` returns the complete listing; the tests check that every generated token
appears in it under its role. Two grammars share these words: ``full`` (the current world) and
``classic`` (the first toy world's words only, so the first shipped model reads its captions).
"""

from __future__ import annotations

ROLES = (
    "shape",
    "colour",
    "size",
    "pattern",
    "noun",
    "det",
    "count",
    "relation",
    "position",
    "background",
    "scene",
    "",
)
"""Every value ``Caption.token_roles`` can take (``""`` = function word)."""

# Object attributes ------------------------------------------------------------------------------
SHAPE_WORDS: dict[str, list[str]] = {
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
COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red"],
    "orange": ["orange"],
    "yellow": ["yellow"],
    "green": ["green"],
    "cyan": ["cyan", "cyan", "turquoise"],
    "blue": ["blue"],
    "purple": ["purple", "purple", "violet"],
    "pink": ["pink"],
}
SIZE_WORDS: dict[str, list[str]] = {
    "small": ["small", "small", "little", "tiny"],
    "large": ["large", "large", "big"],
}
PATTERN_WORDS: dict[str, list[str]] = {
    "solid": ["solid", "filled"],
    "striped": ["striped", "stripy"],
    "dotted": ["dotted", "spotted"],
}
ATTRIBUTE_WORDS = {
    "shape": SHAPE_WORDS,
    "colour": COLOUR_WORDS,
    "size": SIZE_WORDS,
    "pattern": PATTERN_WORDS,
}
GENERIC_NOUNS = {"shape": "shapes", "object": "objects"}  # singular -> plural
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
ARTICLES = ("a", "an", "the")

# Backgrounds ------------------------------------------------------------------------------------
BACKGROUND_TEXTURE_WORDS: dict[str, list[str]] = {
    "plain": ["plain", "uniform"],
    "gradient": ["gradient", "fading"],
    "noise": ["noisy", "grainy"],
    "stripes": ["striped", "stripy"],
    "checks": ["checked", "checkered"],
}
BACKGROUND_TONE_WORDS: dict[str, list[str]] = {"dark": ["dark"], "mid": [], "light": ["light"]}
BACKGROUND_HUE_WORDS: dict[str, list[str]] = {"grey": ["grey"], **COLOUR_WORDS}
BACKGROUND_NOUN = "background"

# Relations, positions, order ------------------------------------------------------------------
RELATION_WORDS: dict[str, list[list[str]]] = {
    "left": [["to", "the", "left", "of"], ["left", "of"]],
    "right": [["to", "the", "right", "of"], ["right", "of"]],
    "above": [["above"], ["over"]],
    "below": [["below"], ["under"], ["beneath"]],
    "next_to": [["next", "to"], ["beside"]],
    "far_from": [["far", "from"]],
    "in_front_of": [["in", "front", "of"]],
    "behind": [["behind"]],
}
OPPOSITE_RELATION = {
    "left": "right",
    "right": "left",
    "above": "below",
    "below": "above",
    "next_to": "far_from",
    "far_from": "next_to",
    "in_front_of": "behind",
    "behind": "in_front_of",
}
SYMMETRIC_RELATIONS = frozenset({"next_to", "far_from"})
CLASSIC_RELATIONS = ("left", "right", "above", "below")
ORDER_WORDS = {
    ("x", False): ["from", "left", "to", "right"],
    ("x", True): ["from", "right", "to", "left"],
    ("y", False): ["from", "top", "to", "bottom"],
    ("y", True): ["from", "bottom", "to", "top"],
}
POSITION_WORDS = ("in", "at", "on", "the", "top", "bottom", "left", "right", "center", "corner")

# Scene-level facts ------------------------------------------------------------------------------
SCENE_WORDS = ("all", "every", "only", "total")

# Function words and frames ----------------------------------------------------------------------
FRAMES = {
    "full": ["", "", "", "", "", "", "there", "there", "a picture of", "an image of"],
    "classic": [
        "",
        "",
        "there",
        "we can see",
        "this picture shows",
        "an image with",
        "a scene with",
    ],
}
"""Caption openings (``"there"`` becomes ``there is`` / ``there are`` by agreement)."""
CONNECTIVES = {
    "full": ["and"],
    "classic": ["and", "and", "and", "plus", "as well as", "along with"],
}
COUNT_LEADS = {
    "full": [
        "{list} {n} {noun} in total",
        "{n} {noun} namely {list}",
        "a picture of {n} {noun} including {list}",
    ],
    "classic": [
        "a picture of {n} {noun} including",
        "{n} {noun} namely",
        "{list} {n} {noun} in total",
    ],
}
RELATIVE_PRONOUNS = ("that", "which")
COPULAS = ("is", "are")

FREQUENT_FUNCTION_WORDS = frozenset(
    {"a", "an", "the", "and", "of", "is", "are", "that", "which", "there"}
)
"""The only function words (role ``""``) allowed in more than 10 % of ``full`` captions."""


def _words_of(options) -> set[str]:
    out: set[str] = set()
    for o in options:
        out.update(o.split() if isinstance(o, str) else o)
    return out


def vocabulary_by_role(grammar: str = "full") -> dict[str, list[str]]:
    """Every word the ``grammar``'s captions can contain, per role (sorted lists).

    A word may appear under several roles (``left`` is a relation and a position word, ``striped``
    describes objects and backgrounds, ``a`` is an article and part of ``a picture of``);
    :data:`ROLES` lists the roles.
    """
    classic = grammar == "classic"
    plural = {PLURALS.get(w, w + "s") for ws in SHAPE_WORDS.values() for w in ws}
    rel_names = CLASSIC_RELATIONS if classic else tuple(RELATION_WORDS)
    relation = _words_of(p for r in rel_names for p in RELATION_WORDS[r])
    relation |= _words_of(ORDER_WORDS.values())
    textures = ("plain", "gradient", "noise") if classic else tuple(BACKGROUND_TEXTURE_WORDS)
    background = _words_of(BACKGROUND_TEXTURE_WORDS[t] for t in textures) | {BACKGROUND_NOUN}
    if classic:
        noun = {"shape", "shapes", "objects"}
        scene = {"total"}
        function = {"there", "is", "are", "and", "also", "with", "on", "a", "an"}
    else:
        background |= _words_of(BACKGROUND_TONE_WORDS.values())
        background |= _words_of(BACKGROUND_HUE_WORDS.values())
        noun = set(GENERIC_NOUNS) | set(GENERIC_NOUNS.values())
        scene = set(SCENE_WORDS)
        function = {"there", "is", "are", "and", "on", "a", "an", "the"} | set(RELATIVE_PRONOUNS)
    function |= _words_of(FRAMES[grammar]) | _words_of(CONNECTIVES[grammar])
    leads = (
        c.replace("{n}", "").replace("{noun}", "").replace("{list}", "")
        for c in COUNT_LEADS[grammar]
    )
    function |= _words_of(leads) - {"total"}
    return {
        "shape": sorted(_words_of(SHAPE_WORDS.values()) | plural),
        "colour": sorted(_words_of(COLOUR_WORDS.values())),
        "size": sorted(_words_of(SIZE_WORDS.values())),
        "pattern": sorted(_words_of(PATTERN_WORDS.values())),
        "noun": sorted(noun),
        "det": sorted(ARTICLES),
        "count": sorted(NUMBER_WORDS.values()),
        "relation": sorted(relation),
        "position": sorted(POSITION_WORDS),
        "background": sorted(background),
        "scene": sorted(scene),
        "": sorted(function),
    }


__all__ = [
    "ROLES",
    "SHAPE_WORDS",
    "PLURALS",
    "COLOUR_WORDS",
    "SIZE_WORDS",
    "PATTERN_WORDS",
    "ATTRIBUTE_WORDS",
    "GENERIC_NOUNS",
    "NUMBER_WORDS",
    "BACKGROUND_TEXTURE_WORDS",
    "BACKGROUND_TONE_WORDS",
    "BACKGROUND_HUE_WORDS",
    "RELATION_WORDS",
    "OPPOSITE_RELATION",
    "SYMMETRIC_RELATIONS",
    "ORDER_WORDS",
    "FRAMES",
    "CONNECTIVES",
    "FREQUENT_FUNCTION_WORDS",
    "vocabulary_by_role",
]
