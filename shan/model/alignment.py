"""SHAN's three alignment steps, as the paper writes them: the reference implementation.

Read this file for "the three steps" (the equations, with shapes and every choice where the paper
is silent, are in ``docs/METHOD.md``):

* step 1, fragment level, local-to-local — :func:`l2l_step`;
* step 2, context level, global-to-local — :func:`g2l_step`;
* step 3, context level, global-to-global — :func:`g2g_step`;
* all three for one image-caption pair — :func:`align_pair`;

plus the small modules that hold their parameters (:class:`FragmentAffinity`,
:class:`GatedFusion`, :class:`ContextPooling`, bundled in :class:`AlignmentParams`).

One pair at a time, formulas written out: used by ``SHAN.explain`` and by the tests as the ground
truth. Scoring all ``N x M`` pairs uses the same maths rearranged for speed, in
:mod:`shan.model.scoring` (batched torch) and :mod:`shan.model.fused_cpu` (a C kernel for the CPU);
the tests check both against this file.

Conventions: ``v`` are region embeddings ``(k, d)``, ``t`` word embeddings ``(n, d)``, masks are
bool (``True`` = real fragment). Padded fragments never change a score: logits are filled with a
large negative number before normalising, and means run over real fragments only. Every image
needs >= 1 real region and every caption >= 1 real word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = -1e4  # fill for masked logits: exp(-1e4 + 9) == 0 in float32
EPS = 1e-8  # cosine denominators are clamped to at least this


# ----------------------------------------------------------------------------- helpers


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax of ``logits`` along ``dim`` over positions where ``mask`` (broadcastable) is True.

    Masked positions get probability exactly 0. A slice with no real position gives all zeros.
    """
    filled = logits.masked_fill(~mask, NEG_INF)
    probs = torch.softmax(filled, dim=dim)
    return probs.masked_fill(~mask, 0.0)


