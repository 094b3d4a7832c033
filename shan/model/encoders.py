"""SHAN's input encoders: regions -> ``v_i`` and words -> ``t_j`` in the joint space of size ``d``.

* :class:`ImageEncoder` — ``v_i = normalize(W_v f_i + b_v)`` for the ``k`` region features;
  **[beyond the paper]** with ``use_geometry``, an embedding of each region's box is mixed in
  (:class:`GeometryEncoder`, boxes from :func:`normalize_boxes`).
* :class:`GRUTextEncoder` — the paper's text side: learnable word embedding (optionally concatenated
  with frozen GloVe-format vectors, see :func:`load_glove`), bidirectional GRU, ``t_j`` = mean of
  the two directions, L2-normalised.
* :class:`TransformerTextEncoder` — **[choice]** any local BERT-family model directory
  (``transformers.AutoModel``), last hidden states projected to ``d`` and L2-normalised.

Every encoder returns padded positions as exact zeros together with a boolean mask (``True`` =
real fragment); the alignment code masks them again, so padding never changes a score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from shan.errors import ShanError


class GloveFormatError(ShanError, ValueError):
    """A GloVe-format text file could not be parsed (the message names the file and line)."""


class BoxError(ShanError, ValueError):
    """Region boxes or image sizes that cannot be used (wrong shape, not finite, no size)."""


def load_glove(path: str | Path, vocab_words: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Read a GloVe-format text file (``word v_1 ... v_D`` per line) for the given vocabulary.

    Args:
        path: the text file. A first line of exactly two integers (word2vec header) is skipped.
        vocab_words: the vocabulary, index -> word (index 0 is the padding token).

    Returns:
        ``(vectors, dim)``: ``vectors`` is ``(len(vocab_words), dim)`` float32; words missing from
        the file (looked up as written, then lower-cased) and the padding row 0 are zeros.

    Raises:
        FileNotFoundError: the file does not exist.
        GloveFormatError: a line has a different number of values than the first, a value is not a
            number, or the file holds no vectors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file not found: {path}")
    wanted: dict[str, list[int]] = {}
    for idx, word in enumerate(vocab_words):
        if idx == 0:
            continue  # padding row stays zero
        wanted.setdefault(word, []).append(idx)
    lowered: dict[str, list[int]] = {}
    for word, ids in wanted.items():
        lowered.setdefault(word.lower(), []).extend(ids)

    dim = 0
    found: dict[int, torch.Tensor] = {}
    exact: set[int] = set()
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.rstrip("\n\r").rstrip(" ").split(" ")
            if len(parts) == 1 and parts[0] == "":
                continue  # blank line
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec-style header "count dim"
            if len(parts) < 2:
                raise GloveFormatError(f"{path}:{lineno}: expected 'word v1 v2 ...', got {line!r}")
            if dim == 0:
                dim = len(parts) - 1
            elif len(parts) - 1 != dim:
                raise GloveFormatError(
                    f"{path}:{lineno}: {len(parts) - 1} values, but the first vector has {dim}"
                )
            word = parts[0]
            ids_exact = wanted.get(word)
            ids_lower = lowered.get(word.lower())
            if ids_exact is None and ids_lower is None:
                continue
            try:
                values = [float(x) for x in parts[1:]]
            except ValueError as err:
                raise GloveFormatError(f"{path}:{lineno}: non-numeric value ({err})") from None
            if not all(math.isfinite(x) for x in values):
                raise GloveFormatError(f"{path}:{lineno}: non-finite value in vector of {word!r}")
            vec = torch.tensor(values, dtype=torch.float32)
            for i in ids_exact or ():
                found[i] = vec
                exact.add(i)
            for i in ids_lower or ():
                if i not in exact:
                    found.setdefault(i, vec)
    if dim == 0:
        raise GloveFormatError(f"{path}: no word vectors found")
    vectors = torch.zeros(len(vocab_words), dim)
    for i, vec in found.items():
        vectors[i] = vec
    return vectors, dim


def _masked_normalize(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalise ``x (..., L, d)`` along ``d``; zero where ``mask (..., L)`` is False."""
    return F.normalize(x, dim=-1).masked_fill(~mask.unsqueeze(-1), 0.0)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``lengths (M,)`` -> boolean mask ``(M, max_len)`` (True for the first ``lengths[m]``)."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


