"""SHAN checkpoints: a directory with ``model.safetensors``, ``config.json`` and ``vocab.json``.

* ``model.safetensors`` — the ``state_dict`` (contiguous CPU tensors, via ``safetensors.torch``).
* ``config.json`` — ``{"format_version": 1, "model": ModelConfig, "extra": {...}}``; ``extra``
  holds training metadata (epoch, rSum, validation metrics, data name) and optionally
  ``{"detector": {"kind": ..., "weights": <path relative to the checkpoint dir>}}``.
* ``vocab.json`` — the text processor: the GRU word vocabulary, or for the transformer encoder
  ``{"kind": "transformer", "model_dir": ...}`` (the directory is remembered, not copied).

:func:`load_checkpoint` accepts a local directory or a Hugging Face Hub repo id
(``owner/name``, fetched with ``huggingface_hub.snapshot_download`` only when no such local path
exists). Anything that does not fit raises :class:`CheckpointError` naming the problem.

Loading checks before it allocates: ``config.json`` is validated field by field
(:func:`shan.config.validate_model_config`: types, ranges, finite values, size bounds), and the
tensor shapes the config implies (the model built on PyTorch's ``meta`` device, which allocates
nothing) are compared with the shapes in the ``model.safetensors`` header (read with
``safetensors.safe_open``, no tensor loaded). Only a config that fits its weights is built.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shan.config import SIZE_LIMITS, ModelConfig, from_dict, to_dict, validate_model_config
from shan.data.vocab import (
    TransformerTextProcessor,
    VocabError,
    Vocabulary,
    load_text_processor,
)
from shan.errors import ShanError

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.json"

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class CheckpointError(ShanError, ValueError):
    """A checkpoint that cannot be saved or loaded (message names the file / keys / shapes)."""


@dataclass
class LoadedModel:
    """What :func:`load_checkpoint` returns.

    Attributes:
        model: the SHAN module in eval mode on the requested device.
        text: the caption processor (``encode_batch``).
        config: the :class:`ModelConfig` it was built from.
        extra: the ``extra`` dict saved with it (training metadata, detector reference).
        path: the local checkpoint directory (resolve relative paths in ``extra`` against it).
    """

    model: torch.nn.Module
    text: Vocabulary | TransformerTextProcessor
    config: ModelConfig
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(".")


def _json_safe(obj: Any) -> Any:
    """Make ``extra`` JSON-safe (tuples → lists, Paths → str, numpy/torch scalars → numbers)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    raise CheckpointError(f"extra contains a value that cannot be stored as JSON: {obj!r}")


