"""Configs as dataclasses. Each checkpoint stores its :class:`ModelConfig` as JSON next to its
weights.

CLIs build these from a JSON config file plus ``--key value`` overrides (see
:func:`apply_overrides`); nothing in the library reads a global argument object.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class ModelConfig:
    """Architecture of one SHAN model (what is needed to rebuild it before loading weights)."""

    img_dim: int = 2048  # region feature size produced by the detector
    embed_dim: int = 1024  # joint space d
    text_encoder: str = "gru"  # "gru" (paper) or "transformer" (any local BERT-family directory)
    vocab_size: int = 0  # gru only; set from the vocabulary
    word_dim: int = 300  # learnable word embedding size (gru only)
    glove_path: str | None = None  # optional GloVe-format text file, concatenated to the embedding
    glove_dim: int = 0  # filled in from the GloVe file
    gru_layers: int = 1
    transformer_path: str | None = None  # local model directory (text_encoder == "transformer")
    max_words: int = 64  # captions are truncated to this many tokens
    smooth: float = 9.0  # lambda, the attention temperature
    mu: float = 0.5  # L2L: weight of region->word relevance vs word->region relevance
    step_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # S = w1 L2L + w2 G2L + w3 G2G
    use_l2l: bool = True
    use_g2l: bool = True
    use_g2g: bool = True


@dataclass
class DataConfig:
    """Where the precomputed (SCAN-format) features live: ``<root>/<name>_precomp/``."""

    root: str = "data"
    name: str = "f30k"
    train_split: str = "train"
    val_split: str = "dev"
    max_val_images: int = 1000  # validation rSum on at most this many images (5 captions each)
    num_workers: int = 0


@dataclass
class TrainConfig:
    """Optimisation settings (SCAN-family defaults; Flickr30K)."""

    epochs: int = 30
    lr: float = 2e-4
    lr_decay_epoch: int = 15  # lr *= 0.1 after this many epochs
    batch_size: int = 128
    grad_clip: float = 2.0
    margin: float = 0.2
    max_violation: bool = True  # VSE++ hardest negatives
    seed: int = 0
    device: str = "auto"  # "auto" -> cuda if available else cpu
    amp: bool = True  # mixed precision, used on CUDA only
    out_dir: str = "runs/shan"
    resume: str | None = None
    log_every: int = 50
    score_chunk: int = 256  # images per chunk when scoring all pairs during validation


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any], strict: bool = True) -> T:
    """Build ``cls`` from a dict; unknown keys raise (``strict``) so a typo never goes unnoticed."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown and strict:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    kwargs = {k: v for k, v in data.items() if k in names}
    if "step_weights" in kwargs and kwargs["step_weights"] is not None:
        kwargs["step_weights"] = tuple(float(x) for x in kwargs["step_weights"])
    return cls(**kwargs)  # type: ignore[call-arg]


def save_json(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load_json(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, json.loads(Path(path).read_text()))


def _coerce(value: str, current: Any, ftype: Any) -> Any:
    """Parse a command-line string to the type of the field it overrides."""
    text = value.strip()
    if text.lower() in {"none", "null"}:
        return None
    if isinstance(current, bool) or ftype in (bool, "bool"):
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        return tuple(float(x) for x in text.replace(",", " ").split())
    return text


def apply_overrides(cfg: T, overrides: dict[str, str]) -> T:
    """Return a copy of ``cfg`` with string overrides (``--key value``) parsed to field types."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ValueError(f"{type(cfg).__name__} has no field {key!r}")
        changes[name] = _coerce(value, getattr(cfg, name), fields[name].type)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


__all__ = [
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "to_dict",
    "from_dict",
    "save_json",
    "load_json",
    "apply_overrides",
    "field",
]
