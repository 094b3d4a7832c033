"""SHAN: Step-Wise Hierarchical Alignment Network for image-text matching (Ji et al., IJCAI 2021).

Data flows one way: ``app.py -> demo/ -> shan/``; nothing in ``shan/`` imports ``demo/`` or Gradio.

One entry point loads what matching images against captions needs::

    import shan

    bundle = shan.load("checkpoints")  # or a checkpoint directory, or a Hub repo id owner/name
    bundle.model, bundle.text, bundle.extractor  # SHAN, its text processor, the region extractor

``shan.load`` is :func:`shan.checkpoint.load`; ``import shan`` itself stays light (torch is
imported on first use of ``shan.load``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load":
        from shan.checkpoint import load

        return load
    raise AttributeError(f"module 'shan' has no attribute {name!r}")


__all__ = ["__version__", "load"]