#: what :func:`box_features` gives per region: ``x1, y1, x2, y2, area`` (all in ``[0, 1]``)
BOX_FEATURES = 5


def _float_tensor(x: torch.Tensor | Any) -> torch.Tensor:
    """A float32 tensor of ``x``; arrays are copied (memory maps are read-only)."""
    if isinstance(x, torch.Tensor):
        return x.float()
    return torch.from_numpy(np.array(x, dtype=np.float32))


def normalize_boxes(boxes: torch.Tensor | Any, sizes: torch.Tensor | Any) -> torch.Tensor:
    """Pixel boxes -> boxes as fractions of their image, the geometry input of :class:`SHAN`.

    The one helper that does this (training data, evaluation, the app): ``x`` coordinates are
    divided by the image width, ``y`` by its height, and the result clamped to ``[0, 1]``.

    Args:
        boxes: ``(..., k, 4)`` ``x1, y1, x2, y2`` in pixels of the original image (tensor or
            array; e.g. ``(N, k, 4)`` with ``sizes (N, 2)``, or ``(k, 4)`` with ``sizes (2,)``).
        sizes: ``(..., 2)`` each image's ``width, height`` in pixels (> 0).

    Returns:
        ``(..., k, 4)`` float32 in ``[0, 1]``.

    Raises:
        BoxError: wrong shapes, non-finite values, or a width / height that is not positive.
    """
    b = _float_tensor(boxes)
    sz = _float_tensor(sizes).to(b.device)
    if b.dim() < 2 or b.shape[-1] != 4:
        raise BoxError(f"boxes must be (..., k, 4) x1 y1 x2 y2, got shape {tuple(b.shape)}")
    if sz.shape != b.shape[:-2] + (2,):
        raise BoxError(
            f"image sizes must be {tuple(b.shape[:-2]) + (2,)} (width, height) for boxes of "
            f"shape {tuple(b.shape)}, got {tuple(sz.shape)}"
        )
    if not bool(torch.isfinite(b).all()):
        raise BoxError("boxes contain NaN or infinite values")
    if not bool(torch.isfinite(sz).all()) or (sz.numel() and float(sz.min()) <= 0):
        raise BoxError("every image needs a positive, finite width and height to normalise boxes")
    scale = torch.cat([sz, sz], dim=-1).unsqueeze(-2)  # (..., 1, 4): w, h, w, h
    return (b / scale).clamp_(0.0, 1.0)


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """``boxes (..., 4)`` normalised ``x1, y1, x2, y2`` -> ``(..., 5)``: the box (corners sorted,
    clamped to ``[0, 1]``) and its area."""
    b = boxes.float().clamp(0.0, 1.0)
    x1, x2 = torch.minimum(b[..., 0], b[..., 2]), torch.maximum(b[..., 0], b[..., 2])
    y1, y2 = torch.minimum(b[..., 1], b[..., 3]), torch.maximum(b[..., 1], b[..., 3])
    return torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], dim=-1)


#: ``ModelConfig.geometry_mode``: how a region's box embedding is normalised (see
#: :class:`GeometryEncoder`)
GEOMETRY_MODES = ("relative", "absolute")
# An image's box embeddings spread by ~0.1 (RMS) at initialisation; below ~0.01 (squared: this)
# their differences are damped instead of amplified without bound.
_RMS_EPS = 1e-4


