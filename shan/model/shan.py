"""The SHAN module: encoders + the three alignment steps (:mod:`shan.model.alignment`) + batched,
chunked all-pairs scoring (:mod:`shan.model.scoring`).

``S = w1 S_L2L + w2 S_G2L + w3 S_G2G`` (``ModelConfig.step_weights``; ``use_l2l`` / ``use_g2l`` /
``use_g2g`` switch steps off for ablations — a disabled step's scores are zeros and do not count).

**[beyond the paper]** ``ModelConfig.use_geometry`` mixes an embedding of each region's box into
its embedding (:class:`~shan.model.encoders.ImageEncoder`); such a model takes ``boxes (N, k, 4)``
normalised to ``[0, 1]`` (:func:`~shan.model.encoders.normalize_boxes`) in
:meth:`SHAN.encode_images`, :meth:`SHAN.forward` and :meth:`SHAN.explain`. Other models accept and
ignore them, so callers can always pass boxes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from shan.config import ModelConfig
from shan.model.alignment import (
    AlignmentParams,
    ContextPooling,
    FragmentAffinity,
    GatedFusion,
    align_pair,
)
from shan.model.encoders import (
    GRUTextEncoder,
    ImageEncoder,
    TransformerTextEncoder,
    lengths_to_mask,
    load_glove,
)
from shan.model.scoring import score_all_pairs


class ImageEmbeddings(NamedTuple):
    """``regions (N, k, d)`` unit rows (padding zero), ``mask (N, k)`` bool."""

    regions: torch.Tensor
    mask: torch.Tensor


class TextEmbeddings(NamedTuple):
    """``words (M, n, d)`` unit rows (padding zero), ``mask (M, n)`` bool."""

    words: torch.Tensor
    mask: torch.Tensor


class StepScores(NamedTuple):
    """All-pairs scores, each ``(N, M)``: ``total`` and the three steps (disabled steps: zeros)."""

    total: torch.Tensor
    l2l: torch.Tensor
    g2l: torch.Tensor
    g2g: torch.Tensor


class TrainingScores(NamedTuple):
    """What :meth:`SHAN.forward` returns when asked for steps or hard negatives.

    ``batch``: :class:`StepScores` ``(B, B)`` of the batch's images x captions (diagonal =
    matching pairs); ``negatives``: :class:`StepScores` ``(B, K)`` of each image against its own
    ``K`` hard-negative captions, or None.
    """

    batch: StepScores
    negatives: StepScores | None


@dataclass
class Explanation:
    """Everything the demo shows for one image-caption pair (CPU tensors).

    ``alpha (k, n)`` region -> word attention (softmax over words), ``beta (k, n)`` word -> region
    attention (softmax over regions), ``img_pool (k,)`` / ``txt_pool (n,)`` context pooling weights,
    ``gamma (n,)`` image context -> words, ``delta (k,)`` text context -> regions,
    ``region_relevance (k,)`` R_v, ``word_relevance (n,)`` R_t, ``affinity (k, n)`` step-1 cosine
    affinity, ``scores`` {"total", "l2l", "g2l", "g2g"} (disabled steps 0.0).
    """

    alpha: torch.Tensor
    beta: torch.Tensor
    img_pool: torch.Tensor
    txt_pool: torch.Tensor
    gamma: torch.Tensor
    delta: torch.Tensor
    scores: dict[str, float]
    region_relevance: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    word_relevance: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    affinity: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def _as_tokens(batch: Any, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept a ``TokenBatch``-like object (``.tokens``, ``.lengths``) or ``(tokens, lengths)``."""
    if hasattr(batch, "tokens") and hasattr(batch, "lengths"):
        tokens, lengths = batch.tokens, batch.lengths
    else:
        tokens = batch
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a LongTensor (M, n) or a TokenBatch, got {type(batch)}")
    if lengths is None:
        raise ValueError("lengths (M,) are required when tokens are passed as a tensor")
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
        raise ValueError(
            f"tokens must be (M, n) and lengths (M,), got {tuple(tokens.shape)} "
            f"and {tuple(lengths.shape)}"
        )
    if tokens.shape[0] and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]):
        raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}], got {lengths.tolist()}")
    return tokens.long(), lengths