def save_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    text_processor: Vocabulary | TransformerTextProcessor,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a SHAN with ``.cfg``) and its text processor to ``out_dir``.

    Returns:
        ``out_dir`` as a Path.
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, ModelConfig):
        raise CheckpointError("model has no ModelConfig in .cfg; is it a shan.model.SHAN?")
    if cfg.text_encoder == "gru" and not isinstance(text_processor, Vocabulary):
        raise CheckpointError("a GRU model needs a Vocabulary as its text processor")
    if cfg.text_encoder == "gru" and len(text_processor) != cfg.vocab_size:
        raise CheckpointError(
            f"vocabulary has {len(text_processor)} words but the model has vocab_size="
            f"{cfg.vocab_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage; contiguous: required by the format
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {
        "format_version": FORMAT_VERSION,
        "model": to_dict(cfg),
        "extra": _json_safe(extra or {}),
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    text_processor.save(out / VOCAB_NAME)
    return out


def resolve_checkpoint_dir(path_or_repo: str | Path) -> Path:
    """A local checkpoint directory, downloading a Hub repo id (``owner/name``) when needed."""
    p = Path(path_or_repo).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"checkpoint path is not a directory: {p}")
        return p
    text = str(path_or_repo)
    if not _REPO_ID_RE.match(text):
        raise CheckpointError(
            f"checkpoint not found: {text} (neither a local directory nor a Hub repo id owner/name)"
        )
    import huggingface_hub

    try:
        local = huggingface_hub.snapshot_download(repo_id=text)
    except Exception as e:  # network, auth, missing repo: one clear message
        raise CheckpointError(
            f"checkpoint {text!r} is not a local directory and could not be fetched from the "
            f"Hugging Face Hub: {type(e).__name__}: {e}"
        ) from None
    return Path(local)


def read_config(ckpt_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """``(ModelConfig, extra)`` from ``<ckpt_dir>/config.json``."""
    path = Path(ckpt_dir) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path} has no 'model' section (not a SHAN checkpoint?)")
    version = data.get("format_version", 1)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported format_version {version}")
    try:
        cfg = validate_model_config(from_dict(ModelConfig, data["model"]), complete=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config: {e}") from None
    extra = data.get("extra") or {}
    return cfg, extra


def _describe_mismatch(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    cfg: ModelConfig | None = None,
    limit: int = 8,
) -> str:
    """What differs between two ``{name: shape}`` dicts; with ``cfg``, which size fields of the
    config give the expected sizes that the weights do not have."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    differ = [
        k for k in sorted(set(expected) & set(found)) if tuple(found[k]) != tuple(expected[k])
    ]
    shapes = [f"{k}: checkpoint {tuple(found[k])} vs config {tuple(expected[k])}" for k in differ]
    parts = []
    if cfg is not None and differ:
        sizes = {s for k in differ for s, f in zip(expected[k], found[k]) if s != f}
        names = [f"{n}={getattr(cfg, n)}" for n in SIZE_LIMITS if getattr(cfg, n) in sizes]
        if names:
            parts.append(f"config field {', '.join(names)} does not fit the weights")
    if missing:
        parts.append(f"missing in checkpoint: {', '.join(missing[:limit])}")
    if unexpected:
        parts.append(f"not in the model: {', '.join(unexpected[:limit])}")
    if shapes:
        parts.append("shape mismatch: " + "; ".join(shapes[:limit]))
    return " | ".join(parts)


def _header_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` from a safetensors file's header; no tensor is loaded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {weights}: {e}") from None


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]] | None:
    """``{name: shape}`` of the state dict a model built from ``cfg`` has, without allocating
    (built on the ``meta`` device); ``None`` when the model cannot be built there (the
    transformer text encoder reads its backbone from disk)."""
    from shan.model.shan import SHAN

    if cfg.text_encoder != "gru":
        return None
    try:
        with torch.device("meta"):
            model = SHAN(dataclasses.replace(cfg))
    except (ValueError, TypeError, RuntimeError, NotImplementedError, OSError):
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_checkpoint(path_or_repo: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a SHAN from a checkpoint directory or Hub repo id, in eval mode on ``device``.

    Raises:
        CheckpointError: missing files, unreadable config, weights that do not fit the config
            (names the keys/shapes), or a vocabulary whose size differs from ``vocab_size``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from shan.model.shan import SHAN

    d = resolve_checkpoint_dir(path_or_repo)
    cfg, extra = read_config(d)
    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"missing file: {weights}")
    vocab_path = d / VOCAB_NAME
    if not vocab_path.is_file():
        raise CheckpointError(f"missing file: {vocab_path}")
    try:
        text = load_text_processor(vocab_path)
    except VocabError as e:
        raise CheckpointError(f"cannot load the text processor: {e}") from None
    if cfg.text_encoder == "gru":
        if not isinstance(text, Vocabulary):
            raise CheckpointError(f"{vocab_path}: a GRU model needs a word vocabulary")
        if len(text) != cfg.vocab_size:
            raise CheckpointError(
                f"{vocab_path} has {len(text)} words but config.json says vocab_size="
                f"{cfg.vocab_size} (vocabulary from another checkpoint?)"
            )
    found = _header_shapes(weights)
    expected = _expected_shapes(cfg)
    if expected is not None:  # before anything is allocated
        problem = _describe_mismatch(expected, found, cfg)
        if problem:
            raise CheckpointError(
                f"weights in {weights} do not match the config in {d / CONFIG_NAME} "
                f"(checkpoint from another config?): {problem}"
            )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {weights}: {e}") from None
    try:
        model = SHAN(cfg)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise CheckpointError(f"cannot build the model from {d / CONFIG_NAME}: {e}") from None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problem = _describe_mismatch(shapes, {k: tuple(v.shape) for k, v in state.items()}, cfg)
    if problem:
        raise CheckpointError(
            f"weights in {weights} do not match the config in {d / CONFIG_NAME} "
            f"(checkpoint from another config?): {problem}"
        )
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return LoadedModel(model=model, text=text, config=model.cfg, extra=extra, path=d)


__all__ = [
    "CONFIG_NAME",
    "CheckpointError",
    "FORMAT_VERSION",
    "LoadedModel",
    "VOCAB_NAME",
    "WEIGHTS_NAME",
    "load_checkpoint",
    "read_config",
    "resolve_checkpoint_dir",
    "save_checkpoint",
]
