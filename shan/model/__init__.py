"""SHAN model: encoders, the three alignment steps, all-pairs scoring and the training loss.

Public API: :class:`SHAN` (``encode_images``, ``encode_captions``, ``score``, ``forward``,
``explain``), :class:`ContrastiveLoss`, and the containers :class:`StepScores`,
:class:`Explanation`, :class:`ImageEmbeddings`, :class:`TextEmbeddings`.
"""

from shan.model.loss import ContrastiveLoss
from shan.model.shan import (
    SHAN,
    Explanation,
    ImageEmbeddings,
    StepScores,
    TextEmbeddings,
    TrainingScores,
)

__all__ = [
    "SHAN",
    "ContrastiveLoss",
    "StepScores",
    "TrainingScores",
    "Explanation",
    "ImageEmbeddings",
    "TextEmbeddings",
]