class SHAN(nn.Module):
    """Step-Wise Hierarchical Alignment Network (Ji et al., IJCAI 2021).

    Args:
        cfg: the architecture. ``cfg.glove_path`` with ``vocab_words`` loads GloVe vectors (and sets
            ``self.cfg.glove_dim``); without ``vocab_words`` a zero buffer of ``cfg.glove_dim``
            columns is made, to be filled by ``load_state_dict`` (checkpoint loading).
        vocab_words: index -> word of the GRU vocabulary (only needed to read a GloVe file).

    ``self.cfg`` is a copy of ``cfg`` with ``glove_dim`` filled in: save *it* with the weights.
    """

    def __init__(self, cfg: ModelConfig, vocab_words: list[str] | None = None) -> None:
        super().__init__()
        cfg = copy.deepcopy(cfg)
        if len(cfg.step_weights) != 3:
            raise ValueError(f"step_weights needs 3 values, got {cfg.step_weights!r}")
        if cfg.smooth <= 0:
            raise ValueError(f"smooth (lambda) must be > 0, got {cfg.smooth}")
        d = cfg.embed_dim
        self.img_enc = ImageEncoder(
            cfg.img_dim,
            d,
            geometry=cfg.use_geometry,
            geometry_hidden=cfg.geometry_hidden,
            geometry_weight=cfg.geometry_weight,
            geometry_mode=cfg.geometry_mode,
        )
        if cfg.text_encoder == "gru":
            pretrained = None
            if cfg.glove_path and vocab_words is not None:
                if len(vocab_words) != cfg.vocab_size:
                    raise ValueError(
                        f"vocab_words: {len(vocab_words)} entries, cfg.vocab_size: {cfg.vocab_size}"
                    )
                pretrained, cfg.glove_dim = load_glove(cfg.glove_path, vocab_words)
            elif cfg.glove_path and cfg.glove_dim <= 0:
                raise ValueError(
                    "glove_path is set but glove_dim is unknown: pass vocab_words to read the file"
                )
            self.txt_enc: nn.Module = GRUTextEncoder(
                cfg.vocab_size,
                cfg.word_dim,
                d,
                num_layers=cfg.gru_layers,
                pretrained=pretrained,
                pretrained_dim=cfg.glove_dim if cfg.glove_path else 0,
            )
        elif cfg.text_encoder == "transformer":
            self.txt_enc = TransformerTextEncoder(cfg.transformer_path or "", d)
        else:
            raise ValueError(
                f"text_encoder must be 'gru' or 'transformer', got {cfg.text_encoder!r}"
            )
        self.cfg = cfg
        self.affinity = FragmentAffinity(d)
        self.fuse_img = GatedFusion(d)
        self.fuse_txt = GatedFusion(d)
        self.pool_img = ContextPooling(d)
        self.pool_txt = ContextPooling(d)

    # ------------------------------------------------------------------ helpers
    @property
    def params(self) -> AlignmentParams:
        return AlignmentParams(
            self.affinity,
            self.fuse_img,
            self.fuse_txt,
            self.pool_img,
            self.pool_txt,
            smooth=float(self.cfg.smooth),
            mu=float(self.cfg.mu),
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _combine(self, l2l: torch.Tensor, g2l: torch.Tensor, g2g: torch.Tensor) -> StepScores:
        w1, w2, w3 = self.cfg.step_weights
        c = self.cfg
        l2l = l2l if c.use_l2l else torch.zeros_like(l2l)
        g2l = g2l if c.use_g2l else torch.zeros_like(g2l)
        g2g = g2g if c.use_g2g else torch.zeros_like(g2g)
        total = w1 * l2l + w2 * g2l + w3 * g2g
        return StepScores(total, l2l, g2l, g2g)

    # ------------------------------------------------------------------ encoders
    def encode_images(
        self,
        feats: torch.Tensor,
        mask: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> ImageEmbeddings:
        """``feats (N, k, img_dim)``, ``mask (N, k)`` bool or None, ``boxes (N, k, 4)``
        normalised to ``[0, 1]`` (required with ``use_geometry``, ignored otherwise) ->
        :class:`ImageEmbeddings`."""
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        mask = mask.to(device=feats.device, dtype=torch.bool)
        if mask.shape != feats.shape[:2]:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match features {tuple(feats.shape)}"
            )
        if feats.shape[0] and not bool(mask.any(1).all()):
            raise ValueError("every image needs at least one real region (mask row all False)")
        if not self.cfg.use_geometry:
            boxes = None
        return ImageEmbeddings(self.img_enc(feats.float(), mask, boxes), mask)

    def encode_captions(self, batch: Any, lengths: torch.Tensor | None = None) -> TextEmbeddings:
        """``TokenBatch`` (``.tokens (M, n)``, ``.lengths (M,)``) or ``tokens, lengths`` ->
        :class:`TextEmbeddings` ``(M, n, d)``."""
        tokens, lengths = _as_tokens(batch, lengths)
        dev = self.device
        tokens, lengths = tokens.to(dev), lengths.to(dev)
        words = self.txt_enc(tokens, lengths)
        return TextEmbeddings(words, lengths_to_mask(lengths, tokens.shape[1]))

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        img: ImageEmbeddings,
        txt: TextEmbeddings,
        img_chunk: int | None = None,
        txt_chunk: int | None = None,
        grad_checkpoint: bool | None = None,
        timings: dict[str, float] | None = None,
    ) -> StepScores:
        """Scores of all ``N x M`` image-caption pairs (fast batched path).

        Work runs in chunks of ``img_chunk`` images x ``txt_chunk`` captions (default 16 x 32 on
        the CPU, 64 x 32 with the fused CPU kernel, 64 x 128 on an accelerator); captions are
        sorted by length so a caption block is padded only to its longest. Memory is bounded by
        the chunk sizes: the torch path holds about ``img_chunk * txt_chunk * (k + n) * 3d``
        floats per chunk, the fused CPU kernel ``img_chunk * k * txt_chunk * n`` (affinities)
        plus one pair's scratch per thread. Besides, the
        prepared images (6 d-vectors per region, once per call) and one caption block stay
        resident. With gradients enabled each chunk is recomputed in the backward pass
        (``grad_checkpoint``) to bound memory; by default except on a GPU with room for every
        chunk's intermediates (:func:`shan.model.scoring.checkpoint_by_default`).

        ``timings``, when given, receives the seconds spent preparing images / captions
        (``"prepare"``, per-image and per-caption work) and scoring pairs (``"pairs"``); on CUDA
        these are only meaningful after a synchronisation (the benchmark uses them on the CPU).

        Returns:
            :class:`StepScores` of ``(N, M)`` tensors.
        """
        v, vm = img
        t, tm = txt
        if v.dim() != 3 or t.dim() != 3 or v.shape[-1] != t.shape[-1]:
            raise ValueError(
                f"expected (N, k, d) and (M, n, d), got {tuple(v.shape)}, {tuple(t.shape)}"
            )
        c = self.cfg
        need_context = c.use_g2l or c.use_g2g
        if not (c.use_l2l or need_context):
            raise ValueError("all three steps are switched off (use_l2l/use_g2l/use_g2g)")
        out = score_all_pairs(
            v,
            vm,
            t,
            tm,
            self.params,
            use_l2l=c.use_l2l,
            use_context=need_context,
            use_g2g=c.use_g2g,
            img_chunk=img_chunk,
            txt_chunk=txt_chunk,
            grad_checkpoint=grad_checkpoint,
            timings=timings,
        )
        return self._combine(*out)

    def score_paired(
        self, img: ImageEmbeddings, txt: TextEmbeddings, pair_chunk: int = 128
    ) -> StepScores:
        """Scores of image ``i`` with caption ``i`` only (``N`` images, ``N`` captions).

        Only the ``N`` pairs are computed: the reference :func:`~shan.model.alignment.align_pair`
        vectorised over pairs with ``torch.func.vmap``, ``pair_chunk`` pairs at a time (with
        gradients each chunk is recomputed in the backward pass, as in :meth:`score`, so memory
        stays at one chunk's ``pair_chunk * (k + n) * d`` floats per intermediate). An all-pairs
        :meth:`score` call would compute ``N^2`` pairs to keep ``N``; a loop of ``N`` one-pair
        calls is dominated by per-call overhead (measured: both cost as much as the whole
        ``(B, B)`` batch again at B = 64, this about 4 % of it).

        Returns:
            :class:`StepScores` of ``(N,)`` tensors.
        """
        v, vm = img
        t, tm = txt
        if v.shape[0] != t.shape[0]:
            raise ValueError(
                f"score_paired needs as many captions as images, got {v.shape[0]} and {t.shape[0]}"
            )
        if pair_chunk < 1:
            raise ValueError(f"pair_chunk must be >= 1, got {pair_chunk}")
        p = self.params

        def pair(vi: torch.Tensor, ti: torch.Tensor, vmi: torch.Tensor, tmi: torch.Tensor):
            r = align_pair(vi, ti, vmi, tmi, p)
            return torch.stack([r["s_l2l"], r["s_g2l"], r["s_g2g"]])

        def run(*args: torch.Tensor) -> torch.Tensor:
            return torch.func.vmap(pair)(*args)

        n = int(v.shape[0])
        if n == 0:
            zero = v.new_zeros(0)
            return self._combine(zero, zero, zero)
        parts = []
        for a in range(0, n, pair_chunk):
            args = (v[a : a + pair_chunk].float(), t[a : a + pair_chunk].float())
            args += (vm[a : a + pair_chunk].bool(), tm[a : a + pair_chunk].bool())
            if torch.is_grad_enabled():
                parts.append(checkpoint(run, *args, use_reentrant=False))
            else:
                parts.append(run(*args))
        out = torch.cat(parts, 0)
        return self._combine(out[:, 0], out[:, 1], out[:, 2])

    def score_own(self, img: ImageEmbeddings, txt: TextEmbeddings, per_image: int) -> StepScores:
        """Each image against its own captions only: image ``i`` with captions ``i*K .. i*K+K-1``
        (``img``: ``N`` images, ``txt``: ``N * K`` captions, ``K = per_image``), computing only
        those ``N K`` pairs (:meth:`score_paired`).

        Returns:
            :class:`StepScores` of ``(N, K)`` tensors.
        """
        n_img, k = int(img.regions.shape[0]), int(per_image)
        if k < 1 or txt.words.shape[0] != n_img * k:
            raise ValueError(
                f"score_own needs {n_img} x {per_image} captions, got {txt.words.shape[0]}"
            )
        rep = ImageEmbeddings(
            img.regions.repeat_interleave(k, dim=0), img.mask.repeat_interleave(k, dim=0)
        )
        s = self.score_paired(rep, txt)
        return StepScores(*(x.view(n_img, k) for x in s))

    def forward(
        self,
        feats: torch.Tensor,
        img_mask: torch.Tensor | None,
        tokens: Any,
        lengths: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        negatives: Any = None,
        neg_lengths: torch.Tensor | None = None,
        all_steps: bool = False,
        **score_kwargs: Any,
    ) -> torch.Tensor | TrainingScores:
        """Training: ``feats (B, k, F)``, ``img_mask (B, k)``, ``tokens (B, n)``, ``lengths (B,)``,
        ``boxes (B, k, 4)`` (with ``use_geometry``) -> ``(B, B)`` total scores (rows: images,
        columns: captions; diagonal = matching pairs).

        With ``negatives`` (``B * K`` hard-negative captions, image ``i``'s at rows ``i*K ..
        i*K+K-1``: a ``TokenBatch`` or tokens with ``neg_lengths``) or ``all_steps``, returns
        :class:`TrainingScores` instead: every step's ``(B, B)`` scores and, with negatives,
        each image's ``(B, K)`` scores against its own (:meth:`score_own`).
        """
        img = self.encode_images(feats, img_mask, boxes)
        txt = self.encode_captions(tokens, lengths)
        batch = self.score(img, txt, **score_kwargs)
        if negatives is None and not all_steps:
            return batch.total
        neg = None
        if negatives is not None:
            ntxt = self.encode_captions(negatives, neg_lengths)
            b = int(img.regions.shape[0])
            if b == 0 or ntxt.words.shape[0] % b:
                raise ValueError(
                    f"negatives: expected K captions per image ({b} images), "
                    f"got {ntxt.words.shape[0]}"
                )
            neg = self.score_own(img, ntxt, ntxt.words.shape[0] // b)
        return TrainingScores(batch, neg)

    @torch.no_grad()
    def explain(
        self,
        feats: torch.Tensor,
        img_mask: torch.Tensor | None,
        tokens: torch.Tensor,
        length: int,
        boxes: torch.Tensor | None = None,
    ) -> Explanation:
        """Every step's attention and score for one pair (reference implementation).

        ``feats (k, img_dim)``, ``img_mask (k,)`` bool or None, ``tokens (n,)``, ``length`` real
        words, ``boxes (k, 4)`` normalised to ``[0, 1]`` (required with ``use_geometry``, ignored
        otherwise). Returned tensors are trimmed to the real words (``n = length``) but keep all
        ``k`` regions (padded regions get zero weights).
        """
        if feats.dim() != 2:
            raise ValueError(
                f"explain() takes one image's features (k, F), got {tuple(feats.shape)}"
            )
        tokens = torch.as_tensor(tokens).long().reshape(-1)
        length = int(length)
        if not 1 <= length <= tokens.numel():
            raise ValueError(f"length must lie in [1, {tokens.numel()}], got {length}")
        dev = self.device
        mask = None if img_mask is None else img_mask.reshape(1, -1).to(dev)
        if boxes is not None:
            boxes = torch.as_tensor(boxes).reshape(1, -1, 4).to(dev)
        img = self.encode_images(feats.to(dev).unsqueeze(0), mask, boxes)
        txt = self.encode_captions(tokens[:length].unsqueeze(0).to(dev), torch.tensor([length]))
        r = align_pair(img.regions[0], txt.words[0], img.mask[0], txt.mask[0], self.params)
        s = self._combine(r["s_l2l"].view(1, 1), r["s_g2l"].view(1, 1), r["s_g2g"].view(1, 1))
        scores = {name: float(getattr(s, name)) for name in ("total", "l2l", "g2l", "g2g")}
        cpu = {k: val.detach().float().cpu() for k, val in r.items()}
        return Explanation(
            alpha=cpu["alpha"],
            beta=cpu["beta"],
            img_pool=cpu["img_pool"],
            txt_pool=cpu["txt_pool"],
            gamma=cpu["gamma"],
            delta=cpu["delta"],
            scores=scores,
            region_relevance=cpu["r_v"],
            word_relevance=cpu["r_t"],
            affinity=cpu["affinity"],
        )


__all__ = [
    "SHAN",
    "StepScores",
    "TrainingScores",
    "Explanation",
    "ImageEmbeddings",
    "TextEmbeddings",
]
