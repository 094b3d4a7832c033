"""The scene builder: menus → a toy-world scene drawn and captioned by the world itself; its mirror;
the loaded model's vocabulary by role; one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from demo import scene
from shan.errors import ShanError
from shan.toyworld import ToyWorldError, build_scene, spec_of_scene

OFF = (False, "star", "yellow", "small", "dotted", "bottom left")


def _rows(*objects):
    rows = list(objects) + [OFF] * (5 - len(objects))
    return rows


def test_default_scene_is_drawn_and_captioned_by_the_world():
    spec = scene.scene_spec(scene.DEFAULT_OBJECTS, scene.DEFAULT_BACKGROUND)
    assert [o.shape for o in spec.objects] == ["circle", "square"]  # objects 3-5 are off
    d = scene.draw(spec)
    assert d.image.size == (256, 256) and d.image.mode == "RGB"
    arr = np.asarray(d.image)
    left, right = arr[:, :100].reshape(-1, 3), arr[:, 156:].reshape(-1, 3)
    reddish = (left[:, 0] > 150) & (left[:, 1] < 90) & (left[:, 2] < 90)
    bluish = (right[:, 2] > 150) & (right[:, 0] < 120)
    assert reddish.sum() > 500 and bluish.sum() > 200  # the red circle left, the blue square right
    assert d.captions and all(isinstance(c, str) and c for c in d.captions)
    text = " ".join(d.captions)
    assert "red" in text and "blue" in text
    assert d.hard_negative is None or d.hard_negative not in d.captions
    assert d.match_text.splitlines()[: len(d.captions)] == d.captions


def test_mirror_moves_every_object_to_the_other_side():
    cells = [row[-1] for row in scene.DEFAULT_OBJECTS]
    mirrored = scene.mirror_cells(cells)
    assert mirrored[:2] == ["middle right", "middle left"] and mirrored[2] == "top center"
    assert scene.mirror_cells(mirrored) == cells
    rows = [(*row[:-1], cell) for row, cell in zip(scene.DEFAULT_OBJECTS, mirrored)]
    a = spec_of_scene(
        build_scene(scene.scene_spec(scene.DEFAULT_OBJECTS, ("light", "grey", "plain")))
    )
    b = spec_of_scene(build_scene(scene.scene_spec(rows, ("light", "grey", "plain"))))
    for oa, ob in zip(a.objects, b.objects):
        assert oa.x == pytest.approx(1 - ob.x, abs=0.02) and oa.y == pytest.approx(ob.y, abs=0.02)


@pytest.mark.parametrize(
    "rows, background, message",
    [
        (_rows(), ("light", "grey", "plain"), "at least one object"),
        (
            _rows((True, "circle", "mauve", "large", "solid", "center")),
            ("light", "grey", "plain"),
            "colour",
        ),
        (
            _rows((True, "blob", "red", "large", "solid", "center")),
            ("light", "grey", "plain"),
            "shape",
        ),
        (
            _rows((True, "circle", "red", "large", "solid", "center")),
            ("dark", "yellow", "plain"),
            "no dark yellow",
        ),
        (
            _rows(
                (True, "circle", "red", "small", "solid", "center"),
                (True, "square", "blue", "large", "solid", "center"),
            ),
            ("light", "grey", "plain"),
            "rules",
        ),
    ],
)
def test_bad_scenes_are_refused_in_one_line(rows, background, message):
    with pytest.raises(ToyWorldError, match=message) as info:
        scene.draw(scene.scene_spec(rows, background))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ShanError)  # the app shows a ShanError's message as it is


def test_vocabulary_marks_what_the_model_knows():
    md = scene.vocabulary_markdown(["red", "circle", "zebra"])
    assert "**red**" in md and "~~blue~~" in md and "**circle**" in md
    assert "words the model knows from elsewhere (1): zebra" in md
    assert "word pieces" in scene.vocabulary_markdown(None)