def cosine(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``a.b / max(|a| |b|, EPS)`` along ``dim`` (broadcasting)."""
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(EPS)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` along ``dim`` over positions where ``mask`` (same shape as ``x``) is True."""
    m = mask.to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


# ----------------------------------------------------------------------------- modules


class FragmentAffinity(nn.Module):
    """Step 1 (L2L) parameters: ``A = norm(W~_v V) norm(W~_t T)^T`` (cosine affinity, **[choice]**).

    Both maps start as the identity, so an untrained model attends like SCAN (the reasons for
    every **[choice]** are in ``docs/METHOD.md``, "Choices where the paper is silent").
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.img = nn.Linear(dim, dim, bias=False)
        self.txt = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.img.weight.copy_(torch.eye(dim))
            self.txt.weight.copy_(torch.eye(dim))

    def project_images(self, v: torch.Tensor) -> torch.Tensor:
        """``(..., k, d) -> (..., k, d)`` unit rows ``norm(W~_v v_i)``."""
        return F.normalize(self.img(v), dim=-1)

    def project_words(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., n, d) -> (..., n, d)`` unit rows ``norm(W~_t t_j)``."""
        return F.normalize(self.txt(t), dim=-1)


class GatedFusion(nn.Module):
    """Step 2 (G2L) gate: ``g = sigmoid(W_g [x ; x*] + b_g)``, ``x^c = g * x + (1 - g) * x*``.

    ``x`` are a modality's own fragments ``(..., L, d)``, ``x*`` what they attended to in step 1.
    The fast path splits ``W_g = [W_own | W_att]`` (:meth:`own_part`, :meth:`attended_part`) so
    each half is applied once per image / caption.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, attended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(fused (..., L, d), gate (..., L, d))``."""
        gate = torch.sigmoid(self.linear(torch.cat([x, attended], dim=-1)))
        return gate * x + (1 - gate) * attended, gate

    def own_part(self, x: torch.Tensor) -> torch.Tensor:
        """``W_own x + b_g``: ``(..., L, d) -> (..., L, d)``."""
        return F.linear(x, self.linear.weight[:, : self.dim], self.linear.bias)

    def attended_part(self, y: torch.Tensor) -> torch.Tensor:
        """``W_att y`` (no bias): ``(..., L, d) -> (..., L, d)``; apply to the *other* modality."""
        return F.linear(y, self.linear.weight[:, self.dim :])


class ContextPooling(nn.Module):
    """Step 2 (G2L) self-attention pooling.

    **[choice]** ``a_i = softmax_i(w . (x^c_i * mean(x^c)))``.

    ``w`` starts at zero (plain masked mean), so the pooling is learned from a neutral start.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, fused: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``fused (..., L, d)``, ``mask (..., L)`` -> ``(context (..., d), weights (..., L))``."""
        mean = masked_mean(fused, mask.unsqueeze(-1).expand_as(fused), dim=-2)
        logits = (fused * (mean * self.weight).unsqueeze(-2)).sum(-1)
        weights = masked_softmax(logits, mask, dim=-1)
        return (weights.unsqueeze(-1) * fused).sum(-2), weights


@dataclass
class AlignmentParams:
    """The parameters all three steps need (held by the ``SHAN`` module)."""

    affinity: FragmentAffinity
    fuse_img: GatedFusion  # g_i over [v_i ; t*_i]
    fuse_txt: GatedFusion  # h_j over [t_j ; v*_j]
    pool_img: ContextPooling
    pool_txt: ContextPooling
    smooth: float = 9.0  # lambda
    mu: float = 0.5


# ----------------------------------------------------------------------------- reference


def l2l_step(
    v: torch.Tensor,
    t: torch.Tensor,
    v_mask: torch.Tensor,
    t_mask: torch.Tensor,
    p: AlignmentParams,
) -> dict[str, torch.Tensor]:
    """Step 1, local-to-local, for one pair: ``v (k, d)``, ``t (n, d)``, masks ``(k,)``, ``(n,)``.

    Returns ``affinity (k, n)``, ``alpha (k, n)`` (region -> words, rows sum to 1 over real words),
    ``beta (k, n)`` (word -> regions, columns sum to 1 over real regions), ``t_star (k, d)``,
    ``v_star (n, d)``, ``r_v (k,)``, ``r_t (n,)``, ``s_l2l ()``.
    """
    a = p.affinity.project_images(v) @ p.affinity.project_words(t).T
    real = v_mask[:, None] & t_mask[None, :]
    alpha = masked_softmax(p.smooth * a, t_mask[None, :].expand_as(a), dim=1)
    beta = masked_softmax(p.smooth * a, v_mask[:, None].expand_as(a), dim=0)
    alpha = alpha.masked_fill(~real, 0.0)
    beta = beta.masked_fill(~real, 0.0)
    t_star = alpha @ t
    v_star = beta.T @ v
    r_v = cosine(v, t_star)
    r_t = cosine(t, v_star)
    s = p.mu * masked_mean(r_v, v_mask, 0) + (1 - p.mu) * masked_mean(r_t, t_mask, 0)
    return {
        "affinity": a,
        "alpha": alpha,
        "beta": beta,
        "t_star": t_star,
        "v_star": v_star,
        "r_v": r_v,
        "r_t": r_t,
        "s_l2l": s,
    }


def g2l_step(
    v: torch.Tensor,
    t: torch.Tensor,
    v_mask: torch.Tensor,
    t_mask: torch.Tensor,
    t_star: torch.Tensor,
    v_star: torch.Tensor,
    p: AlignmentParams,
) -> dict[str, torch.Tensor]:
    """Step 2, global-to-local, for one pair (needs step 1's ``t_star (k, d)``, ``v_star (n, d)``).

    Returns ``img_gate (k, d)``, ``txt_gate (n, d)``, ``img_pool (k,)``, ``txt_pool (n,)``,
    ``v_ctx (d,)``, ``t_ctx (d,)``, ``gamma (n,)`` (image context -> words), ``delta (k,)`` (text
    context -> regions), ``t_star_c (d,)``, ``v_star_c (d,)``, ``s_g2l ()``.
    """
    v_fused, g = p.fuse_img(v, t_star)
    t_fused, h = p.fuse_txt(t, v_star)
    v_ctx, a = p.pool_img(v_fused, v_mask)
    t_ctx, b = p.pool_txt(t_fused, t_mask)
    gamma = masked_softmax(p.smooth * cosine(v_ctx[None, :], t), t_mask, dim=0)
    delta = masked_softmax(p.smooth * cosine(t_ctx[None, :], v), v_mask, dim=0)
    t_star_c = gamma @ t
    v_star_c = delta @ v
    s = 0.5 * (cosine(v_ctx, t_star_c) + cosine(t_ctx, v_star_c))
    return {
        "img_gate": g,
        "txt_gate": h,
        "img_pool": a,
        "txt_pool": b,
        "v_ctx": v_ctx,
        "t_ctx": t_ctx,
        "gamma": gamma,
        "delta": delta,
        "t_star_c": t_star_c,
        "v_star_c": v_star_c,
        "s_g2l": s,
    }


def g2g_step(
    v_ctx: torch.Tensor, t_star_c: torch.Tensor, t_ctx: torch.Tensor, v_star_c: torch.Tensor
) -> torch.Tensor:
    """Step 3, global-to-global: ``S_G2G = cos(v_ctx + t*_c, t_ctx + v*_c)``; inputs ``(d,)``."""
    return cosine(v_ctx + t_star_c, t_ctx + v_star_c)


def align_pair(
    v: torch.Tensor,
    t: torch.Tensor,
    v_mask: torch.Tensor,
    t_mask: torch.Tensor,
    p: AlignmentParams,
) -> dict[str, torch.Tensor]:
    """All three steps for one pair (reference implementation): union of the step dicts plus
    ``s_g2g``. ``v (k, d)``, ``t (n, d)``, ``v_mask (k,)``, ``t_mask (n,)`` bool."""
    v = v.masked_fill(~v_mask[:, None], 0.0)
    t = t.masked_fill(~t_mask[:, None], 0.0)
    out = l2l_step(v, t, v_mask, t_mask, p)
    out.update(g2l_step(v, t, v_mask, t_mask, out["t_star"], out["v_star"], p))
    out["s_g2g"] = g2g_step(out["v_ctx"], out["t_star_c"], out["t_ctx"], out["v_star_c"])
    return out


# Names that lived here before the batched path and the kernel loader moved to their own modules.
_MOVED = {
    "PreparedImages": "shan.model.scoring",
    "PreparedCaptions": "shan.model.scoring",
    "prepare_images": "shan.model.scoring",
    "prepare_captions": "shan.model.scoring",
    "score_chunk": "shan.model.scoring",
    "fused_cpu_available": "shan.model.fused_cpu",
}


def __getattr__(name: str) -> Any:
    """Keep ``from shan.model.alignment import score_chunk`` (etc.) working (PEP 562)."""
    if name in _MOVED:
        import importlib

        module = importlib.import_module(_MOVED[name])
        return getattr(module, "is_available" if name == "fused_cpu_available" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NEG_INF",
    "EPS",
    "masked_softmax",
    "cosine",
    "masked_mean",
    "FragmentAffinity",
    "GatedFusion",
    "ContextPooling",
    "AlignmentParams",
    "l2l_step",
    "g2l_step",
    "g2g_step",
    "align_pair",
]
