"""Load the public Bottom-Up-Attention weights (both formats) into ``shan.detect.butd.ButdNet``.

Two public files hold the same Caffe-trained network (see ``docs/REAL_PHOTOS.md``):

- **MILVLG** ``bua-caffe-frcn-r101_with_attributes.pth`` (and the ``-k36``/``-k10-100`` files): a
  torch state dict, perhaps under ``"model"``; read with ``torch.load(weights_only=True)``.
- **airsplay** ``faster_rcnn_from_caffe_attr.pkl``: a detectron2-style pickle of numpy arrays,
  perhaps under ``"model"``; read with a restricted unpickler that only rebuilds numpy arrays and
  plain containers. Its layout differs: one objectness logit per anchor (12 channels),
  class-specific ``bbox_pred`` without a background block, background as the *last* class and
  attribute, and the attribute layers called ``cls_embedding``/``fc_attr``/``attr_score``. It is
  converted to the MILVLG layout (background first, two-logit objectness whose softmax equals the
  sigmoid).

Every expected tensor must be present with the expected shape; anything missing, unexpected or
mis-shaped raises :class:`WeightsError` naming the keys. Nothing is skipped silently; the only
keys tolerated without use are ``*.num_batches_tracked`` and ``pixel_std``.
"""

from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shan.errors import ShanError

ANCHORS_KEY = "proposal_generator.anchor_generator.cell_anchors.0"
PIXEL_MEAN_KEY = "pixel_mean"
_TOLERATED = re.compile(r"(^|\.)num_batches_tracked$|^pixel_std$")

# Widths of the Caffe ResNet-101 (fixed by the public weights).
STEM_CH = 64
STAGES = (  # name, in, mid, out
    ("res2", 64, 64, 256),
    ("res3", 256, 128, 512),
    ("res4", 512, 256, 1024),
)
RES5 = (1024, 512, 2048)
RPN_CH = 512
EMBED_DIM = 256
ATTR_HIDDEN = 512


class WeightsError(ShanError, ValueError):
    """The weights file cannot be read or does not match the BUTD network."""


@dataclass
class ButdArch:
    """What varies between BUTD weight files (read from the file, not assumed).

    ``num_classes``/``num_attributes`` include the background (index 0); ``num_attributes == 0``
    means the file has no attribute head.
    """

    res4_blocks: int = 23
    num_classes: int = 1601
    num_attributes: int = 401
    num_anchors: int = 12


@dataclass
class LoadedWeights:
    """A checkpoint converted to :class:`~shan.detect.butd.ButdNet` parameter names and layout."""

    state_dict: dict[str, torch.Tensor]
    arch: ButdArch
    cell_anchors: torch.Tensor | None  # (A, 4) when the file stores them
    pixel_mean: tuple[float, float, float] | None  # BGR, when the file stores it
    source_format: str  # "milvlg" or "detectron2-pkl"


# ----------------------------------------------------------------------------- schemas
def _norm(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}


def _block(prefix: str, cin: int, mid: int, cout: int, shortcut: bool) -> dict:
    s: dict[str, tuple[int, ...]] = {}
    for i, (o, k, ci) in enumerate(((mid, 1, cin), (mid, 3, mid), (cout, 1, mid)), start=1):
        s[f"{prefix}.conv{i}.weight"] = (o, ci, k, k)
        s.update(_norm(f"{prefix}.conv{i}.norm", o))
    if shortcut:
        s[f"{prefix}.shortcut.weight"] = (cout, cin, 1, 1)
        s.update(_norm(f"{prefix}.shortcut.norm", cout))
    return s


