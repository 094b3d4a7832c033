"""SHAN's three alignment steps (see ``SHAN.md``): pure tensor functions plus the small modules
that hold their parameters.

Two implementations of the same maths live here:

* **Reference** (:func:`align_pair`, built from :func:`l2l_step`, :func:`g2l_step`,
  :func:`g2g_step`): one image-caption pair at a time, the formulas written out as in the paper.
  Readable, used by ``SHAN.explain`` and by the tests as the ground truth.
* **Fast** (:func:`score_chunk`): all ``Nc x Mc`` pairs of a chunk at once, using the algebra of
  ``SHAN.md`` "Scoring cost" — one GEMM for all affinities, linear maps applied to the originals
  once per image / caption (``W t*_i = sum_j alpha_ij (W t_j)``), cosines of attended vectors from
  small Gram matrices, one ``exp`` shared by both softmaxes of step 1. Used by ``SHAN.score``.

Conventions: ``v`` are region embeddings ``(k, d)``, ``t`` word embeddings ``(n, d)``, masks are
bool (``True`` = real fragment). Padded fragments never change a score: logits are filled with a
large negative number (or their ``exp`` zeroed) before normalising, and means run over real
fragments only. Every image needs >= 1 real region and every caption >= 1 real word.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    Both maps start as the identity, so an untrained model attends like SCAN.
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


# ----------------------------------------------------------------------------- fast path


@dataclass
class PreparedImages:
    """Per-image quantities computed once for :func:`score_chunk` (slice with ``[a:b]``).

    ``v (N, k, d)`` zero-padded regions; ``mask (N, k)`` float 0/1; ``count (N,)`` real regions;
    ``norm (N, k)`` |v_i|; ``proj (N, k, d)`` norm(W~_v v_i); ``gate_own (N, k, d)``
    W_own v_i + b_g (image gate, own part); ``gate_for_words_v (N, k, 2d)`` = [W_att^txt v_i ; v_i]
    (what the word side's attention ``beta`` is applied to); ``gram (N, k, k)`` = V V^T.
    """

    v: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor
    norm: torch.Tensor
    proj: torch.Tensor
    gate_own: torch.Tensor
    att_src: torch.Tensor
    gram: torch.Tensor

    def __getitem__(self, sl: slice) -> PreparedImages:
        return PreparedImages(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.v.shape[0])


@dataclass
class PreparedCaptions:
    """Per-caption quantities for :func:`score_chunk`, symmetric to :class:`PreparedImages`:
    ``t (M, n, d)``, ``mask (M, n)``, ``count (M,)``, ``norm (M, n)``, ``proj (M, n, d)``,
    ``gate_own (M, n, d)`` W_own^txt t_j + b_h, ``att_src (M, n, 2d)`` = [W_att^img t_j ; t_j],
    ``gram (M, n, n)`` = T T^T."""

    t: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor
    norm: torch.Tensor
    proj: torch.Tensor
    gate_own: torch.Tensor
    att_src: torch.Tensor
    gram: torch.Tensor

    def __getitem__(self, sl: slice) -> PreparedCaptions:
        return PreparedCaptions(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.t.shape[0])


def prepare_images(v: torch.Tensor, mask: torch.Tensor, p: AlignmentParams) -> PreparedImages:
    """``v (N, k, d)``, ``mask (N, k)`` bool -> :class:`PreparedImages` (O(N k d^2), once)."""
    v = v.masked_fill(~mask[..., None], 0.0)
    m = mask.to(v.dtype)
    return PreparedImages(
        v=v,
        mask=m,
        count=m.sum(-1),
        norm=v.norm(dim=-1),
        proj=p.affinity.project_images(v) * m[..., None],
        gate_own=p.fuse_img.own_part(v),
        att_src=torch.cat([p.fuse_txt.attended_part(v), v], dim=-1),
        gram=v @ v.transpose(-1, -2),
    )


def prepare_captions(t: torch.Tensor, mask: torch.Tensor, p: AlignmentParams) -> PreparedCaptions:
    """``t (M, n, d)``, ``mask (M, n)`` bool -> :class:`PreparedCaptions` (O(M n d^2), once)."""
    t = t.masked_fill(~mask[..., None], 0.0)
    m = mask.to(t.dtype)
    return PreparedCaptions(
        t=t,
        mask=m,
        count=m.sum(-1),
        norm=t.norm(dim=-1),
        proj=p.affinity.project_words(t) * m[..., None],
        gate_own=p.fuse_txt.own_part(t),
        att_src=torch.cat([p.fuse_img.attended_part(t), t], dim=-1),
        gram=t @ t.transpose(-1, -2),
    )


def _pool(
    fused: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 pooling for a batch: ``fused (B1, B2, L, d)`` (padded rows: anything finite) ->
    ``(context (B1, B2, d), weights (B1, B2, L))``.

    ``mask`` must broadcast to ``(B1, B2, L)``, ``count`` to ``(B1, B2)``.
    """
    mean = torch.matmul(mask.unsqueeze(-2), fused).squeeze(-2) / count.unsqueeze(-1)
    guide = (mean * weight).unsqueeze(-1)  # (B1, B2, d, 1)
    logits = torch.matmul(fused, guide).squeeze(-1)  # (B1, B2, L)
    weights = masked_softmax(logits, mask > 0, dim=-1)
    context = torch.matmul(weights.unsqueeze(-2), fused).squeeze(-2)
    return context, weights


def _fuse(z: torch.Tensor, own: torch.Tensor, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Gated fusion from the attended GEMM output ``z = [W_att x* ; x*] (..., L, 2d)``:
    ``g = sigmoid(W_att x* + own)``, returns ``x* + g * (x - x*)`` (``(..., L, d)``)."""
    d = x.shape[-1]
    zg, star = z[..., :d], z[..., d:]
    if inplace:
        g = zg.add_(own).sigmoid_()
        diff = torch.sub(x, star)
        return diff.mul_(g).add_(star)
    g = torch.sigmoid(zg + own)
    return star + g * (x - star)


def score_chunk(
    img: PreparedImages,
    txt: PreparedCaptions,
    p: AlignmentParams,
    use_l2l: bool = True,
    use_context: bool = True,
    use_g2g: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All three SHAN steps for every pair of a chunk (fast path).

    Args:
        img: ``Nc`` prepared images (``k`` regions); txt: ``Mc`` prepared captions (``n`` words).
        use_l2l: compute ``S_L2L`` (otherwise zeros; the step-1 attention is still computed when
            the context steps need it).
        use_context: compute steps 2 and 3 (``S_G2L``); use_g2g: also ``S_G2G``.

    Returns:
        ``(s_l2l, s_g2l, s_g2g)``, each ``(Nc, Mc)``.
    """
    nc, k, d = img.v.shape
    mc, n, _ = txt.t.shape
    lam = p.smooth
    zeros = img.v.new_zeros(nc, mc)
    if not (use_l2l or use_context):
        return zeros, zeros, zeros
    inplace = not torch.is_grad_enabled()

    # ---- Step 1: all affinities of the chunk in one GEMM, one exp for both softmaxes.
    aff = (img.proj.reshape(nc * k, d) @ txt.proj.reshape(mc * n, d).T).view(nc, k, mc, n)
    real = img.mask.view(nc, k, 1, 1) * txt.mask.view(1, 1, mc, n)
    if lam <= 40.0:
        # |A| <= 1 (cosines), so exp(lam (A - 1)) neither overflows nor underflows to 0.
        ex = torch.exp(aff.sub(1.0).mul_(lam)) if inplace else torch.exp(lam * (aff - 1.0))
        ex = ex.mul_(real) if inplace else ex * real
        alpha = ex / ex.sum(3, keepdim=True).clamp_min(1e-30)  # over words
        beta = ex / ex.sum(1, keepdim=True).clamp_min(1e-30)  # over regions
    else:
        alpha = masked_softmax(lam * aff, real > 0, dim=3)
        beta = masked_softmax(lam * aff, real > 0, dim=1)

    s_l2l = zeros
    if use_l2l:
        cos_raw = (img.v.reshape(nc * k, d) @ txt.t.reshape(mc * n, d).T).view(nc, k, mc, n)
        # R_v(i) = cos(v_i, t*_i): t*_i.v_i = sum_j alpha_ij (v_i.t_j);
        # |t*_i|^2 = alpha_i^T H alpha_i
        num_v = (alpha * cos_raw).sum(3)  # (nc, k, mc)
        a_h = torch.einsum("ikmj,mjl->ikml", alpha, txt.gram)
        tstar_norm = (a_h * alpha).sum(3).clamp_min(0.0).sqrt()
        r_v = num_v / (img.norm.view(nc, k, 1) * tstar_norm).clamp_min(EPS)
        # R_t(j) = cos(t_j, v*_j): |v*_j|^2 = beta_j^T G beta_j
        num_t = (beta * cos_raw).sum(1)  # (nc, mc, n)
        g_b = torch.einsum("ikl,ilmj->ikmj", img.gram, beta)
        vstar_norm = (g_b * beta).sum(1).clamp_min(0.0).sqrt()
        r_t = num_t / (txt.norm.view(1, mc, n) * vstar_norm).clamp_min(EPS)
        mean_v = (r_v * img.mask.view(nc, k, 1)).sum(1) / img.count.view(nc, 1)
        mean_t = (r_t * txt.mask.view(1, mc, n)).sum(2) / txt.count.view(1, mc)
        s_l2l = p.mu * mean_v + (1 - p.mu) * mean_t
    if not use_context:
        return s_l2l, zeros, zeros

    # ---- Step 2: gated fusion. Region side, per caption m: alpha_m (nc*k, n) @ [W t ; t] (n, 2d).
    alpha_m = alpha.reshape(nc * k, mc, n).transpose(0, 1)  # (mc, nc*k, n)
    z_v = torch.bmm(alpha_m, txt.att_src).view(mc, nc, k, 2 * d)
    v_fused = _fuse(z_v, img.gate_own.unsqueeze(0), img.v.unsqueeze(0), inplace)  # (mc,nc,k,d)
    v_ctx, _ = _pool(v_fused, img.mask.unsqueeze(0), img.count.view(1, nc), p.pool_img.weight)
    del z_v, v_fused
    # Word side, per image i: beta_i^T (mc*n, k) @ [W v ; v] (k, 2d).
    beta_i = beta.reshape(nc, k, mc * n).transpose(1, 2)  # (nc, mc*n, k)
    z_t = torch.bmm(beta_i, img.att_src).view(nc, mc, n, 2 * d)
    t_fused = _fuse(z_t, txt.gate_own.unsqueeze(0), txt.t.unsqueeze(0), inplace)  # (nc,mc,n,d)
    t_ctx, _ = _pool(t_fused, txt.mask.unsqueeze(0), txt.count.view(1, mc), p.pool_txt.weight)
    del z_t, t_fused

    # Global-to-local: image context (mc, nc, d) attends to words, text context to regions.
    v_ctx_norm = v_ctx.norm(dim=-1)  # (mc, nc)
    t_ctx_norm = t_ctx.norm(dim=-1)  # (nc, mc)
    dots_vt = torch.bmm(v_ctx, txt.t.transpose(1, 2))  # (mc, nc, n)
    cos_vt = dots_vt / (v_ctx_norm.unsqueeze(-1) * txt.norm.unsqueeze(1)).clamp_min(EPS)
    gamma = masked_softmax(lam * cos_vt, txt.mask.unsqueeze(1) > 0, dim=-1)
    t_star_c = torch.bmm(gamma, txt.t)  # (mc, nc, d)
    dots_tv = torch.bmm(t_ctx, img.v.transpose(1, 2))  # (nc, mc, k)
    cos_tv = dots_tv / (t_ctx_norm.unsqueeze(-1) * img.norm.unsqueeze(1)).clamp_min(EPS)
    delta = masked_softmax(lam * cos_tv, img.mask.unsqueeze(1) > 0, dim=-1)
    v_star_c = torch.bmm(delta, img.v)  # (nc, mc, d)
    s_g2l = 0.5 * (cosine(v_ctx, t_star_c).T + cosine(t_ctx, v_star_c))

    # ---- Step 3: global-to-global.
    s_g2g = zeros
    if use_g2g:
        v_glob = (v_ctx + t_star_c).transpose(0, 1)  # (nc, mc, d)
        s_g2g = cosine(v_glob, t_ctx + v_star_c)
    return s_l2l, s_g2l, s_g2g


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
    "PreparedImages",
    "PreparedCaptions",
    "prepare_images",
    "prepare_captions",
    "score_chunk",
]
