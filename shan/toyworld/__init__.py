"""The toy world: synthetic scenes of coloured shapes with grounded captions and minimal pairs.

No real dataset or pretrained detector is available offline, so the shipped model is trained on a
world this project builds itself. Every image is drawn from its own seed (any image can be
regenerated from ``(seed, split, index, WorldConfig)``), and its ground truth is complete: visible
object boxes, shape, colour, size, pattern, the background, for every caption which token refers to
which object and in what role, typed negative captions and distractor scenes — each negative
checked false by a truth evaluator over the scene.

Modules, in the order data flows:

* :mod:`~shan.toyworld.world` — :class:`WorldConfig`, objects, backgrounds, sampling (contrast,
  occlusion, duplicates), rendering, the geometry of relations;
* :mod:`~shan.toyworld.lexicon` — every caption word by role;
* :mod:`~shan.toyworld.meaning` / :mod:`~shan.toyworld.truth` — what captions claim, and whether it
  holds in a scene;
* :mod:`~shan.toyworld.captions` — the grammar: plans → grounded tokens;
* :mod:`~shan.toyworld.negatives` — typed negatives (:data:`NEGATIVE_TYPES`) and distractor scenes;
* :mod:`~shan.toyworld.builder` — scenes from a small spec (for the app);
* :mod:`~shan.toyworld.dataset` — splits on disk and the CLI ``python -m shan.toyworld``.
"""

from shan.toyworld.builder import ObjectSpec, SceneSpec, build_scene, spec_choices, spec_of_scene
from shan.toyworld.captions import TEMPLATES, Caption, make_caption, make_captions, realise
from shan.toyworld.dataset import (
    annotate_scene,
    caption_negatives,
    distractor_scene,
    generate_dataset,
    generate_scene,
    generate_split,
    load_annotations,
    main,
    scene_from_record,
    scene_record,
    world_config,
)
from shan.toyworld.lexicon import ROLES, vocabulary_by_role
from shan.toyworld.negatives import (
    DISTRACTOR_TYPES,
    NEGATIVE_TYPES,
    Distractor,
    Negative,
    apply_change,
    make_distractors,
    typed_negatives,
)
from shan.toyworld.truth import holds, referents
from shan.toyworld.world import (
    BACKGROUND_HUES,
    BACKGROUND_TEXTURES,
    BACKGROUND_TONES,
    COLOURS,
    IMAGE_SIZE,
    PATTERNS,
    SHAPES,
    SIZES,
    SPLITS,
    Background,
    Scene,
    ToyObject,
    ToyWorldError,
    WorldConfig,
    image_seed,
    render_scene,
    sample_scene,
    scene_problems,
)

__all__ = [
    "BACKGROUND_HUES",
    "BACKGROUND_TEXTURES",
    "BACKGROUND_TONES",
    "COLOURS",
    "DISTRACTOR_TYPES",
    "IMAGE_SIZE",
    "NEGATIVE_TYPES",
    "PATTERNS",
    "ROLES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TEMPLATES",
    "Background",
    "Caption",
    "Distractor",
    "Negative",
    "ObjectSpec",
    "Scene",
    "SceneSpec",
    "ToyObject",
    "ToyWorldError",
    "WorldConfig",
    "annotate_scene",
    "apply_change",
    "build_scene",
    "caption_negatives",
    "distractor_scene",
    "generate_dataset",
    "generate_scene",
    "generate_split",
    "holds",
    "image_seed",
    "load_annotations",
    "main",
    "make_caption",
    "make_captions",
    "make_distractors",
    "realise",
    "referents",
    "render_scene",
    "sample_scene",
    "scene_from_record",
    "scene_problems",
    "scene_record",
    "spec_choices",
    "spec_of_scene",
    "typed_negatives",
    "vocabulary_by_role",
    "world_config",
]