def milvlg_schema(arch: ButdArch) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a MILVLG state dict for ``arch`` -> its shape (no allocation)."""
    s: dict[str, tuple[int, ...]] = {"backbone.stem.conv1.weight": (STEM_CH, 3, 7, 7)}
    s.update(_norm("backbone.stem.conv1.norm", STEM_CH))
    depth = {"res2": 3, "res3": 4, "res4": arch.res4_blocks}
    for name, cin, mid, cout in STAGES:
        for i in range(depth[name]):
            s.update(_block(f"backbone.{name}.{i}", cin if i == 0 else cout, mid, cout, i == 0))
    a = arch.num_anchors
    rpn = "proposal_generator.rpn_head"
    s[f"{rpn}.conv.weight"] = (RPN_CH, STAGES[-1][3], 3, 3)
    s[f"{rpn}.conv.bias"] = (RPN_CH,)
    s[f"{rpn}.objectness_logits.weight"] = (2 * a, RPN_CH, 1, 1)
    s[f"{rpn}.objectness_logits.bias"] = (2 * a,)
    s[f"{rpn}.anchor_deltas.weight"] = (4 * a, RPN_CH, 1, 1)
    s[f"{rpn}.anchor_deltas.bias"] = (4 * a,)
    cin, mid, cout = RES5
    for i in range(3):
        s.update(_block(f"roi_heads.res5.{i}", cin if i == 0 else cout, mid, cout, i == 0))
    bp = "roi_heads.box_predictor"
    c = arch.num_classes
    s[f"{bp}.cls_score.weight"] = (c, cout)
    s[f"{bp}.cls_score.bias"] = (c,)
    s[f"{bp}.bbox_pred.weight"] = (4 * c, cout)
    s[f"{bp}.bbox_pred.bias"] = (4 * c,)
    if arch.num_attributes:
        s[f"{bp}.cls_embed.weight"] = (c, EMBED_DIM)
        s[f"{bp}.attr_linear1.weight"] = (ATTR_HIDDEN, cout + EMBED_DIM)
        s[f"{bp}.attr_linear1.bias"] = (ATTR_HIDDEN,)
        s[f"{bp}.attr_linear2.weight"] = (arch.num_attributes, ATTR_HIDDEN)
        s[f"{bp}.attr_linear2.bias"] = (arch.num_attributes,)
    return s


_PKL_RENAMES = {  # detectron2-pkl name -> MILVLG name (attribute head)
    "roi_heads.box_predictor.cls_embedding.weight": "roi_heads.box_predictor.cls_embed.weight",
    "roi_heads.box_predictor.fc_attr.weight": "roi_heads.box_predictor.attr_linear1.weight",
    "roi_heads.box_predictor.fc_attr.bias": "roi_heads.box_predictor.attr_linear1.bias",
    "roi_heads.box_predictor.attr_score.weight": "roi_heads.box_predictor.attr_linear2.weight",
    "roi_heads.box_predictor.attr_score.bias": "roi_heads.box_predictor.attr_linear2.bias",
}
_PKL_FROM_MILVLG = {v: k for k, v in _PKL_RENAMES.items()}


def pkl_schema(arch: ButdArch) -> dict[str, tuple[int, ...]]:
    """Every array name of the detectron2-style pickle for ``arch`` -> its shape.

    ``bbox_pred`` is listed with its 6400-row (no background block) shape; the loader also accepts
    a 6404-row one with the background block last.
    """
    s = {_PKL_FROM_MILVLG.get(k, k): v for k, v in milvlg_schema(arch).items()}
    rpn = "proposal_generator.rpn_head"
    a = arch.num_anchors
    s[f"{rpn}.objectness_logits.weight"] = (a, RPN_CH, 1, 1)
    s[f"{rpn}.objectness_logits.bias"] = (a,)
    c = arch.num_classes
    s["roi_heads.box_predictor.bbox_pred.weight"] = (4 * (c - 1), RES5[2])
    s["roi_heads.box_predictor.bbox_pred.bias"] = (4 * (c - 1),)
    return s


def module_name(milvlg_key: str) -> str:
    """MILVLG/detectron2 tensor name -> the torchvision-style name used by ``ButdNet``.

    ``backbone.stem.conv1(.norm)`` -> ``backbone.conv1``/``backbone.bn1``; ``backbone.res{2,3,4}.i``
    -> ``backbone.layer{1,2,3}.i``; ``convK.norm`` -> ``bnK``; ``shortcut(.norm)`` ->
    ``downsample.0``/``downsample.1``; ``roi_heads.res5`` -> ``res5``;
    ``proposal_generator.rpn_head`` -> ``rpn``; ``roi_heads.box_predictor`` -> ``predictor``.
    """
    k = milvlg_key.replace("backbone.stem.conv1.norm.", "backbone.bn1.")
    k = k.replace("backbone.stem.conv1.", "backbone.conv1.")
    k = re.sub(r"^backbone\.res([234])\.", lambda m: f"backbone.layer{int(m[1]) - 1}.", k)
    k = k.replace("roi_heads.res5.", "res5.")
    k = re.sub(r"\.conv([123])\.norm\.", r".bn\1.", k)
    k = k.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
    k = k.replace("proposal_generator.rpn_head.", "rpn.")
    return k.replace("roi_heads.box_predictor.", "predictor.")


# ----------------------------------------------------------------------------- file reading
def _numpy_global(module: str, name: str) -> Any:
    for mod in (module, module.replace("numpy.core", "numpy._core", 1)):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise WeightsError(f"cannot resolve {module}.{name} needed by the pickle")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers only; any other global is refused."""

    _NUMPY = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
    _BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes",
                 "bytearray", "bool", "complex"}  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._NUMPY:
            return _numpy_global(module, name)
        if module in ("builtins", "__builtin__") and name in self._BUILTINS:
            return getattr(__import__("builtins"), name)
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles
            import codecs

            return codecs.encode
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        raise WeightsError(
            f"refusing to unpickle {module}.{name}: a BUTD .pkl may only contain numpy arrays "
            "in dicts/lists (is this really the detectron2-style weights file?)"
        )


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read a weights file -> (flat ``{name: tensor or array}``, format ``"milvlg"|"pkl"``).

    ``.pkl``/``.pickle`` files go through the restricted unpickler, anything else through
    ``torch.load(weights_only=True)``. A top-level ``"model"`` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"BUTD weights file not found: {path}")
    if path.suffix.lower() in (".pkl", ".pickle"):
        try:
            with open(path, "rb") as f:
                obj = _ArraysOnlyUnpickler(f, encoding="latin1").load()
        except WeightsError:
            raise
        except Exception as e:  # corrupt/truncated file
            raise WeightsError(f"cannot read {path} as a pickle: {e}") from e
        fmt = "pkl"
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"cannot read {path} with torch.load(weights_only=True): {e}. A detectron2-style "
                "pickle of numpy arrays must have the .pkl suffix."
            ) from e
        fmt = "milvlg"
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{path}: expected a dict of named tensors (maybe under 'model')")
    return obj, fmt


