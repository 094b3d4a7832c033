"""Configs as dataclasses. Each checkpoint stores its :class:`ModelConfig` as JSON next to its
weights.

CLIs build these from a JSON config file plus ``--key value`` overrides (see
:func:`apply_overrides`); nothing in the library reads a global argument object.

Every config that comes from outside (a JSON file, a checkpoint's ``config.json``, ``--set``) is
checked by :func:`validate` before anything is built from it: types (a size is an ``int``, a
switch a real ``bool`` — not ``"no"``), ranges, finite numbers, and upper bounds on sizes
(:data:`SIZE_LIMITS`), so that a corrupt or hostile config cannot make the model allocate
gigabytes before its weights are compared. A problem raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from shan.errors import ShanError

T = TypeVar("T")

#: Upper bounds of the sizes a SHAN checkpoint can sanely hold (far above any real model:
#: BUTD features are 2048-d, the paper's joint space 1024-d, COCO's vocabulary ~10 000 words).
SIZE_LIMITS = {
    "img_dim": 16_384,
    "embed_dim": 16_384,
    "vocab_size": 2_000_000,
    "word_dim": 4_096,
    "glove_dim": 4_096,
    "gru_layers": 8,
    "max_words": 1_024,
    "geometry_hidden": 4_096,
}
MAX_SMOOTH = 1_000.0  # lambda: exp(lambda * cosine) must stay finite in float32
MAX_GEOMETRY_WEIGHT = 100.0  # beyond this the appearance part of a region embedding is noise
#: ``TrainConfig.hard_negatives``: where each caption's hard negatives come from
HARD_NEGATIVE_SOURCES = ("none", "typed", "swap", "auto")
MAX_NEGATIVES_PER_CAPTION = 64


class ConfigError(ShanError, ValueError):
    """A config (file, checkpoint ``config.json`` or ``--set`` override) that cannot be used; the
    message names the field."""


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
    # Beyond the paper (default off = the paper's model): box geometry of each region.
    use_geometry: bool = False  # add an embedding of the normalised box (x1, y1, x2, y2, area)
    geometry_hidden: int = 64  # hidden width of the box MLP (5 -> hidden -> embed_dim)
    geometry_weight: float = 0.3  # initial weight of the geometry part beside the unit
    #                               appearance part (learned; see ImageEncoder)
    geometry_mode: str = (
        "relative"  # "relative" (centred per image) or "absolute" (GeometryEncoder)
    )


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
    # Beyond the paper (defaults: the paper's loss). Hard negatives: extra false captions of each
    # training caption, each image's own ones in a hinge beside the in-batch VSE++ loss.
    # "none" | "typed" ({split}_negs.jsonl) | "swap" (word swaps, shan.data.perturb) | "auto"
    # (typed where the file exists, else swap)
    hard_negatives: str = "none"
    negatives_per_caption: int = 1  # K: hard negatives drawn per caption per step
    hard_negative_weight: float = 1.0  # weight of the hard-negative hinge in the loss
    hard_negative_types: str = ""  # comma-separated types to use (empty: every type)
    step_loss_weight: float = 0.0  # > 0: each enabled step's own scores also get the loss
    pool_lr_scale: float = 1.0  # learning-rate multiplier of the step-2 pooling vectors


# ---------------------------------------------------------------------------------------------
# validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _describe(v: Any) -> str:
    text = repr(v)
    return (
        f"{text[:60]}... ({type(v).__name__})" if len(text) > 60 else f"{text} ({type(v).__name__})"
    )


class _Checker:
    """Collects the checks of one config object; raises on the first bad field."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.cls = type(cfg).__name__

    def fail(self, name: str, expected: str) -> None:
        got = _describe(getattr(self.cfg, name))
        raise ConfigError(f"{self.cls}.{name} must be {expected}, got {got}")

    def int_(self, name: str, lo: int, hi: int | None = None) -> None:
        v = getattr(self.cfg, name)
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            self.fail(
                name, f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
            )

    def float_(self, name: str, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
        v = getattr(self.cfg, name)
        ok = _is_number(v) and math.isfinite(v) and (v > lo if lo_open else v >= lo)
        if not ok or (hi is not None and v > hi):
            left = "(" if lo_open else "["
            span = f"{left}{lo}, {hi}]" if hi is not None else f"{'>' if lo_open else '>='} {lo}"
            self.fail(name, f"a finite number {'in ' + span if hi is not None else span}")

    def bool_(self, name: str) -> None:
        if not isinstance(getattr(self.cfg, name), bool):
            self.fail(name, "true or false (a JSON boolean)")

    def str_(self, name: str, optional: bool = False, nonempty: bool = False) -> None:
        v = getattr(self.cfg, name)
        if v is None and optional:
            return
        if not isinstance(v, str) or (nonempty and not v.strip()):
            self.fail(
                name,
                ("a non-empty string" if nonempty else "a string")
                + (" or null" if optional else ""),
            )

    def choice(self, name: str, options: tuple[str, ...]) -> None:
        if getattr(self.cfg, name) not in options:
            self.fail(name, "one of " + ", ".join(repr(o) for o in options))


def validate_model_config(cfg: ModelConfig, complete: bool = False) -> ModelConfig:
    """Check every field of ``cfg``; ``complete``: it describes a built model (a checkpoint's
    config), so a GRU model's ``vocab_size`` must be set.

    Returns ``cfg`` with ``step_weights`` as a tuple of floats. Raises :class:`ConfigError`.
    """
    c = _Checker(cfg)
    c.int_("img_dim", 1, SIZE_LIMITS["img_dim"])
    c.int_("embed_dim", 1, SIZE_LIMITS["embed_dim"])
    c.choice("text_encoder", ("gru", "transformer"))
    c.int_(
        "vocab_size", 1 if complete and cfg.text_encoder == "gru" else 0, SIZE_LIMITS["vocab_size"]
    )
    c.int_("word_dim", 1, SIZE_LIMITS["word_dim"])
    c.str_("glove_path", optional=True)
    c.int_("glove_dim", 0, SIZE_LIMITS["glove_dim"])
    c.int_("gru_layers", 1, SIZE_LIMITS["gru_layers"])
    c.str_("transformer_path", optional=True)
    if cfg.text_encoder == "transformer" and not cfg.transformer_path:
        c.fail("transformer_path", "a model directory when text_encoder is 'transformer'")
    c.int_("max_words", 1, SIZE_LIMITS["max_words"])
    c.float_("smooth", 0.0, MAX_SMOOTH, lo_open=True)
    c.float_("mu", 0.0, 1.0)
    w = cfg.step_weights
    if (
        not isinstance(w, (list, tuple))
        or len(w) != 3
        or not all(_is_number(x) and math.isfinite(x) for x in w)
    ):
        c.fail("step_weights", "three finite numbers (weights of L2L, G2L, G2G)")
    for name in ("use_l2l", "use_g2l", "use_g2g"):
        c.bool_(name)
    if not (cfg.use_l2l or cfg.use_g2l or cfg.use_g2g):
        raise ConfigError("ModelConfig: use_l2l, use_g2l and use_g2g are all false (no step left)")
    c.bool_("use_geometry")
    c.int_("geometry_hidden", 1, SIZE_LIMITS["geometry_hidden"])
    c.float_("geometry_weight", 0.0, MAX_GEOMETRY_WEIGHT, lo_open=True)
    c.choice("geometry_mode", ("relative", "absolute"))
    return dataclasses.replace(cfg, step_weights=tuple(float(x) for x in w))


def validate_data_config(cfg: DataConfig) -> DataConfig:
    """Check every field of ``cfg``. Raises :class:`ConfigError`."""
    c = _Checker(cfg)
    c.str_("root", nonempty=True)
    c.str_("name", nonempty=True)
    c.str_("train_split", nonempty=True)
    c.str_("val_split", optional=True)
    c.int_("max_val_images", 0)
    c.int_("num_workers", 0, 1024)
    return cfg


def validate_train_config(cfg: TrainConfig) -> TrainConfig:
    """Check every field of ``cfg``. Raises :class:`ConfigError`."""
    c = _Checker(cfg)
    c.int_("epochs", 0, 1_000_000)
    c.float_("lr", 0.0, 10.0, lo_open=True)
    c.int_("lr_decay_epoch", 0)
    c.int_("batch_size", 1, 10_000_000)
    c.float_("grad_clip", 0.0)
    c.float_("margin", 0.0)
    c.bool_("max_violation")
    c.int_("seed", 0)
    c.str_("device", nonempty=True)
    c.bool_("amp")
    c.str_("out_dir", nonempty=True)
    c.str_("resume", optional=True)
    c.int_("log_every", 0)
    c.int_("score_chunk", 1)
    c.choice("hard_negatives", HARD_NEGATIVE_SOURCES)
    c.int_("negatives_per_caption", 1, MAX_NEGATIVES_PER_CAPTION)
    c.float_("hard_negative_weight", 0.0)
    c.str_("hard_negative_types")
    if any(not t.strip() for t in cfg.hard_negative_types.split(",")) and cfg.hard_negative_types:
        c.fail("hard_negative_types", "comma-separated type names (e.g. 'relation_swap,count')")
    c.float_("step_loss_weight", 0.0)
    c.float_("pool_lr_scale", 0.0, 1e6, lo_open=True)
    return cfg


def validate(cfg: T, complete: bool = False) -> T:
    """Check a :class:`ModelConfig`, :class:`DataConfig` or :class:`TrainConfig` (see the
    ``validate_*`` functions); returns it (normalised). Raises :class:`ConfigError`."""
    if isinstance(cfg, ModelConfig):
        return validate_model_config(cfg, complete=complete)  # type: ignore[return-value]
    if isinstance(cfg, DataConfig):
        return validate_data_config(cfg)  # type: ignore[return-value]
    if isinstance(cfg, TrainConfig):
        return validate_train_config(cfg)  # type: ignore[return-value]
    raise TypeError(f"not a SHAN config: {type(cfg).__name__}")


# ---------------------------------------------------------------------------------------------
# reading and writing


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any], strict: bool = True) -> T:
    """Build ``cls`` from a dict and :func:`validate` it; unknown keys raise (``strict``) so a typo
    never goes unnoticed.

    Raises:
        ConfigError: not a dict, unknown keys, or a field of the wrong type or out of range.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown and strict:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(map(str, unknown))}")
    kwargs = {k: v for k, v in data.items() if k in names}
    return validate(cls(**kwargs))  # type: ignore[call-arg]


def save_json(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load_json(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, json.loads(Path(path).read_text()))


def _coerce(value: str, current: Any, ftype: Any) -> Any:
    """Parse a command-line string to the type of the field it overrides."""
    text = value.strip()
    if text.lower() in {"none", "null"} and (current is None or "None" in str(ftype)):
        return None  # an optional field; "none" is a value of e.g. TrainConfig.hard_negatives
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
    """Return a copy of ``cfg`` with string overrides (``--key value``) parsed to field types,
    :func:`validate`-d.

    Raises:
        ConfigError: an unknown field, a value that does not parse, or one out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"{type(cfg).__name__} has no field {key!r}")
        try:
            changes[name] = _coerce(value, getattr(cfg, name), fields[name].type)
        except ValueError as e:
            raise ConfigError(f"{type(cfg).__name__}.{name}: cannot read {value!r}: {e}") from None
    return validate(dataclasses.replace(cfg, **changes))  # type: ignore[type-var]


__all__ = [
    "ConfigError",
    "HARD_NEGATIVE_SOURCES",
    "SIZE_LIMITS",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "to_dict",
    "from_dict",
    "save_json",
    "load_json",
    "apply_overrides",
    "field",
    "validate",
    "validate_data_config",
    "validate_model_config",
    "validate_train_config",
]
