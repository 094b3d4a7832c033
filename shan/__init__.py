"""SHAN: Step-Wise Hierarchical Alignment Network for image-text matching (Ji et al., IJCAI 2021).

Data flows one way: ``app.py -> demo/ -> shan/``; nothing in ``shan/`` imports ``demo/`` or Gradio.

One entry point loads what matching images against captions needs::

    import shan

    bundle = shan.load("checkpoints")  # or a checkpoint directory, or a Hub repo id owner/name
    bundle.model, bundle.text, bundle.extractor  # SHAN, its text processor, the region extractor

(:func:`shan.checkpoint.load`; ``import shan`` itself stays light: torch is imported on the
first call.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from shan.checkpoint import ShanBundle

__version__ = "0.1.0"


def load(
    path_or_repo: str | Path,
    device: torch.device | str = "auto",
    detector: str | None = None,
    detector_weights: str | Path | None = None,
    **hub_kwargs: Any,
) -> ShanBundle:
    """A SHAN checkpoint and the region extractor it names: see :func:`shan.checkpoint.load`."""
    from shan.checkpoint import load as _load

    return _load(path_or_repo, device, detector, detector_weights, **hub_kwargs)


__all__ = ["__version__", "load"]