def _to_tensor(name: str, v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        t = v
    elif isinstance(v, np.ndarray):
        if not np.issubdtype(v.dtype, np.number):
            raise WeightsError(f"{name}: array of dtype {v.dtype} is not numeric")
        t = torch.from_numpy(np.ascontiguousarray(v))
    else:
        raise WeightsError(f"{name}: expected a tensor/array, got {type(v).__name__}")
    return t.float() if t.is_floating_point() or name.endswith("cell_anchors.0") else t


# ----------------------------------------------------------------------------- validation
def _infer_arch(sd: dict[str, Any], fmt: str) -> ButdArch:
    blocks = [int(m[1]) for k in sd if (m := re.match(r"backbone\.res4\.(\d+)\.", k))]
    arch = ButdArch(res4_blocks=max(blocks) + 1 if blocks else 23)
    cls = sd.get("roi_heads.box_predictor.cls_score.weight")
    if cls is not None and len(cls.shape) == 2:
        arch.num_classes = int(cls.shape[0])
    attr_key = "attr_score" if fmt == "pkl" else "attr_linear2"
    attr = sd.get(f"roi_heads.box_predictor.{attr_key}.weight")
    if attr is not None and len(attr.shape) == 2:
        arch.num_attributes = int(attr.shape[0])
    elif not any(re.search(r"(cls_embed|attr_|fc_attr|attr_score)", k) for k in sd):
        arch.num_attributes = 0  # no attribute head at all
    anchors = sd.get(ANCHORS_KEY)
    if anchors is not None and len(anchors.shape) == 2:
        arch.num_anchors = int(anchors.shape[0])
    return arch


def _fmt_list(keys: list[str], limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_keys(
    sd: dict[str, Any], schema: dict[str, tuple[int, ...]], path: str | Path, what: str
) -> None:
    """Raise :class:`WeightsError` unless ``sd`` has exactly the ``schema`` tensors and shapes.

    ``num_batches_tracked``, ``pixel_std``, ``pixel_mean`` (3 values) and the anchors key
    (``A x 4``) are also accepted.
    """
    extra_ok = {ANCHORS_KEY: None, PIXEL_MEAN_KEY: None}
    missing = [k for k in schema if k not in sd]
    unexpected = [
        k for k in sd if k not in schema and k not in extra_ok and not _TOLERATED.search(k)
    ]
    bad = []
    for k, shape in schema.items():
        if k in sd and tuple(sd[k].shape) != tuple(shape):
            bad.append(f"{k}: expected {tuple(shape)}, got {tuple(sd[k].shape)}")
    if ANCHORS_KEY in sd and tuple(sd[ANCHORS_KEY].shape)[-1:] != (4,):
        bad.append(f"{ANCHORS_KEY}: expected (A, 4), got {tuple(sd[ANCHORS_KEY].shape)}")
    if PIXEL_MEAN_KEY in sd and int(np.prod(sd[PIXEL_MEAN_KEY].shape)) != 3:
        bad.append(f"{PIXEL_MEAN_KEY}: expected 3 values, got {tuple(sd[PIXEL_MEAN_KEY].shape)}")
    if missing or unexpected or bad:
        parts = [f"{path} does not match the {what} BUTD layout:"]
        if missing:
            parts.append(f"missing {len(missing)} keys: {_fmt_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_fmt_list(unexpected)}")
        if bad:
            parts.append(f"{len(bad)} mis-shaped: " + "; ".join(bad[:12]))
        raise WeightsError("\n  ".join(parts))


def _bg_first(t: torch.Tensor, block: int = 1) -> torch.Tensor:
    """Move the last ``block`` rows (the background) to the front."""
    return torch.cat([t[-block:], t[:-block]], dim=0)


def convert_pkl(sd: dict[str, torch.Tensor], arch: ButdArch) -> dict[str, torch.Tensor]:
    """detectron2-pkl layout -> MILVLG layout (names, background first, two-logit objectness)."""
    out = {_PKL_RENAMES.get(k, k): v for k, v in sd.items()}
    rpn = "proposal_generator.rpn_head.objectness_logits"
    w, b = out[f"{rpn}.weight"], out[f"{rpn}.bias"]
    # softmax([0, l]) picks sigmoid(l) as the foreground probability.
    out[f"{rpn}.weight"] = torch.cat([torch.zeros_like(w), w], dim=0)
    out[f"{rpn}.bias"] = torch.cat([torch.zeros_like(b), b], dim=0)
    bp = "roi_heads.box_predictor"
    for name in ("cls_score.weight", "cls_score.bias", "cls_embed.weight"):
        if f"{bp}.{name}" in out:
            out[f"{bp}.{name}"] = _bg_first(out[f"{bp}.{name}"])
    for name in ("attr_linear2.weight", "attr_linear2.bias"):
        if f"{bp}.{name}" in out:
            out[f"{bp}.{name}"] = _bg_first(out[f"{bp}.{name}"])
    for name in ("bbox_pred.weight", "bbox_pred.bias"):
        t = out[f"{bp}.{name}"]
        if t.shape[0] == 4 * (arch.num_classes - 1):  # no background block: add a zero one
            out[f"{bp}.{name}"] = torch.cat([torch.zeros_like(t[:4]), t], dim=0)
        else:  # background block last
            out[f"{bp}.{name}"] = _bg_first(t, 4)
    return out


def load_butd_weights(path: str | Path) -> LoadedWeights:
    """Read, validate and convert a BUTD weights file (either public format).

    Raises:
        WeightsError: unreadable file, a refused pickle global, or missing / unexpected /
            mis-shaped tensors (all named in the message).
    """
    raw, fmt = read_checkpoint(path)
    sd = {k: _to_tensor(k, v) for k, v in raw.items()}
    arch = _infer_arch(sd, fmt)
    if fmt == "pkl":
        schema = pkl_schema(arch)
        bb = "roi_heads.box_predictor.bbox_pred"
        if bb + ".weight" in sd and sd[bb + ".weight"].shape[0] == 4 * arch.num_classes:
            schema[bb + ".weight"] = (4 * arch.num_classes, RES5[2])  # background block last
            schema[bb + ".bias"] = (4 * arch.num_classes,)
        check_keys(sd, schema, path, "detectron2-pkl")
        sd = convert_pkl(sd, arch)
    else:
        check_keys(sd, milvlg_schema(arch), path, "MILVLG")
    anchors = sd.get(ANCHORS_KEY)
    mean = sd.get(PIXEL_MEAN_KEY)
    pixel_mean = None if mean is None else tuple(float(x) for x in mean.flatten().tolist())
    state = {module_name(k): v for k, v in sd.items() if k in milvlg_schema(arch)}
    return LoadedWeights(
        state_dict=state,
        arch=arch,
        cell_anchors=None if anchors is None else anchors.float(),
        pixel_mean=pixel_mean,  # type: ignore[arg-type]
        source_format="milvlg" if fmt == "milvlg" else "detectron2-pkl",
    )


def random_weights(
    arch: ButdArch | None = None, fmt: str = "milvlg", seed: int = 0
) -> dict[str, Any]:
    """A random BUTD checkpoint with the exact names and shapes of a public file.

    For tests and benchmarks (random weights cost the same time as real ones). ``fmt``:
    ``"milvlg"`` -> ``{name: tensor}``; ``"pkl"`` -> ``{name: float32 numpy array}``. Convs get
    He-scaled weights and norms identity statistics, so activations stay finite through the net.
    """
    arch = arch or ButdArch()
    if fmt not in ("milvlg", "pkl"):
        raise ValueError(f"fmt must be 'milvlg' or 'pkl', got {fmt!r}")
    schema = milvlg_schema(arch) if fmt == "milvlg" else pkl_schema(arch)
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for k, shape in schema.items():
        if k.endswith("running_var"):
            t = torch.ones(shape)
        elif k.endswith("running_mean") or (k.endswith(".bias") and ".norm." in k):
            t = torch.zeros(shape)
        elif k.endswith(".weight") and ".norm." in k:
            t = torch.ones(shape)
        elif "rpn_head." in k:  # small outputs: deltas near 0, objectness logits near 0
            t = torch.randn(shape, generator=g) * (0.001 if k.endswith("weight") else 0.1)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
            if ".conv3." in k or ".shortcut." in k:  # keep residual sums moderate
                t *= 0.5
        else:  # linear layers / embeddings: small, so class probabilities are not saturated
            t = torch.randn(shape, generator=g) * (0.001 if k.endswith("weight") else 0.1)
        out[k] = t if fmt == "milvlg" else t.numpy()
    return out
