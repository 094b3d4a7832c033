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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shan.config import ModelConfig, from_dict, to_dict
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
        cfg = from_dict(ModelConfig, data["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config: {e}") from None
    extra = data.get("extra") or {}
    return cfg, extra


def _describe_mismatch(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], limit: int = 8
) -> str:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing in checkpoint: {', '.join(missing[:limit])}")
    if unexpected:
        parts.append(f"not in the model: {', '.join(unexpected[:limit])}")
    if shapes:
        parts.append("shape mismatch: " + "; ".join(shapes[:limit]))
    return " | ".join(parts)


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
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {weights}: {e}") from None
    try:
        model = SHAN(cfg)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise CheckpointError(f"cannot build the model from {d / CONFIG_NAME}: {e}") from None
    expected = model.state_dict()
    problem = _describe_mismatch(expected, state)
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