class GeometryEncoder(nn.Module):
    """**[beyond the paper]** Region boxes -> geometry vectors in the joint space.

    ``m_i = W_2 relu(W_1 b_i + c_1) + c_2`` for ``b_i`` = :func:`box_features` of the normalised
    box, then per ``mode``:

    * ``"relative"`` (default): ``c_i = m_i - mean_j m_j`` over the image's real regions,
      ``g_i = c_i / sqrt(mean_j |c_j|^2 + eps)`` — what tells an image's regions apart, with an
      RMS norm of 1 per image. Centring drops what all regions share (with ``absolute`` that
      shared part grew during training until every box looked alike: cosine 0.96 between the
      embeddings of a box at the left and at the right edge, against 0.79 at initialisation), and
      the per-image normalisation means training cannot shrink the differences away. An image
      with one region gets ``g = 0``.
    * ``"absolute"``: ``g_i = normalize(m_i)``, unit rows.

    Input ``boxes (N, k, 4)`` in ``[0, 1]`` and ``mask (N, k)`` bool (padding rows are zero);
    output ``(N, k, d)``.
    """

    def __init__(self, embed_dim: int, hidden: int = 64, mode: str = "relative") -> None:
        super().__init__()
        if mode not in GEOMETRY_MODES:
            raise ValueError(f"geometry mode must be one of {GEOMETRY_MODES}, got {mode!r}")
        self.mode = mode
        self.mlp = nn.Sequential(
            nn.Linear(BOX_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim)
        )

    def forward(self, boxes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(boxes.shape[:-1], dtype=torch.bool, device=boxes.device)
        m = mask.unsqueeze(-1).to(boxes.dtype)
        emb = self.mlp(box_features(boxes)) * m
        if self.mode == "absolute":
            return F.normalize(emb, dim=-1)
        count = m.sum(-2, keepdim=True).clamp_min(1.0)  # (N, 1, 1)
        centred = (emb - emb.sum(-2, keepdim=True) / count) * m
        rms = (centred.pow(2).sum((-2, -1), keepdim=True) / count + _RMS_EPS).sqrt()
        return centred / rms


class ImageEncoder(nn.Module):
    """Region features -> region embeddings: ``v_i = normalize(W_v f_i + b_v)``.

    Input ``feats (N, k, img_dim)``, optional ``mask (N, k)`` bool and (with ``geometry``)
    ``boxes (N, k, 4)`` normalised to ``[0, 1]``; output ``(N, k, d)`` unit rows with padded
    regions set to zero.

    **[beyond the paper]** With ``geometry``: ``v_i = normalize(normalize(W_v f_i + b_v) +
    w_g g_i)`` where ``g_i`` is the :class:`GeometryEncoder` embedding of the box (norm 1, or
    RMS 1 over the image in ``relative`` mode) and ``w_g = exp(log_w_g) > 0`` is learned
    (initialised to ``geometry_weight``). The appearance part is a unit vector before the mix,
    so the share of position in a region embedding is set by ``w_g`` alone — whatever the
    magnitude of the detector's features (a raw box of numbers in ``[0, 1]`` beside features of
    norm ~30 would be invisible). Without ``geometry`` the module, its parameters and its output
    are the paper's.
    """

    def __init__(
        self,
        img_dim: int,
        embed_dim: int,
        geometry: bool = False,
        geometry_hidden: int = 64,
        geometry_weight: float = 0.3,
        geometry_mode: str = "relative",
    ) -> None:
        super().__init__()
        self.img_dim = img_dim
        self.fc = nn.Linear(img_dim, embed_dim)
        r = math.sqrt(6.0) / math.sqrt(img_dim + embed_dim)  # Xavier, as in the SCAN family
        nn.init.uniform_(self.fc.weight, -r, r)
        nn.init.zeros_(self.fc.bias)
        self.geometry: GeometryEncoder | None = None
        if geometry:
            if not geometry_weight > 0:
                raise ValueError(f"geometry_weight must be > 0, got {geometry_weight}")
            self.geometry = GeometryEncoder(embed_dim, geometry_hidden, geometry_mode)
            self.log_geometry_weight = nn.Parameter(torch.tensor(math.log(geometry_weight)))

    @property
    def geometry_weight(self) -> float:
        """The current (learned) ``w_g``; 0.0 without geometry."""
        if self.geometry is None:
            return 0.0
        return float(self.log_geometry_weight.detach().exp())

    def forward(
        self,
        feats: torch.Tensor,
        mask: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.img_dim:
            raise ValueError(
                f"image features must be (N, k, {self.img_dim}), got {tuple(feats.shape)}"
            )
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        feats = feats.masked_fill(~mask.unsqueeze(-1), 0.0)  # garbage in padding never reaches v
        x = self.fc(feats)
        if self.geometry is not None:
            if boxes is None:
                raise BoxError(
                    "this model uses region geometry (use_geometry): pass boxes (N, k, 4) "
                    "normalised to [0, 1] (shan.model.encoders.normalize_boxes)"
                )
            if boxes.shape != feats.shape[:2] + (4,):
                raise BoxError(
                    f"boxes must be {tuple(feats.shape[:2]) + (4,)} for features of shape "
                    f"{tuple(feats.shape)}, got {tuple(boxes.shape)}"
                )
            boxes = boxes.to(device=feats.device, dtype=torch.float32)
            boxes = boxes.masked_fill(~mask.unsqueeze(-1), 0.0)
            if not bool(torch.isfinite(boxes).all()):
                raise BoxError("boxes contain NaN or infinite values")
            geo = self.geometry(boxes, mask).to(x.dtype)
            x = F.normalize(x, dim=-1) + self.log_geometry_weight.exp().to(x.dtype) * geo
        return _masked_normalize(x, mask)


class GRUTextEncoder(nn.Module):
    """Word ids -> word embeddings ``t_j`` (the paper's text encoder).

    ``x_j = [E w_j ; G w_j]`` (learnable ``E`` of ``word_dim``; frozen pretrained ``G`` when given),
    bidirectional GRU, ``t_j = normalize((h_fwd_j + h_bwd_j) / 2)``.
    Input ``tokens (M, n)`` long, ``lengths (M,)``; output ``(M, n, d)``, padded positions zero.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        embed_dim: int,
        num_layers: int = 1,
        pretrained: torch.Tensor | None = None,
        pretrained_dim: int = 0,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (<pad>, <unk>, ...), got {vocab_size}")
        self.embed_dim = embed_dim
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        if pretrained is not None:
            if pretrained.shape[0] != vocab_size:
                raise ValueError(
                    f"pretrained vectors: {pretrained.shape[0]} rows, vocabulary: {vocab_size}"
                )
            pretrained_dim = int(pretrained.shape[1])
        self.pretrained_dim = pretrained_dim
        if pretrained_dim > 0:
            # frozen, but saved with the weights so a checkpoint does not need the GloVe file again
            vecs = pretrained if pretrained is not None else torch.zeros(vocab_size, pretrained_dim)
            self.register_buffer("pretrained", vecs.float().clone())
        else:
            self.pretrained = None
        self.gru = nn.GRU(
            word_dim + pretrained_dim,
            embed_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
        )

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        num, n = tokens.shape
        if int(tokens.max()) >= self.embed.num_embeddings or int(tokens.min()) < 0:
            raise ValueError(
                f"token ids must lie in [0, {self.embed.num_embeddings}), "
                f"got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        x = self.embed(tokens)
        if self.pretrained is not None:
            x = torch.cat([x, F.embedding(tokens, self.pretrained)], dim=-1)
        packed = pack_padded_sequence(
            x, lengths.detach().cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=n)
        out = (out[..., : self.embed_dim] + out[..., self.embed_dim :]) / 2
        return _masked_normalize(out, lengths_to_mask(lengths.to(tokens.device), n))


class TransformerTextEncoder(nn.Module):
    """**[choice]** Token ids -> word-piece embeddings with a local BERT-family model.

    ``t_j = normalize(W h_j + b)`` where ``h_j`` are the backbone's last hidden states.
    Input ``tokens (M, n)`` (the model tokenizer's ids, padded), ``lengths (M,)``; output
    ``(M, n, d)`` with padded positions zero.
    """

    def __init__(self, model_path: str | Path, embed_dim: int) -> None:
        super().__init__()
        path = Path(model_path) if model_path else None
        if path is None or not path.is_dir():
            raise FileNotFoundError(
                f"transformer_path must be a local model directory (config.json + weights), "
                f"got {model_path!r}"
            )
        from transformers import AutoModel  # heavy import, only when this encoder is used

        self.backbone = AutoModel.from_pretrained(str(path))
        hidden = int(self.backbone.config.hidden_size)
        self.fc = nn.Linear(hidden, embed_dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(lengths.to(tokens.device), tokens.shape[1])
        hidden = self.backbone(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return _masked_normalize(self.fc(hidden), mask)


__all__ = [
    "BOX_FEATURES",
    "BoxError",
    "GEOMETRY_MODES",
    "GeometryEncoder",
    "box_features",
    "normalize_boxes",
    "GloveFormatError",
    "load_glove",
    "lengths_to_mask",
    "ImageEncoder",
    "GRUTextEncoder",
    "TransformerTextEncoder",
]
