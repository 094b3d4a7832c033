"""Load the public Bottom-Up-Attention weights (both formats) into ``shan.detect.butd.ButdNet``.

Two public files hold the same Caffe-trained network (see ``docs/REAL_PHOTOS.md``):

- **MILVLG** ``bua-caffe-frcn-r101_with_attributes.pth`` (and the ``-k36``/``-k10-100`` files): a
  torch state dict, perhaps under ``"model"``; read with ``torch.load(weights_only=True)``. Its
  RPN runs Caffe anchors with the "+1" box convention.
- **airsplay** ``faster_rcnn_from_caffe_attr.pkl``: a detectron2-style pickle of numpy arrays,
  perhaps under ``"model"``; read with a restricted unpickler that only rebuilds numpy arrays and
  plain containers. Its layout differs: one objectness logit per anchor (12 channels),
  class-specific ``bbox_pred`` without a background block, background as the *last* class and
  attribute, and the attribute layers called ``cls_embedding``/``fc_attr``/``attr_score``. It is
  converted to the MILVLG layout (background first, two-logit objectness whose softmax equals the
  sigmoid). Its RPN channels follow detectron2's anchors (the port's config: sizes 64-512 ordered
  size-first, aspect ratios 0.5/1/2, offset 0) and detectron2's "+0" box convention; anchors
  stored in the file are used, else those are generated (never Caffe's).

Loading is checked in this order, and nothing is allocated from the file's numbers before the
checks that bound them have passed:

0. a zip-format torch file unpacks to at most 2 GiB (read from its directory, before
   ``torch.load``);
1. every value is a dense float tensor/array (an integer scalar for ``num_batches_tracked``) of at
   most 4 dimensions whose data cover its shape, and every block index lies inside ResNet-101
   (res2 3 blocks, res3 4, res4 23, res5 3);
2. the class, attribute and anchor counts read from shapes are at most the public network's
   (1601, 401, 12);
3. every expected tensor is present with the expected shape, nothing unexpected;
4. all values are finite.

Any failure raises :class:`WeightsError` naming the keys. Frozen norms stored as
``weight`` and ``bias`` only get the default statistics (mean 0, var 1, as detectron2's
``FrozenBatchNorm2d`` loader fills them), said in a log line. The only keys tolerated without use
are ``*.num_batches_tracked`` (of an expected norm) and ``pixel_std``.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shan.detect import caffe_ops
from shan.errors import ShanError

log = logging.getLogger(__name__)

ANCHORS_KEY = "proposal_generator.anchor_generator.cell_anchors.0"
PIXEL_MEAN_KEY = "pixel_mean"
PIXEL_STD_KEY = "pixel_std"
NUM_BATCHES = "num_batches_tracked"

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

# Bounds from the architecture (ResNet-101 C4 BUTD), checked before the file's numbers are used.
MAX_BLOCKS = {"backbone.res2": 3, "backbone.res3": 4, "backbone.res4": 23, "roi_heads.res5": 3}
MAX_CLASSES = 1601  # 1600 Visual Genome objects + background
MAX_ATTRIBUTES = 401  # 400 attributes + background
MAX_ANCHORS = 12
MAX_NDIM = 4
MAX_UNPACKED_BYTES = 2 * 2**30  # a torch zip file's members, all together
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_BLOCK_KEY = re.compile(r"^(backbone\.res[234]|roi_heads\.res5)\.([^.]*)\.")


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
    cell_anchors: torch.Tensor  # (A, 4): the file's own, else generated for box_convention
    pixel_mean: tuple[float, float, float] | None  # BGR, when the file stores it
    source_format: str  # "milvlg" or "detectron2-pkl"
    box_convention: str = "caffe"  # of the anchors' origin: "caffe" (.pth) or "detectron2" (.pkl)
    anchors_from_file: bool = False
    filled_norms: list[str] = field(default_factory=list)  # norms given default statistics


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


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _check_archive_size(path: Path) -> None:
    """Refuse a zip-format torch file whose members unpack to more than ``MAX_UNPACKED_BYTES``.

    ``torch.load`` allocates each member at its declared unpacked size, and deflate compresses
    zeros 1000-fold, so a few MB of file could otherwise claim many GB. Read from the zip's
    central directory only.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(f"cannot read {path} as a torch zip file: {_first_line(e)}") from e
    if total > MAX_UNPACKED_BYTES:
        raise WeightsError(
            f"{path}: its archive unpacks to {total / 2**20:,.1f} MiB, more than the "
            f"{MAX_UNPACKED_BYTES / 2**20:,.0f} MiB allowed (the BUTD network is about 260 MiB); "
            "refusing to load it"
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
            raise WeightsError(f"cannot read {path} as a pickle: {_first_line(e)}") from e
        fmt = "pkl"
    else:
        _check_archive_size(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"cannot read {path} with torch.load(weights_only=True): {_first_line(e)} (a "
                "detectron2-style pickle of numpy arrays must have the .pkl suffix)"
            ) from e
        fmt = "milvlg"
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{path}: expected a dict of named tensors (maybe under 'model')")
    return obj, fmt


# ----------------------------------------------------------------------------- validation
def _short(key: str, limit: int = 120) -> str:
    """A key as it appears in messages (hostile files may hold very long names)."""
    return key if len(key) <= limit else f"{key[:limit]}...({len(key)} chars)"


def _fmt_list(keys: list[str], limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(_short(k) for k in keys[:limit]) + more


def _fail(path: str | Path, problems: list[tuple[str, list[str]]]) -> None:
    """Raise one single-line :class:`WeightsError` listing every non-empty problem's keys."""
    parts = [f"{what} ({len(keys)}): {_fmt_list(keys)}" for what, keys in problems if keys]
    if parts:
        raise WeightsError(f"{path}: " + "; ".join(parts))


def check_values(raw: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor | np.ndarray]:
    """Step 1: types, dimensions, data sizes and block indices, from metadata only.

    Returns the values with numpy scalars turned into 0-d arrays. Raises :class:`WeightsError`
    naming every key that is not a dense floating tensor/array (integer scalar for
    ``num_batches_tracked``) of at most ``MAX_NDIM`` dimensions whose data cover its shape, or whose
    block index is outside ResNet-101 (``MAX_BLOCKS``).
    """
    out: dict[str, torch.Tensor | np.ndarray] = {}
    not_array, bad_dtype, bad_ndim, short_data, bad_index = [], [], [], [], []
    for k, v in raw.items():
        m = _BLOCK_KEY.match(k)
        if m and not (re.fullmatch(r"[0-9]{1,2}", m[2]) and int(m[2]) < MAX_BLOCKS[m[1]]):
            bad_index.append(k)
        if isinstance(v, np.generic):
            v = np.asarray(v)
        if isinstance(v, torch.Tensor):
            if v.layout != torch.strided:
                not_array.append(f"{k} ({v.layout} tensor)")
                continue
            floating, integer = v.is_floating_point(), v.dtype in _INT_DTYPES
            dtype = str(v.dtype)
            if v.numel() * v.element_size() > v.untyped_storage().nbytes():
                short_data.append(f"{k} {tuple(v.shape)}")  # expanded / overlapping view
        elif isinstance(v, np.ndarray):
            floating, integer = v.dtype.kind == "f", v.dtype.kind in "iu"
            dtype = str(v.dtype)
        else:
            not_array.append(f"{k} ({type(v).__name__})")
            continue
        if k.endswith("." + NUM_BATCHES):
            if not integer or v.ndim > 1 or int(np.prod(v.shape)) != 1:
                bad_dtype.append(f"{k} ({dtype} {tuple(v.shape)}, expected one integer)")
        elif not floating:
            bad_dtype.append(f"{k} ({dtype})")
        if v.ndim > MAX_NDIM:
            bad_ndim.append(f"{k} ({v.ndim} dims)")
        out[k] = v
    bounds = ", ".join(f"{n.split('.')[-1]} {b}" for n, b in MAX_BLOCKS.items())
    _fail(path, [
        ("not a tensor or array", not_array),
        ("not a floating-point array", bad_dtype),
        (f"more than {MAX_NDIM} dimensions", bad_ndim),
        ("data smaller than the shape", short_data),
        (f"block index outside ResNet-101 ({bounds} blocks)", bad_index),
    ])  # fmt: skip
    return out


def _infer_arch(sd: dict[str, Any], fmt: str, path: str | Path) -> ButdArch:
    """Step 2: the architecture read from key names and shapes (metadata only), within bounds."""
    blocks = [int(m[1]) for k in sd if (m := re.match(r"backbone\.res4\.([0-9]{1,2})\.", k))]
    arch = ButdArch(res4_blocks=max(blocks) + 1 if blocks else 23)
    bp = "roi_heads.box_predictor"
    bad = []
    cls = sd.get(f"{bp}.cls_score.weight")
    if cls is not None and cls.ndim == 2:
        arch.num_classes = int(cls.shape[0])
        if not 2 <= arch.num_classes <= MAX_CLASSES:
            bad.append(
                f"{bp}.cls_score.weight: {arch.num_classes} classes, expected 2..{MAX_CLASSES}"
            )
    attr_key = f"{bp}.attr_score.weight" if fmt == "pkl" else f"{bp}.attr_linear2.weight"
    attr = sd.get(attr_key)
    if attr is not None and attr.ndim == 2:
        arch.num_attributes = int(attr.shape[0])
        if not 2 <= arch.num_attributes <= MAX_ATTRIBUTES:
            bad.append(f"{attr_key}: {arch.num_attributes} attributes, "
                       f"expected 2..{MAX_ATTRIBUTES}")  # fmt: skip
    elif not any(re.search(r"(cls_embed|attr_|fc_attr|attr_score)", k) for k in sd):
        arch.num_attributes = 0  # no attribute head at all
    anchors = sd.get(ANCHORS_KEY)
    if anchors is not None and anchors.ndim == 2:
        arch.num_anchors = int(anchors.shape[0])
        if not 1 <= arch.num_anchors <= MAX_ANCHORS:
            bad.append(f"{ANCHORS_KEY}: {arch.num_anchors} anchors, expected 1..{MAX_ANCHORS}")
    _fail(path, [("outside the BUTD network's sizes", bad)])
    return arch


def _norms_without_stats(sd: dict[str, Any], schema: dict[str, tuple[int, ...]]) -> list[str]:
    """Norm prefixes with ``weight`` and ``bias`` in ``sd`` but neither running statistic."""
    out = []
    for k in schema:
        if k.endswith(".norm.running_mean"):
            p = k[: -len("running_mean")]
            has_affine = p + "weight" in sd and p + "bias" in sd
            if has_affine and p + "running_mean" not in sd and p + "running_var" not in sd:
                out.append(p[:-1])
    return out


def check_keys(
    sd: dict[str, Any], schema: dict[str, tuple[int, ...]], path: str | Path, what: str
) -> None:
    """Step 3: raise :class:`WeightsError` unless ``sd`` has exactly the ``schema`` tensors and
    shapes (declared shapes only; nothing is read or allocated).

    Also accepted: ``<norm>.num_batches_tracked`` of a norm in ``schema`` (one value), ``pixel_std``
    and ``pixel_mean`` (3 values) and the anchors key (``A x 4``).
    """

    def tolerated(k: str) -> bool:
        if k.endswith("." + NUM_BATCHES):
            return k[: -len(NUM_BATCHES)] + "weight" in schema
        return k in (ANCHORS_KEY, PIXEL_MEAN_KEY, PIXEL_STD_KEY)

    missing = [k for k in schema if k not in sd]
    unexpected = [k for k in sd if k not in schema and not tolerated(k)]
    bad = [
        f"{k}: expected {tuple(shape)}, got {tuple(sd[k].shape)}"
        for k, shape in schema.items()
        if k in sd and tuple(sd[k].shape) != tuple(shape)
    ]
    if ANCHORS_KEY in sd and (sd[ANCHORS_KEY].ndim != 2 or sd[ANCHORS_KEY].shape[-1] != 4):
        bad.append(f"{ANCHORS_KEY}: expected (A, 4), got {tuple(sd[ANCHORS_KEY].shape)}")
    for k in (PIXEL_MEAN_KEY, PIXEL_STD_KEY):
        if k in sd and int(np.prod(sd[k].shape)) != 3:
            bad.append(f"{k}: expected 3 values, got {tuple(sd[k].shape)}")
    if missing or unexpected or bad:
        parts = [f"{path} does not match the {what} BUTD layout:"]
        if missing:
            parts.append(f"missing {len(missing)} keys: {_fmt_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_fmt_list(unexpected)}")
        if bad:
            parts.append(f"{len(bad)} mis-shaped: " + "; ".join(_short(b, 200) for b in bad[:12]))
        raise WeightsError(" ".join(parts[:1]) + " " + "; ".join(parts[1:]))


def _check_finite(sd: dict[str, Any], keys: list[str], path: str | Path) -> None:
    """Step 4: every value of ``keys`` finite (shapes are bounded by now)."""
    bad = []
    for k in keys:
        v = sd[k]
        finite = torch.isfinite(v).all() if isinstance(v, torch.Tensor) else np.isfinite(v).all()
        if not bool(finite):
            bad.append(k)
    _fail(path, [("non-finite values (NaN or inf)", bad)])


def _to_tensor(v: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A checked value -> float32 tensor (a copy only where the dtype or layout needs one)."""
    t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
    return t.float()


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

    The checks (see the module docstring) all run before any tensor is built from the file's
    numbers; conversion comes last.

    Raises:
        WeightsError: unreadable file, a refused pickle global, a value of the wrong type, size or
            block index, missing / unexpected / mis-shaped tensors, or non-finite values (all named
            in the message).
    """
    raw, fmt = read_checkpoint(path)
    sd = check_values(raw, path)
    arch = _infer_arch(sd, fmt, path)
    if fmt == "pkl":
        schema = pkl_schema(arch)
        bb = "roi_heads.box_predictor.bbox_pred"
        if bb + ".weight" in sd and tuple(sd[bb + ".weight"].shape)[:1] == (4 * arch.num_classes,):
            schema[bb + ".weight"] = (4 * arch.num_classes, RES5[2])  # background block last
            schema[bb + ".bias"] = (4 * arch.num_classes,)
        what = "detectron2-pkl"
    else:
        schema = milvlg_schema(arch)
        what = "MILVLG"
    filled = _norms_without_stats(sd, schema)
    stats = {f"{p}.{s}" for p in filled for s in ("running_mean", "running_var")}
    check_keys(sd, {k: v for k, v in schema.items() if k not in stats}, path, what)
    used = [k for k in schema if k in sd] + [k for k in (ANCHORS_KEY, PIXEL_MEAN_KEY) if k in sd]
    _check_finite(sd, used, path)

    # Everything is bounded and checked: build the tensors.
    state = {k: _to_tensor(sd[k]) for k in schema if k in sd}
    for p in filled:  # detectron2's FrozenBatchNorm2d defaults: identity statistics
        state[f"{p}.running_mean"] = torch.zeros_like(state[f"{p}.weight"])
        state[f"{p}.running_var"] = torch.ones_like(state[f"{p}.weight"])
    if filled:
        log.warning(
            "%s: %d frozen norms are stored as weight and bias only (e.g. %s); their running "
            "statistics are filled with the defaults mean 0, var 1, as detectron2's loader does",
            path, len(filled), filled[0],
        )  # fmt: skip
    if fmt == "pkl":
        state = convert_pkl(state, arch)
    convention = "detectron2" if fmt == "pkl" else "caffe"
    if ANCHORS_KEY in sd:
        anchors, from_file = _to_tensor(sd[ANCHORS_KEY]), True
    elif arch.num_anchors == 12:
        anchors, from_file = caffe_ops.default_cell_anchors(convention), False
        log.info("%s stores no anchors: using the %s anchors of its format", path, convention)
    else:  # cannot happen: num_anchors is read from the stored anchors
        raise WeightsError(f"{path}: {arch.num_anchors} anchors but none stored")
    mean = sd.get(PIXEL_MEAN_KEY)
    pixel_mean = None if mean is None else tuple(float(x) for x in _to_tensor(mean).flatten())
    return LoadedWeights(
        state_dict={module_name(k): v for k, v in state.items()},
        arch=arch,
        cell_anchors=anchors,
        pixel_mean=pixel_mean,  # type: ignore[arg-type]
        source_format="milvlg" if fmt == "milvlg" else "detectron2-pkl",
        box_convention=convention,
        anchors_from_file=from_file,
        filled_norms=filled,
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
