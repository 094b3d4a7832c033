"""SHAN checkpoints: a directory with ``model.safetensors``, ``config.json`` and ``vocab.json``.

* ``model.safetensors`` — the ``state_dict`` (contiguous CPU tensors, via ``safetensors.torch``).
* ``config.json`` — ``{"format_version": 1, "model": ModelConfig, "extra": {...}}``; ``extra``
  holds training metadata (epoch, rSum, validation metrics, data name) and optionally the
  *detector link* ``{"detector": {"kind": "toy"|"butd", "weights": ..., "filename": ...}}``
  (written by :func:`detector_link`, read by :func:`resolve_detector`; see there).
* ``vocab.json`` — the text processor: the GRU word vocabulary, or for the transformer encoder
  ``{"kind": "transformer", "model_dir": ...}`` (the directory is remembered, not copied).

This module is the one owner of that format and of the link to the detector:

* :func:`load` (also ``shan.load``) — a checkpoint *and* its region extractor, ready to match
  images against captions: :class:`ShanBundle`.
* :func:`load_checkpoint` — the SHAN model and its text processor: :class:`LoadedModel`, which
  follows huggingface_hub's model conventions (``save_pretrained`` / ``from_pretrained`` /
  ``push_to_hub`` through ``ModelHubMixin``, with a generated model card).

Where a checkpoint may be (every function above accepts each):

* a local checkpoint directory;
* a folder holding the checkpoint in ``shan/`` beside its detector in ``detector/`` (the shipped
  ``checkpoints/`` folder, whose ``shan/config.json`` links ``"../detector"``);
* a Hugging Face Hub repo id ``owner/name`` (fetched with ``huggingface_hub.snapshot_download``
  only when it names no local path), laid out either way. ``LoadedModel.push_to_hub`` writes the
  first layout: the checkpoint files at the root, the generated ``README.md`` card, and a local
  detector copied into ``detector/`` (a detector named by a Hub id stays a link).

Anything that does not fit raises :class:`CheckpointError` (detector problems:
:class:`DetectorLinkError`) naming the problem.

Loading checks before it allocates: ``config.json`` is validated field by field
(:func:`shan.config.validate_model_config`: types, ranges, finite values, size bounds), and the
tensor shapes the config implies (the model built on PyTorch's ``meta`` device, which allocates
nothing) are compared with the shapes in the ``model.safetensors`` header (read with
``safetensors.safe_open``, no tensor loaded). Only a config that fits its weights is built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin

from shan.config import SIZE_LIMITS, ModelConfig, from_dict, to_dict, validate_model_config
from shan.data.vocab import (
    TransformerTextProcessor,
    VocabError,
    Vocabulary,
    load_text_processor,
)
from shan.detect.factory import KINDS as DETECTOR_KINDS
from shan.device import resolve_device
from shan.errors import ShanError

if TYPE_CHECKING:
    from shan.detect.base import RegionExtractor

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.json"
#: In a folder that holds a checkpoint beside its detector: the checkpoint's and the detector's
#: sub-folders (the shipped ``checkpoints/`` layout).
CHECKPOINT_SUBDIR = "shan"
DETECTOR_SUBDIR = "detector"

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
#: Keyword arguments of ``huggingface_hub.snapshot_download`` that callers may pass through.
HUB_KWARGS = ("revision", "cache_dir", "token", "force_download", "local_files_only")


class CheckpointError(ShanError, ValueError):
    """A checkpoint that cannot be saved or loaded (message names the file / keys / shapes)."""


class DetectorLinkError(CheckpointError):
    """The detector a checkpoint names (or the one asked for) cannot be found or loaded.

    Attributes:
        missing: ``"kind"`` when no detector is named at all, ``"weights"`` when a kind is known
            but no weights for it, else ``None``.
        kind: the detector kind, when known.
    """

    def __init__(self, message: str, missing: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.missing = missing
        self.kind = kind


_CARD_TEMPLATE = """---
{{ card_data }}
---

# SHAN image–text matching model

