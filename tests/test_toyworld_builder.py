"""The scene builder (for the app): specs → valid scenes → specs, clear errors, the vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from shan import toyworld as tw
from shan.toyworld.builder import ObjectSpec, SceneSpec, parse_background, spec_choices
from shan.toyworld.lexicon import ROLES, vocabulary_by_role
from shan.toyworld.truth import holds
from shan.toyworld.world import colour_distance, nearest_colour

SPEC = {
    "objects": [
        {"shape": "circle", "colour": "red", "size": "large", "cell": "top left"},
        {"shape": "star", "colour": "turquoise", "size": "small", "pattern": "striped",
         "x": 0.8, "y": 0.75},
        {"shape": "square", "colour": "yellow", "pattern": "dotted", "cell": [2, 0]},
    ],
    "background": "dark blue noisy",
    "seed": 3,
}  # fmt: skip


def test_build_scene_from_a_spec():
    scene = tw.build_scene(SPEC)
    assert [o.kind() for o in scene.objects] == [
        ("circle", "red"),
        ("star", "cyan"),
        ("square", "yellow"),
    ]
    bg = scene.background
    assert (bg.tone, bg.hue, bg.texture) == ("dark", "blue", "noise")
    assert not tw.scene_problems(scene)
    img = np.asarray(tw.render_scene(scene))
    for o in scene.objects:  # every object drawn where asked, in its colour
        cx, cy = (o.frame[0] + o.frame[2]) // 2, (o.frame[1] + o.frame[3]) // 2
        assert nearest_colour(img[cy, cx]) == o.colour or o.pattern != "solid"
    x1, y1, x2, y2 = scene.objects[1].frame
    assert (x1 + x2) / 2 / 256 == pytest.approx(0.8, abs=1 / 256)
    assert (y1 + y2) / 2 / 256 == pytest.approx(0.75, abs=1 / 256)
    assert scene.objects[0].box[0] < 256 / 3 and scene.objects[0].box[1] < 256 / 3
    assert scene.objects[2].box[3] > 2 * 256 / 3


def test_spec_round_trip():
    scene = tw.build_scene(SPEC)
    spec = tw.spec_of_scene(scene)
    again = tw.build_scene(spec)
    assert [o.__dict__ for o in again.objects] == [o.__dict__ for o in scene.objects]
    assert again.background == scene.background
    assert np.array_equal(np.asarray(tw.render_scene(again)), np.asarray(tw.render_scene(scene)))
    assert tw.spec_of_scene(again) == spec


def test_built_scenes_get_true_captions_and_negatives():
    scene = tw.annotate_scene(tw.build_scene(SPEC))
    assert len(scene.captions) == 5
    for cap in scene.captions:
        assert holds(cap.plan, scene)
    assert any(scene.negatives) and scene.distractors


def test_dataclass_specs_and_defaults():
    spec = SceneSpec([ObjectSpec("heart", "pink"), ObjectSpec("cross", "green", "small")])
    scene = tw.build_scene(spec)
    assert scene.background.texture == "plain" and scene.background.hue == "grey"
    c0 = scene.objects[0].frame
    assert (c0[0] + c0[2]) / 2 == pytest.approx(128, abs=1)  # first default cell: center


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"objects": []}, "1 to 5 objects"),
        ({"objects": [{"shape": "circle", "colour": "red"}] * 6}, "1 to 5 objects"),
        ({"objects": [{"shape": "oval", "colour": "red"}]}, "unknown shape 'oval'"),
        ({"objects": [{"shape": "circle", "colour": "teal"}]}, "unknown colour 'teal'"),
        ({"objects": [{"shape": "circle", "colour": "red", "x": 1.5}]}, r"in \[0, 1\]"),
        ({"objects": [{"shape": "circle", "colour": "red", "cell": "upstairs"}]}, "unknown cell"),
        ({"objects": [{"shape": "circle", "colour": "red", "cell": [3, 0]}]}, "0..2"),
        ({"objects": [{"shape": "circle"}]}, "needs shape and colour"),
        ({"objects": [{"shape": "circle", "colour": "red"}], "background": "marble"}, "marble"),
        ({"objects": [{"shape": "circle", "colour": "red"}], "background": "dark yellow"},
         "no dark yellow background"),
        ({"objects": [{"shape": "circle", "colour": "red", "cell": "center"},
                      {"shape": "square", "colour": "blue", "cell": "center"}]}, "hidden"),
        ({"objects": [{"shape": "circle", "colour": "red", "cell": "center"},
                      {"shape": "circle", "colour": "red", "size": "small", "x": 0.55,
                       "y": 0.5}]}, "too similar colour"),
        ({"shapes": []}, "unknown scene spec fields"),
        ("a red circle", "SceneSpec or a mapping"),
    ],
)  # fmt: skip
def test_bad_specs_get_one_line_errors(spec, message):
    with pytest.raises(tw.ToyWorldError, match=message) as e:
        tw.build_scene(spec)
    assert "\n" not in str(e.value)


def test_an_object_that_would_not_stand_out_is_refused():
    """A red circle on a mid red background: refused when the drawn background red is too close
    (the background's exact colour depends on the seed), accepted only with enough contrast."""
    refused = 0
    for seed in range(12):
        spec = {
            "objects": [{"shape": "circle", "colour": "red"}],
            "background": "red",
            "seed": seed,
        }
        try:
            scene = tw.build_scene(spec)
        except tw.ToyWorldError as e:
            assert "does not stand out from the red background" in str(e)
            refused += 1
            continue
        plain = scene.background.colours[0]  # the one colour of a plain background
        assert colour_distance(scene.objects[0].rgb, plain) >= 39
    assert refused >= 1


def test_background_phrases():
    assert parse_background("light grey checkered") == ("checks", "light", "grey")
    assert parse_background("striped pink background") == ("stripes", "mid", "pink")
    assert parse_background({"texture": "noisy", "tone": "dark", "hue": "violet"}) == (
        "noise",
        "dark",
        "purple",
    )


def test_vocabulary_and_choices_list_every_word_once_per_role():
    vocab = vocabulary_by_role()
    assert set(vocab) == set(ROLES)
    assert "circle" in vocab["shape"] and "crosses" in vocab["shape"]
    assert {"left", "behind", "next"} <= set(vocab["relation"])
    assert {"dark", "grey", "checked", "background"} <= set(vocab["background"])
    assert set(vocab[""]) >= {"and", "is", "that"}
    for words in vocab.values():
        assert words == sorted(set(words))
    classic = vocabulary_by_role("classic")
    assert "behind" not in classic["relation"] and "dark" not in classic["background"]
    choices = spec_choices()
    assert choices["shape"] == list(tw.SHAPES) and "top left" in choices["cell"]
    assert "center" in choices["cell"] and len(choices["cell"]) == 9