A **SHAN** checkpoint (Step-Wise Hierarchical Alignment Network, Ji, Chen and Wang, *IJCAI 2021*):
it scores an image, given as region features from a Faster R-CNN, against a caption in three
steps — region↔word attention (local-to-local), each modality's context attending to the other's
fragments (global-to-local), and the cosine of the two enriched global vectors (global-to-global).

## Use

```python
import shan

bundle = shan.load("{{ repo_id }}")  # model, text processor and region extractor
```

`shan.load` returns the model, its text processor and the region extractor this checkpoint
names; `shan.checkpoint.load_checkpoint` loads the model and text processor alone.

## Model

| field | value |
|---|---|
{% for name, value in model_rows %}| {{ name }} | {{ value }} |
{% endfor %}
## Training

{% if training_rows %}| field | value |
|---|---|
{% for name, value in training_rows %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}No training metadata was saved with this checkpoint.
{% endif %}
## Region extractor

{{ detector_text }}

## Files

`model.safetensors` (weights), `config.json` (`{"format_version", "model", "extra"}`),
`vocab.json` (text processor){% if has_detector_dir %}, `detector/` (the region
extractor){% endif %}.
This card was generated by `LoadedModel.save_pretrained` / `push_to_hub`.
"""


class LoadedModel(
    ModelHubMixin,
    library_name="shan",
    license="apache-2.0",
    tags=["image-text-matching", "cross-modal-retrieval", "shan"],
    model_card_template=_CARD_TEMPLATE,
):
    """A SHAN checkpoint in memory: what :func:`load_checkpoint` returns.

    Follows huggingface_hub's model conventions (``ModelHubMixin``): ``save_pretrained(dir)``
    writes the checkpoint format above (plus a generated ``README.md`` card, and the detector
    it links, copied into ``dir/detector/``), ``LoadedModel.from_pretrained(dir or owner/name,
    device=...)`` reads it, ``push_to_hub(owner/name)`` uploads what ``save_pretrained`` writes.

    Attributes:
        model: the SHAN module in eval mode on the requested device.
        text: the caption processor (``encode_batch``).
        config: the :class:`ModelConfig` it was built from.
        extra: the ``extra`` dict saved with it (training metadata, detector link).
        path: the local checkpoint directory (relative paths in ``extra`` are relative to it).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        text: Vocabulary | TransformerTextProcessor,
        config: ModelConfig | None = None,
        extra: dict[str, Any] | None = None,
        path: str | Path = ".",
    ) -> None:
        self.model = model
        self.text = text
        self.config = config if config is not None else model.cfg
        self.extra = dict(extra or {})
        self.path = Path(path)
        self._saved_extra: dict[str, Any] | None = None  # what the last save wrote (its card)

    def __repr__(self) -> str:
        return f"LoadedModel(path={str(self.path)!r}, config={self.config!r})"

    # ---- huggingface_hub.ModelHubMixin ------------------------------------------------------

    def _save_pretrained(self, save_directory: Path) -> None:
        """The checkpoint files, with a local detector copied into ``detector/``."""
        extra = dict(self.extra)
        link = extra.get("detector")
        if link is not None:
            extra["detector"] = _copy_detector(link, self.path, Path(save_directory))
        save_checkpoint(save_directory, self.model, self.text, extra)
        self._saved_extra = extra  # the card save_pretrained writes next describes these

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """``ModelHubMixin.from_pretrained`` (a directory or ``owner/name``; ``device=``,
        ``revision=``, ``token=``, ...); every failure is a :class:`CheckpointError`."""
        where = str(pretrained_model_name_or_path)
        if not Path(where).expanduser().exists() and not looks_like_hub_id(where):
            raise _not_found(where)  # before the mixin takes it for a repo id
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ShanError:
            raise
        except (OSError, ValueError) as e:  # the Hub's errors (offline, no such repo or file)
            raise CheckpointError(
                f"cannot load {str(pretrained_model_name_or_path)!r}: {type(e).__name__}: {e}"
            ) from None

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        device: torch.device | str = "cpu",
        **_config_fields: Any,
    ) -> LoadedModel:
        # ModelHubMixin.from_pretrained passes config.json's top-level fields along as keyword
        # arguments; they are ignored here: load_checkpoint reads and validates config.json.
        return load_checkpoint(
            model_id,
            device=device,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """``ModelHubMixin.push_to_hub``, with ``repo_id`` shown in the generated card."""
        kwargs["model_card_kwargs"] = {
            "repo_id": repo_id,
            **(kwargs.get("model_card_kwargs") or {}),
        }
        return super().push_to_hub(repo_id, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card ``save_pretrained`` writes: what the model is, its config, training
        metadata and region extractor, and how to load it."""
        cfg = self.config
        on = (("L2L", cfg.use_l2l), ("G2L", cfg.use_g2l), ("G2G", cfg.use_g2g))
        steps = [name for name, used in on if used]
        model_rows = [
            ("text encoder", cfg.text_encoder),
            ("joint embedding size", cfg.embed_dim),
            ("region feature size", cfg.img_dim),
            (
                "vocabulary / max words",
                f"{len(self.text) if cfg.text_encoder == 'gru' else '-'} / {cfg.max_words}",
            ),
            ("alignment steps (weights)", ", ".join(steps) + f" ({_fmt_tuple(cfg.step_weights)})"),
            ("attention temperature λ", cfg.smooth),
        ]
        extra = self._saved_extra or self.extra
        training_rows = [
            (k, extra[k]) for k in ("data", "train_split", "epoch", "rsum") if k in extra
        ]
        link = extra.get("detector")
        if isinstance(link, dict) and link.get("kind"):
            where = link.get("weights")
            detector_text = (
                f"This checkpoint names its region extractor in `config.json`: kind "
                f"`{link['kind']}`, weights `{where}`"
                + (f" (file `{link['filename']}`)" if link.get("filename") else "")
                + "; `shan.load` builds it."
            )
        else:
            detector_text = (
                "This checkpoint names no region extractor: pass `detector=` and "
                "`detector_weights=` to `shan.load`."
            )
        fields = {
            "repo_id": "OWNER/NAME",
            "model_rows": model_rows,
            "training_rows": training_rows,
            "detector_text": detector_text,
            "has_detector_dir": isinstance(link, dict) and link.get("weights") == DETECTOR_SUBDIR,
            **kwargs,
        }
        return super().generate_model_card(*args, **fields)


def _fmt_tuple(values: Any) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


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


def looks_like_hub_id(text: str, base: str | Path = ".") -> bool:
    """Whether ``text`` is a Hub repo id ``owner/name`` rather than a local path relative to
    ``base``: the pattern fits, no such path exists, and its first part is no local directory
    (so ``runs/typo`` is reported as not found instead of being looked up on the Hub)."""
    if not _REPO_ID_RE.match(text):
        return False
    root = Path(base)
    return not (root / text).exists() and not (root / text.split("/")[0]).is_dir()


def _snapshot(repo_id: str, what: str, **hub_kwargs: Any) -> Path:
    """``huggingface_hub.snapshot_download`` with one clear error."""
    import huggingface_hub

    kwargs = {k: v for k, v in hub_kwargs.items() if v is not None and v is not False}
    try:
        return Path(huggingface_hub.snapshot_download(repo_id=repo_id, **kwargs))
    except Exception as e:  # network, auth, missing repo: one clear message
        raise CheckpointError(
            f"{what} {repo_id!r} is not a local directory and could not be fetched from the "
            f"Hugging Face Hub: {type(e).__name__}: {e}"
        ) from None


def _checkpoint_in(folder: Path) -> Path:
    """The checkpoint in ``folder``: ``folder`` itself, or its ``shan/`` sub-folder when
    ``folder`` holds a checkpoint beside its detector (the shipped ``checkpoints/`` layout)."""
    sub = folder / CHECKPOINT_SUBDIR
    if not (folder / CONFIG_NAME).is_file() and (sub / CONFIG_NAME).is_file():
        return sub
    return folder


def _not_found(text: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint not found: {text} (neither a local directory nor a Hub repo id owner/name)"
    )


def _locate(path_or_repo: str | Path, **hub_kwargs: Any) -> tuple[Path, Path | None]:
    """``(checkpoint directory, root of the Hub snapshot it came from or None)``."""
    p = Path(path_or_repo).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"checkpoint path is not a directory: {p}")
        return _checkpoint_in(p), None
    text = str(path_or_repo)
    if not looks_like_hub_id(text):
        raise _not_found(text)
    root = _snapshot(text, "checkpoint", **hub_kwargs)
    return _checkpoint_in(root), root


def resolve_checkpoint_dir(path_or_repo: str | Path, **hub_kwargs: Any) -> Path:
    """The local checkpoint directory for a path or Hub repo id (downloaded when needed).

    ``hub_kwargs``: any of :data:`HUB_KWARGS`, passed to ``snapshot_download``.
    """
    return _locate(path_or_repo, **hub_kwargs)[0]


# ---- the detector a checkpoint names -------------------------------------------------------


def detector_link(kind: str, weights: str | Path, filename: str | None = None) -> dict[str, str]:
    """The ``extra["detector"]`` entry that names a checkpoint's region extractor.

    Args:
        kind: ``"toy"`` or ``"butd"`` (:data:`shan.detect.factory.KINDS`).
        weights: where the detector is: a path relative to the checkpoint directory (the
            shipped model says ``"../detector"``), an absolute path (local use only), or a Hub
            repo id ``owner/name``. For ``toy`` a detector directory; for ``butd`` a weights
            file, or a directory / repo that holds it.
        filename: the BUTD weights file inside a directory or repo (needed when it holds more
            than one ``.pth``/``.pkl``).
    """
    if kind not in DETECTOR_KINDS:
        raise CheckpointError(
            f"unknown detector kind {kind!r}; expected one of {', '.join(DETECTOR_KINDS)}"
        )
    link = {"kind": kind, "weights": Path(weights).as_posix()}
    if filename is not None:
        _check_filename(filename)
        link["filename"] = filename
    return link


@dataclass(frozen=True)
class DetectorRef:
    """A resolved detector link.

    Attributes:
        kind: ``"toy"`` or ``"butd"``.
        weights: the local toy detector directory, or the local BUTD weights file.
        source: how it was named (the link's ``weights`` or the path passed in).
    """

    kind: str
    weights: Path
    source: str


def _check_filename(filename: Any) -> None:
    parts = PurePosixPath(str(filename)).parts
    if not isinstance(filename, str) or not parts or ".." in parts or filename.startswith("/"):
        raise DetectorLinkError(f"detector filename {filename!r} must be a plain relative name")


def resolve_detector(
    link: dict[str, Any] | None,
    base: str | Path,
    within: str | Path | None = None,
    **hub_kwargs: Any,
) -> DetectorRef | None:
    """The detector a link (see :func:`detector_link`) names, as local files.

    ``weights`` is looked up, in order, as a path (absolute, or relative to ``base``, the
    checkpoint directory), then as a Hub repo id (downloaded: for ``butd`` with a
    ``filename``, only that file and the vocabulary ``.txt`` files). A directory given for
    ``butd`` must hold ``filename`` or exactly one ``.pth``/``.pkl``. With ``within`` (the
    root of a downloaded checkpoint) a path must stay inside it.

    Returns:
        ``None`` when ``link`` is ``None`` or empty.

    Raises:
        DetectorLinkError: a malformed link, or weights that cannot be found.
    """
    if not link:
        return None
    if not isinstance(link, dict):
        raise DetectorLinkError(f"the detector link must be a JSON object, not {link!r}")
    kind = link.get("kind")
    if kind is None:
        raise DetectorLinkError("the detector link names no kind", missing="kind")
    if kind not in DETECTOR_KINDS:
        raise DetectorLinkError(
            f"unknown detector kind {kind!r}; expected one of {', '.join(DETECTOR_KINDS)}",
            kind=str(kind),
        )
    weights = link.get("weights")
    if weights is None:
        raise DetectorLinkError(
            f"no weights for the {kind!r} detector", missing="weights", kind=kind
        )
    if not isinstance(weights, str) or not weights.strip():
        raise DetectorLinkError(f"detector weights must be a path or repo id, not {weights!r}")
    filename = link.get("filename")
    if filename is not None:
        _check_filename(filename)
    base = Path(base)
    p = Path(weights).expanduser()
    local = p if p.is_absolute() else base / p
    if local.exists():
        path = local.resolve()
        if within is not None and not path.is_relative_to(Path(within).resolve()):
            raise DetectorLinkError(
                f"detector weights {weights!r} point outside the downloaded checkpoint", kind=kind
            )
    elif looks_like_hub_id(weights, base):
        # the checkpoint's revision is not the detector repo's
        keep = {
            k: hub_kwargs[k] for k in ("cache_dir", "token", "local_files_only") if k in hub_kwargs
        }
        if kind == "butd" and filename:
            keep["allow_patterns"] = [filename, "*.txt"]
        path = _snapshot(weights, f"{kind} detector", **keep)
    else:
        raise DetectorLinkError(
            f"{kind} detector weights not found: {weights} (neither a path relative to {base} "
            "nor a Hub repo id owner/name)",
            kind=kind,
        )
    if filename:
        path = path / filename
    elif kind == "butd" and path.is_dir():
        found = sorted(q for q in path.iterdir() if q.suffix in (".pth", ".pkl") and q.is_file())
        if len(found) != 1:
            raise DetectorLinkError(
                f"{path} holds {len(found)} BUTD weights files (.pth/.pkl); name one with "
                "'filename' in the detector link",
                kind=kind,
            )
        path = found[0]
    if not path.exists():
        raise DetectorLinkError(f"{kind} detector weights not found: {path}", kind=kind)
    return DetectorRef(kind=kind, weights=path, source=weights)


def _copy_detector(link: Any, base: Path, out: Path) -> Any:
    """For ``save_pretrained``: copy a local detector into ``out/detector/`` and return the
    link to it; a link to a Hub repo, or one that resolves to nothing here, is kept as is."""
    if out.resolve() == base.resolve():
        return link  # saved in place: the link still holds
    weights = link.get("weights") if isinstance(link, dict) else None
    if not isinstance(weights, str) or looks_like_hub_id(weights, base):
        return link
    try:
        ref = resolve_detector(link, base)
    except DetectorLinkError as e:
        log.warning("the detector link is kept as is and may not resolve: %s", e)
        return link
    assert ref is not None
    dst = out / DETECTOR_SUBDIR
    dst.mkdir(parents=True, exist_ok=True)
    if ref.kind == "toy":
        from shan.detect.toy import CONFIG_NAME as DET_CONFIG
        from shan.detect.toy import TRAINING_NAME
        from shan.detect.toy import WEIGHTS_NAME as DET_WEIGHTS

        src = ref.weights if ref.weights.is_dir() else ref.weights.parent
        for name in (DET_WEIGHTS, DET_CONFIG, TRAINING_NAME):
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        return detector_link("toy", DETECTOR_SUBDIR)
    shutil.copy2(ref.weights, dst / ref.weights.name)
    for name in ("objects_vocab.txt", "attributes_vocab.txt"):
        if (ref.weights.parent / name).is_file():
            shutil.copy2(ref.weights.parent / name, dst / name)
    return detector_link("butd", DETECTOR_SUBDIR, filename=ref.weights.name)


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


def load_checkpoint(
    path_or_repo: str | Path, device: torch.device | str = "cpu", **hub_kwargs: Any
) -> LoadedModel:
    """Rebuild a SHAN from a checkpoint directory or Hub repo id, in eval mode on ``device``.

    ``hub_kwargs``: any of :data:`HUB_KWARGS` (``revision``, ``token``, ...), used only when
    ``path_or_repo`` is a Hub repo id.

    Raises:
        CheckpointError: missing files, unreadable config, weights that do not fit the config
            (names the keys/shapes), or a vocabulary whose size differs from ``vocab_size``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from shan.model.shan import SHAN

    d = resolve_checkpoint_dir(path_or_repo, **hub_kwargs)
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


@dataclass
class ShanBundle:
    """What :func:`load` returns: a SHAN checkpoint and the region extractor it names.

    Attributes:
        model: the SHAN module in eval mode on ``device``.
        text: its caption processor (``encode_batch(texts, max_words)``).
        extractor: the region extractor (``extract([PIL images]) -> [Regions]``) on ``device``.
        checkpoint: the :class:`LoadedModel` (config, extra, path; ``save_pretrained``, ...).
        detector: which detector was loaded, from where.
        device: where both run.
    """

    model: torch.nn.Module
    text: Vocabulary | TransformerTextProcessor
    extractor: RegionExtractor
    checkpoint: LoadedModel
    detector: DetectorRef
    device: torch.device


def load(
    path_or_repo: str | Path,
    device: torch.device | str = "auto",
    detector: str | None = None,
    detector_weights: str | Path | None = None,
    **hub_kwargs: Any,
) -> ShanBundle:
    """A checkpoint (local directory, ``checkpoints/``-style folder or Hub repo id) and the
    region extractor it names, both on ``device`` (``"auto"``: CUDA when present).

    ``detector`` / ``detector_weights`` override the checkpoint's link (``detector_weights``:
    a path, relative to the working directory, or a Hub repo id). ``hub_kwargs``: any of
    :data:`HUB_KWARGS`, for the checkpoint's repo.

    Raises:
        shan.errors.DeviceError: ``device`` is not available.
        CheckpointError: the checkpoint cannot be found or loaded.
        DetectorLinkError: no detector is named (``missing`` says what), or it cannot be
            found or loaded.
    """
    from shan.detect.factory import build_extractor

    dev = resolve_device(device)
    ckpt_dir, root = _locate(path_or_repo, **hub_kwargs)
    ckpt = load_checkpoint(ckpt_dir, device=dev)
    link = ckpt.extra.get("detector") or {}
    if not isinstance(link, dict):
        raise DetectorLinkError(f"{ckpt_dir / CONFIG_NAME}: 'detector' must be an object")
    base: Path = ckpt_dir
    within = root
    if detector_weights is not None:
        kind = detector or link.get("kind")
        link = {"kind": kind, "weights": str(detector_weights)}
        base, within = Path.cwd(), None
    elif detector is not None and detector != link.get("kind"):
        link = {"kind": detector}
    try:
        ref = resolve_detector(link, base, within, **hub_kwargs)
    except DetectorLinkError as e:
        if e.missing is None:
            raise DetectorLinkError(f"{ckpt_dir / CONFIG_NAME}: {e}", kind=e.kind) from None
        raise
    if ref is None:
        raise DetectorLinkError(
            f"checkpoint {str(path_or_repo)!r} names no detector", missing="kind"
        )
    try:
        extractor = build_extractor(ref.kind, ref.weights, device=dev)
    except (ShanError, OSError, ValueError, RuntimeError) as e:
        log.debug("build_extractor failed", exc_info=True)
        raise DetectorLinkError(
            f"could not load the {ref.kind} detector from {ref.weights}: {e}", kind=ref.kind
        ) from e
    dim = getattr(extractor, "feature_dim", None)
    if dim is not None and dim != ckpt.config.img_dim:
        raise DetectorLinkError(
            f"the {ref.kind} detector at {ref.weights} gives {dim}-d region features but the "
            f"checkpoint expects img_dim={ckpt.config.img_dim} (a detector of another model?)",
            kind=ref.kind,
        )
    return ShanBundle(ckpt.model, ckpt.text, extractor, ckpt, ref, dev)


__all__ = [
    "CHECKPOINT_SUBDIR",
    "CONFIG_NAME",
    "CheckpointError",
    "DETECTOR_SUBDIR",
    "DetectorLinkError",
    "DetectorRef",
    "FORMAT_VERSION",
    "HUB_KWARGS",
    "LoadedModel",
    "ShanBundle",
    "VOCAB_NAME",
    "WEIGHTS_NAME",
    "detector_link",
    "load",
    "load_checkpoint",
    "looks_like_hub_id",
    "read_config",
    "resolve_checkpoint_dir",
    "resolve_detector",
    "save_checkpoint",
]
