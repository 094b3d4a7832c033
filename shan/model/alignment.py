"""SHAN's three alignment steps (see ``SHAN.md``): pure tensor functions plus the small modules
that hold their parameters.

Two implementations of the same maths live here:

* **Reference** (:func:`align_pair`, built from :func:`l2l_step`, :func:`g2l_step`,
  :func:`g2g_step`): one image-caption pair at a time, the formulas written out as in the paper.
  Readable, used by ``SHAN.explain`` and by the tests as the ground truth.
* **Fast** (:func:`score_chunk`): all ``Nc x Mc`` pairs of a chunk at once, using the algebra of
  ``SHAN.md`` "Scoring cost" — one GEMM for all affinities, linear maps applied to the originals
  once per image / caption (``W t*_i = sum_j alpha_ij (W t_j)``), cosines of attended vectors from
  small Gram matrices, one ``exp`` shared by both softmaxes of step 1, gated fusion as one
  GEMM + GLU, pooling without forming the fused fragments. Used by ``SHAN.score`` (autograd and
  accelerators).
* **Fused CPU kernel** (``_FUSED_C_SOURCE``, used by :func:`score_chunk` without gradients on the
  CPU): the same algebra pair by pair in C, each pair's data in L1/L2 (the torch path is bound by
  memory bandwidth on a CPU). Built once with the system C compiler and cached; without one (or
  with ``SHAN_FUSED_CPU=0``) the torch path runs. Tests check both against the reference.

Conventions: ``v`` are region embeddings ``(k, d)``, ``t`` word embeddings ``(n, d)``, masks are
bool (``True`` = real fragment). Padded fragments never change a score: logits are filled with a
large negative number (or their ``exp`` zeroed) before normalising, and means run over real
fragments only. Every image needs >= 1 real region and every caption >= 1 real word.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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


# ----------------------------------------------------------------------------- fused CPU kernel
#
# On CPU the per-pair tensors of step 2 ((k + n) x 2d floats per pair) do not fit in cache for any
# chunk big enough to amortise PyTorch's per-operation overhead, so the torch path is bound by
# memory bandwidth. This small C kernel (compiled once with the system C compiler, cached, loaded
# with ctypes; no PyTorch headers) runs steps 1 (relevance) to 3 pair by pair with each pair's
# data in L1/L2. PyTorch still computes all affinities (one GEMM) and the step-1 softmaxes.
# Without a C compiler, or with SHAN_FUSED_CPU=0, the torch path runs instead (same results).

_FUSED_C_SOURCE = r"""
/* SHAN fused CPU kernel: steps 1 (relevance), 2 and 3 for a block of image-caption pairs.
 * Inputs are prepared by shan.model.alignment (see PreparedImages / PreparedCaptions); the
 * step-1 affinities come from torch (one GEMM per chunk). C99 + GCC vector extensions. */
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int vi16 __attribute__((vector_size(64)));

#define EPS 1e-8f

static inline v16 ld(const float *p) { return *(const v16u *)p; }
static inline void st(float *p, v16 v) { *(v16u *)p = v; }
static inline v16 splat(float a) { return (v16){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
static inline float hsum(v16 v) {
    float s = 0.f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* 2^f for |f| <= 1/2: degree-6 polynomial (relative error ~2e-7). */
static inline v16 exp2_poly(v16 f) {
    v16 p = splat(1.54035304e-4f);
    p = p * f + splat(1.33335581e-3f);
    p = p * f + splat(9.61812911e-3f);
    p = p * f + splat(5.55041087e-2f);
    p = p * f + splat(2.40226507e-1f);
    p = p * f + splat(6.93147181e-1f);
    p = p * f + splat(1.0f);
    return p;
}

/* 1 / (1 + exp(-g)), exp via exp2_poly and an exponent scale. */
static inline v16 vsigmoid(v16 g) {
#if defined(__AVX512F__) && !defined(SHAN_NO_RCP)
    /* exp(-g) = 2^r * 2^f (r = round(-g log2 e), |f| <= 1/2) with VSCALEFPS doing the 2^r: no
     * integer conversions, and only the overflow side needs a clamp (den stays finite). */
    const __m512 t = _mm512_min_ps(_mm512_mul_ps((__m512)g, _mm512_set1_ps(-1.44269504088896341f)),
                                   _mm512_set1_ps(126.f));
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const v16 f = (v16)_mm512_sub_ps(t, r);
    const v16 p = exp2_poly(f);
    const v16 den = splat(1.f) + (v16)_mm512_scalef_ps((__m512)p, r);
    /* reciprocal estimate (14 bits) + one Newton step: ~1e-7 relative error, no division */
    v16 rc = (v16)_mm512_rcp14_ps((__m512)den);
    return rc * (splat(2.f) - den * rc);
#else
    v16 x = -g;
    vi16 lo = x < splat(-87.f), hi = x > splat(87.f);
    x = (v16)((lo & (vi16)splat(-87.f)) | (~lo & (vi16)x));
    x = (v16)((hi & (vi16)splat(87.f)) | (~hi & (vi16)x));
    v16 t = x * splat(1.44269504088896341f);
    vi16 n = __builtin_convertvector(t + splat(128.5f), vi16) - 128;
    v16 f = t - __builtin_convertvector(n, v16);
    const v16 p = exp2_poly(f);
    v16 scale = (v16)((n + 127) << 23);
    return splat(1.f) / (splat(1.f) + p * scale);
#endif
}

/* a . b with four independent vector accumulators (the FMA latency, not throughput, bounds a
 * single-accumulator dot product) */
static inline float dot(const float *a, const float *b, int d) {
    int c = 0;
    float s = 0.f;
    if (d >= 64) {
        v16 s0 = splat(0.f), s1 = s0, s2 = s0, s3 = s0;
        for (; c + 64 <= d; c += 64) {
            s0 += ld(a + c) * ld(b + c); s1 += ld(a + c + 16) * ld(b + c + 16);
            s2 += ld(a + c + 32) * ld(b + c + 32); s3 += ld(a + c + 48) * ld(b + c + 48);
        }
        s = hsum((s0 + s1) + (s2 + s3));
    }
    for (; c < d; c++) s += a[c] * b[c];
    return s;
}

static inline float sigmoid1(float g) { return 1.f / (1.f + expf(-g)); }

/* One side of step 2 for one pair: gated fusion, context pooling -> ctx (d); also the step-1
 * relevance mean over real rows (cos(x_i, star_i), star = the attended vector).
 * att(i, j) = att[i * ars + j * acs] (L rows x K), src (K x 2d) = [y ; -W_att y],
 * bias (L x 2d) = [-x ; -(W_own x + b)], x (L x d). Scratch: f (L x d) fused rows x^c,
 * u (d), wt (L), rv (2 L x 16), rows (L ints). */
static void side(int L, int K, int d, const float *att, long ars, long acs, const float *src,
                 long ss,
                 const float *bias, const float *x, const float *mask, float cnt, const float *w,
                 const float *xnorm, float *f, float *u, float *wt, float *rv, float *ctx,
                 float *rel_mean, int *rows) {
    const long d2 = 2L * d;
    const int dv = (d % 64 == 0) ? d : 0; /* vector path for d multiple of 64 */
    const float inv = 1.f / cnt;
    float *rn = rv, *rs = rv + 16L * L; /* per-row partial dot products, 16 lanes each */
    memset(rv, 0, sizeof(float) * 32 * (size_t)L);
    int nreal = 0;
    for (int i = 0; i < L; i++)
        if (mask[i] != 0.f) rows[nreal++] = i;
    for (int c0 = 0; c0 < dv; c0 += 64) {
        v16 u0 = splat(0.f), u1 = u0, u2 = u0, u3 = u0;
        /* two rows at a time: each src vector loaded once feeds 2 FMAs, 16 independent chains */
        for (int r = 0; r < nreal; r += 2) {
            const int ia = rows[r], ib = rows[r + 1 < nreal ? r + 1 : r];
            const float *ba = bias + ia * d2 + c0, *bb = bias + ib * d2 + c0;
            v16 s0 = ld(ba), s1 = ld(ba + 16), s2 = ld(ba + 32), s3 = ld(ba + 48);
            v16 g0 = ld(ba + d), g1 = ld(ba + d + 16), g2 = ld(ba + d + 32), g3 = ld(ba + d + 48);
            v16 q0 = ld(bb), q1 = ld(bb + 16), q2 = ld(bb + 32), q3 = ld(bb + 48);
            v16 h0 = ld(bb + d), h1 = ld(bb + d + 16), h2 = ld(bb + d + 32), h3 = ld(bb + d + 48);
            const float *aa = att + ia * ars, *ab = att + ib * ars;
            for (int j = 0; j < K; j++) {
                const v16 va = splat(aa[j * acs]), vb = splat(ab[j * acs]);
                const float *sj = src + j * ss + c0;
                const v16 y0 = ld(sj), y1 = ld(sj + 16), y2 = ld(sj + 32), y3 = ld(sj + 48);
                const v16 z0 = ld(sj + d), z1 = ld(sj + d + 16), z2 = ld(sj + d + 32),
                          z3 = ld(sj + d + 48);
                s0 += va * y0; s1 += va * y1; s2 += va * y2; s3 += va * y3;
                g0 += va * z0; g1 += va * z1; g2 += va * z2; g3 += va * z3;
                q0 += vb * y0; q1 += vb * y1; q2 += vb * y2; q3 += vb * y3;
                h0 += vb * z0; h1 += vb * z1; h2 += vb * z2; h3 += vb * z3;
            }
            for (int h = 0; h < 2; h++) {
                if (h == 1 && r + 1 >= nreal) break;
                const int i = h ? ib : ia;
                if (h) { s0 = q0; s1 = q1; s2 = q2; s3 = q3; g0 = h0; g1 = h1; g2 = h2; g3 = h3; }
                const float *xi = x + (long)i * d + c0;
                float *fi = f + (long)i * d + c0;
                v16 x0 = ld(xi), x1 = ld(xi + 16), x2 = ld(xi + 32), x3 = ld(xi + 48);
                v16 t0 = s0 + x0, t1 = s1 + x1, t2 = s2 + x2, t3 = s3 + x3; /* attended vector */
                st(rn + 16L * i, ld(rn + 16L * i) + t0 * x0 + t1 * x1 + t2 * x2 + t3 * x3);
                st(rs + 16L * i, ld(rs + 16L * i) + t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3);
                /* fused x^c = x + (1 - g) (star - x) */
                v16 f0 = x0 + s0 * vsigmoid(g0), f1 = x1 + s1 * vsigmoid(g1);
                v16 f2 = x2 + s2 * vsigmoid(g2), f3 = x3 + s3 * vsigmoid(g3);
                st(fi, f0); st(fi + 16, f1); st(fi + 32, f2); st(fi + 48, f3);
                u0 += f0; u1 += f1; u2 += f2; u3 += f3;
            }
        }
        const v16 sc = splat(inv);
        st(u + c0, u0 * sc * ld(w + c0)); st(u + c0 + 16, u1 * sc * ld(w + c0 + 16));
        st(u + c0 + 32, u2 * sc * ld(w + c0 + 32)); st(u + c0 + 48, u3 * sc * ld(w + c0 + 48));
    }
    for (int c = dv; c < d; c++) { /* scalar path (d not a multiple of 64) */
        float uc = 0.f;
        for (int i = 0; i < L; i++) {
            if (mask[i] == 0.f) continue;
            float s = bias[i * d2 + c], g = bias[i * d2 + d + c];
            for (int j = 0; j < K; j++) {
                const float a = att[i * ars + j * acs];
                s += a * src[j * ss + c];
                g += a * src[j * ss + d + c];
            }
            const float xv = x[(long)i * d + c], t = s + xv;
            rn[16L * i] += t * xv;
            rs[16L * i] += t * t;
            const float fv = xv + s * sigmoid1(g);
            f[(long)i * d + c] = fv;
            uc += fv;
        }
        u[c] = uc * inv * w[c];
    }
    /* relevance mean; pooling weights softmax_i(f_i . u) and context, one pass (online softmax) */
    float rsum = 0.f, mx = -3.0e38f, z = 0.f;
    for (int c = 0; c < d; c++) ctx[c] = 0.f;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        const float num = hsum(ld(rn + 16L * i)), sq = hsum(ld(rs + 16L * i));
        const float den = xnorm[i] * sqrtf(sq > 0.f ? sq : 0.f);
        rsum += num / (den > EPS ? den : EPS);
        const float *fi = f + (long)i * d;
        const float l = dot(fi, u, d);
        if (l > mx) {
            const float r = expf(mx - l);
            for (int c = 0; c < d; c++) ctx[c] *= r;
            z *= r;
            mx = l;
        }
        const float a = expf(l - mx);
        z += a;
        for (int c = 0; c < d; c++) ctx[c] += a * fi[c];
        wt[i] = a;
    }
    *rel_mean = rsum * inv;
    const float iz = 1.f / z;
    for (int c = 0; c < d; c++) ctx[c] *= iz;
}

/* Global-to-local attention: context q (d) over rows y (L x d): softmax_i(lam cos(q, y_i)) over
 * real rows, returns the attended vector in out (d). */
static void g2l_attend(int L, int d, const float *q, const float *y, const float *ynorm,
                       const float *mask, float lam, float *wt, float *out) {
    const float qn = sqrtf(dot(q, q, d));
    float mx = -3.0e38f, z = 0.f;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        const float den = qn * ynorm[i];
        wt[i] = lam * dot(q, y + (long)i * d, d) / (den > EPS ? den : EPS);
        if (wt[i] > mx) mx = wt[i];
    }
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        wt[i] = expf(wt[i] - mx);
        z += wt[i];
    }
    for (int c = 0; c < d; c++) out[c] = 0.f;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        const float a = wt[i] / z;
        const float *yi = y + (long)i * d;
        for (int c = 0; c < d; c++) out[c] += a * yi[c];
    }
}

static float cosv(const float *a, const float *b, int d) {
    const float den = sqrtf(dot(a, a, d)) * sqrtf(dot(b, b, d));
    return dot(a, b, d) / (den > EPS ? den : EPS);
}

/* Step 1 attention of one pair from its affinities aff(i, j) = aff[i * ars + j] (k x n):
 * ex = exp(lam (A - 1)) on real (region, word) pairs (|A| <= 1: no overflow, and no underflow to 0
 * for lam <= 40), alpha (k x n) normalised over words, beta_t (n x k) over regions. */
static void attention(int k, int n, const float *aff, long ars, const float *mv, const float *mt,
                      float lam, float *alpha, float *beta_t, float *col) {
    for (int j = 0; j < n; j++) col[j] = 0.f;
    for (int i = 0; i < k; i++) {
        float *ai = alpha + (long)i * n;
        const float *fi = aff + i * ars;
        float row = 0.f;
        if (mv[i] != 0.f) {
            for (int j = 0; j < n; j++) {
                const float ex = mt[j] != 0.f ? expf(lam * (fi[j] - 1.f)) : 0.f;
                ai[j] = ex;
                row += ex;
                col[j] += ex;
            }
        } else {
            for (int j = 0; j < n; j++) ai[j] = 0.f;
        }
        const float ir = row > 0.f ? 1.f / row : 0.f;
        for (int j = 0; j < n; j++) beta_t[(long)j * k + i] = ai[j]; /* unnormalised for now */
        for (int j = 0; j < n; j++) ai[j] *= ir;
    }
    for (int j = 0; j < n; j++) {
        const float ic = col[j] > 0.f ? 1.f / col[j] : 0.f;
        float *bj = beta_t + (long)j * k;
        for (int i = 0; i < k; i++) bj[i] *= ic;
    }
}

/* Pairs p in [p0, p1) of an (nc images x mc captions) block, p = image * mc + caption.
 * aff: (nc, k, mc, n) step-1 affinities. Outputs (nc, mc): l2l, g2l, g2g.
 * Returns 0, or 1 if out of memory. */
int shan_pairs(int nc, int mc, int k, int n, int d, long p0, long p1, long ss, const float *aff,
               const float *iv, const float *ibias, const float *isrc, const float *imask,
               const float *icnt, const float *inorm, const float *tt, const float *tbias,
               const float *tsrc, const float *tmask, const float *tcnt, const float *tnorm,
               const float *wi, const float *wt, float mu, float lam, float *l2l, float *g2l,
               float *g2g) {
    const int L = k > n ? k : n;
    const size_t extra = 6 * (size_t)d + 33 * (size_t)L + 2 * (size_t)k * n + (size_t)n;
    float *e = (float *)malloc(sizeof(float) * ((size_t)L * d + extra));
    int *rows = (int *)malloc(sizeof(int) * (size_t)L);
    if (!e || !rows) {
        free(e);
        free(rows);
        return 1;
    }
    float *u = e + (size_t)L * d, *vc = u + d, *tc = vc + d, *tsc = tc + d, *vsc = tsc + d,
          *tmp = vsc + d, *wv = tmp + d, *rv = wv + L, *al = rv + 32 * (size_t)L,
          *bt = al + (size_t)k * n, *col = bt + (size_t)k * n;
    const long d2 = 2L * d, kmn = (long)k * mc * n;
    (void)nc;
    for (long p = p0; p < p1; p++) {
        const long v = p / mc, m = p % mc;
        const float *x_v = iv + v * k * d, *m_v = imask + v * k, *n_v = inorm + v * k;
        const float *x_t = tt + m * n * d, *m_t = tmask + m * n, *n_t = tnorm + m * n;
        float r_v, r_t;
        attention(k, n, aff + v * kmn + m * n, (long)mc * n, m_v, m_t, lam, al, bt, col);
        /* step 1 relevance + step 2 fusion/pooling, region side then word side */
        side(k, n, d, al, n, 1, tsrc + m * n * ss, ss, ibias + v * k * d2, x_v, m_v, icnt[v], wi,
             n_v, e, u, wv, rv, vc, &r_v, rows);
        side(n, k, d, bt, k, 1, isrc + v * k * ss, ss, tbias + m * n * d2, x_t, m_t, tcnt[m], wt,
             n_t, e, u, wv, rv, tc, &r_t, rows);
        l2l[p] = mu * r_v + (1.f - mu) * r_t;
        /* step 2 global-to-local */
        g2l_attend(n, d, vc, x_t, n_t, m_t, lam, wv, tsc);
        g2l_attend(k, d, tc, x_v, n_v, m_v, lam, wv, vsc);
        g2l[p] = 0.5f * (cosv(vc, tsc, d) + cosv(tc, vsc, d));
        /* step 3 global-to-global */
        for (int c = 0; c < d; c++) { u[c] = vc[c] + tsc[c]; tmp[c] = tc[c] + vsc[c]; }
        g2g[p] = cosv(u, tmp, d);
    }
    free(e);
    free(rows);
    return 0;
}
"""

_fused_lock = threading.Lock()
_fused_state: dict = {}


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        model = next((ln for ln in text.splitlines() if ln.startswith("model name")), "")
    except OSError:
        flags = model = ""
    return f"{platform.machine()}|{platform.processor()}|{model}|{flags}"


def _compile_fused() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    flag_sets = [  # 512-bit auto-vectorised loops too (GCC prefers 256); the next sets drop flags
        ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-shared", "-fPIC"],
        ["-O3", "-march=native", "-ffast-math", "-shared", "-fPIC"],
        ["-O3", "-ffast-math", "-shared", "-fPIC"],
    ]
    cache = Path(os.environ.get("SHAN_CACHE_DIR", Path.home() / ".cache" / "shan"))
    for flags in flag_sets:
        key = hashlib.sha256(
            "\n".join([_FUSED_C_SOURCE, cc, " ".join(flags), _cpu_signature()]).encode()
        ).hexdigest()[:16]
        lib_path = cache / f"shan_fused_{key}.so"
        try:
            if not lib_path.exists():
                cache.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory() as tmp:
                    c_file = Path(tmp) / "shan_fused.c"
                    c_file.write_text(_FUSED_C_SOURCE)
                    out = Path(tmp) / "shan_fused.so"
                    subprocess.run(
                        [cc, *flags, "-o", str(out), str(c_file), "-lm"],
                        check=True,
                        capture_output=True,
                        timeout=120,
                    )
                    tmp_target = lib_path.with_suffix(f".{os.getpid()}.tmp")
                    shutil.copyfile(out, tmp_target)
                    os.replace(tmp_target, lib_path)  # atomic: concurrent builds are safe
            lib = ctypes.CDLL(str(lib_path))
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", b"") or b""
            warnings.warn(
                f"could not build the fused SHAN CPU kernel with {cc} {' '.join(flags)}: {err} "
                f"{detail.decode(errors='replace')[-500:]}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        fn = lib.shan_pairs
        ptr = ctypes.c_void_p
        fn.argtypes = (
            [ctypes.c_int] * 5
            + [ctypes.c_long] * 3
            + [ptr] * 13
            + [ptr, ptr]
            + [ctypes.c_float, ctypes.c_float]
            + [ptr] * 3
        )
        fn.restype = ctypes.c_int
        return lib
    return None


def fused_cpu_available() -> bool:
    """Whether the fused CPU kernel is usable (compiled on first call; ``SHAN_FUSED_CPU=0``
    disables it)."""
    if os.environ.get("SHAN_FUSED_CPU", "1") == "0":
        return False
    with _fused_lock:
        if "lib" not in _fused_state:
            _fused_state["lib"] = _compile_fused()
    return _fused_state["lib"] is not None


def _fused_pool(threads: int) -> ThreadPoolExecutor:
    """One worker pool per thread count (kept; safe when several threads score at once)."""
    with _fused_lock:
        pools = _fused_state.setdefault("pools", {})
        if threads not in pools:
            pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="shan-fused")
        return pools[threads]


def _src_stride(d: int) -> int:
    """Row stride (floats) of the ``[y ; -W_att y]`` rows the fused kernel reads: ``2d`` plus one
    cache line. With ``2d`` a multiple of 1024 floats (4 KiB) every row of a block would map to the
    same L1 sets, and the 14-36 rows the kernel cycles through would keep evicting each other."""
    return 2 * d + 16


def _strided_rows(x: torch.Tensor) -> torch.Tensor:
    """``x (B, K, 2d)`` with its rows :func:`_src_stride` floats apart (a view of a padded
    buffer): ``x`` itself when it already is laid out so, else a padded copy (same dtype, device
    and autograd history; the pad is never read)."""
    b, k, d2 = x.shape
    ss = _src_stride(d2 // 2)
    if x.stride() == (k * ss, ss, 1) or (b == 1 and x.stride()[1:] == (ss, 1)):
        return x
    return F.pad(x, (0, ss - d2))[..., :d2]


def _kernel_rows(x: torch.Tensor) -> torch.Tensor:
    """:func:`_strided_rows` on the CPU (the fused kernel's layout); unchanged elsewhere."""
    return _strided_rows(x) if x.device.type == "cpu" else x.contiguous()


def _score_fused(
    img: PreparedImages, txt: PreparedCaptions, aff: torch.Tensor, p: AlignmentParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 of a chunk with the fused CPU kernel from the affinities ``aff (nc, k, mc, n)``
    (``smooth <= 40``). Returns ``(s_l2l, s_g2l, s_g2g)``, each ``(nc, mc)``."""
    fn = _fused_state["lib"].shan_pairs
    nc, k, d = img.v.shape
    mc, n, _ = txt.t.shape
    ss = _src_stride(d)
    tensors = [aff, img.v, img.fuse_bias, img.mask, img.count, img.norm]
    tensors += [txt.t, txt.fuse_bias, txt.mask, txt.count, txt.norm]
    tensors += [p.pool_img.weight, p.pool_txt.weight]
    tensors = [x.detach().float().contiguous() for x in tensors]
    tensors.insert(3, _strided_rows(img.att_src.detach().float()))
    tensors.insert(9, _strided_rows(txt.att_src.detach().float()))
    out = torch.empty(3, nc, mc)
    ptrs = [x.data_ptr() for x in tensors]
    tail = [ctypes.c_float(p.mu), ctypes.c_float(p.smooth)] + [o.data_ptr() for o in out]
    total = nc * mc
    threads = max(1, min(torch.get_num_threads(), total))
    cuts = [total * i // threads for i in range(threads + 1)]

    def run(i: int) -> int:
        return fn(nc, mc, k, n, d, cuts[i], cuts[i + 1], ss, *ptrs, *tail)

    if threads == 1:
        codes = [run(0)]
    else:
        codes = list(_fused_pool(threads).map(run, range(threads)))
    if any(codes):
        raise MemoryError("fused SHAN kernel: out of memory for its scratch buffer")
    return out[0], out[1], out[2]


# ----------------------------------------------------------------------------- fast path


@dataclass
class PreparedImages:
    """Per-image quantities computed once for :func:`score_chunk` (slice with ``[a:b]``).

    ``v (N, k, d)`` zero-padded regions; ``mask (N, k)`` float 0/1; ``count (N,)`` real regions;
    ``norm (N, k)`` |v_i|; ``proj (N, k, d)`` norm(W~_v v_i); ``fuse_bias (N, k, 2d)`` =
    [-v_i ; -(W_own v_i + b_g)] (own part of the image-side fusion); ``att_src (N, k, 2d)`` =
    [v_i ; -W_att^txt v_i] (what the word side's attention ``beta`` is applied to; a view whose
    rows ``2d + 16`` floats apart on the CPU, see :func:`_src_stride`); ``gram (N, k, k)`` = V V^T;
    ``x_sum (N, d)`` masked sum of ``v``.
    """

    v: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor
    norm: torch.Tensor
    proj: torch.Tensor
    fuse_bias: torch.Tensor
    att_src: torch.Tensor
    gram: torch.Tensor
    x_sum: torch.Tensor

    def __getitem__(self, sl: slice) -> PreparedImages:
        return PreparedImages(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.v.shape[0])


@dataclass
class PreparedCaptions:
    """Per-caption quantities for :func:`score_chunk`, symmetric to :class:`PreparedImages`:
    ``t (M, n, d)``, ``mask (M, n)``, ``count (M,)``, ``norm (M, n)``, ``proj (M, n, d)``,
    ``fuse_bias (M, n, 2d)`` = [-t_j ; -(W_own^txt t_j + b_h)], ``att_src (M, n, 2d)`` =
    [t_j ; -W_att^img t_j] (rows ``2d + 16`` floats apart on the CPU), ``gram (M, n, n)`` = T T^T,
    ``x_sum (M, d)``."""

    t: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor
    norm: torch.Tensor
    proj: torch.Tensor
    fuse_bias: torch.Tensor
    att_src: torch.Tensor
    gram: torch.Tensor
    x_sum: torch.Tensor

    def __getitem__(self, sl: slice) -> PreparedCaptions:
        return PreparedCaptions(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    def select(self, index: torch.Tensor, n_words: int) -> PreparedCaptions:
        """Captions ``index`` (long ``(Mc,)``), word axis trimmed to the first ``n_words``."""
        out = {f: getattr(self, f).index_select(0, index) for f in self.__dataclass_fields__}
        for f in ("t", "mask", "norm", "proj", "fuse_bias"):
            out[f] = out[f][:, :n_words].contiguous()
        out["att_src"] = _kernel_rows(out["att_src"][:, :n_words])
        out["gram"] = out["gram"][:, :n_words, :n_words].contiguous()
        return PreparedCaptions(**out)

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
        fuse_bias=-torch.cat([v, p.fuse_img.own_part(v)], dim=-1),
        att_src=_kernel_rows(torch.cat([v, -p.fuse_txt.attended_part(v)], dim=-1)),
        gram=v @ v.transpose(-1, -2),
        x_sum=v.sum(1),
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
        fuse_bias=-torch.cat([t, p.fuse_txt.own_part(t)], dim=-1),
        att_src=_kernel_rows(torch.cat([t, -p.fuse_img.attended_part(t)], dim=-1)),
        gram=t @ t.transpose(-1, -2),
        x_sum=t.sum(1),
    )


def _buffer(like: torch.Tensor, shape: tuple[int, ...], workspace: dict, key: str) -> torch.Tensor:
    """A contiguous tensor of ``shape`` carved from a buffer kept in ``workspace`` (reused across
    chunks: no fresh allocation, hence no page faults, per chunk)."""
    numel = 1
    for s in shape:
        numel *= s
    buf = workspace.get(key)
    if buf is None or buf.numel() < numel or buf.device != like.device:
        buf = workspace[key] = like.new_empty(numel)
    return buf[:numel].view(shape)


def _attend_and_fuse(
    att: torch.Tensor, src: torch.Tensor, bias: torch.Tensor, workspace: dict | None, key: str
) -> torch.Tensor:
    """Step 2 gated fusion for one side of a chunk, as one GEMM and one GLU.

    ``att (B, R, K)`` step-1 attention, ``src (B, K, 2d)`` = ``[y ; -W_att y]``, ``bias (R, 2d)`` =
    ``[-x ; -(W_own x + b)]``:  ``Z = bias + att @ src = [y* - x ; -(pre-activation)]`` and
    ``GLU(Z) = (y* - x) * sigmoid(-pre) = (1 - g) * (y* - x) = x^c - x``. Returns ``(B, R, d)``.
    """
    if workspace is None:
        return F.glu(torch.baddbmm(bias, att, src), dim=-1)
    b, r, d2 = att.shape[0], att.shape[1], src.shape[2]
    z = torch.baddbmm(bias, att, src, out=_buffer(att, (b, r, d2), workspace, key + "_z"))
    return torch._C._nn.glu(z, -1, out=_buffer(att, (b, r, d2 // 2), workspace, key + "_e"))


def _pool_fused(
    e: torch.Tensor,
    x: torch.Tensor,
    x_sum: torch.Tensor,
    mask: torch.Tensor,
    count: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 context pooling of the fused fragments ``x^c = x + e`` without forming ``x^c``.

    Args:
        e: ``(B1, B2, L, d)`` = ``x^c - x`` for ``B2`` own items of ``L`` fragments against ``B1``
            items of the other modality; x: ``(B2, L, d)`` (padding zero); x_sum: ``(B2, d)``;
            mask: ``(B2, L)`` float; count: ``(B2,)``; weight: ``(d,)`` the pooling vector ``w``.

    Mean, logits ``x^c_i . (w * mean)`` and context split into a per-item part on ``x`` (shared by
    all ``B1``) and a per-pair part on ``e``.

    Returns:
        ``(context (B1, B2, d), weights (B1, B2, L))``.
    """
    mean = (x_sum + torch.matmul(mask.unsqueeze(-2), e).squeeze(-2)) / count.unsqueeze(-1)
    guide = mean * weight  # (B1, B2, d)
    logits = torch.bmm(x, guide.permute(1, 2, 0)).permute(2, 0, 1)  # x . u  (B1, B2, L)
    logits = logits + torch.matmul(e, guide.unsqueeze(-1)).squeeze(-1)  # + e . u
    weights = masked_softmax(logits, mask > 0, dim=-1)
    context = torch.bmm(weights.transpose(0, 1), x).transpose(0, 1)  # sum_i a_i x_i
    context = context + torch.matmul(weights.unsqueeze(-2), e).squeeze(-2)  # + sum_i a_i e_i
    return context, weights


def _safe_sqrt(square: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sqrt`` of a squared norm with a finite gradient: padded entries (``mask == 0``, exactly
    zero) become 1 and real ones are clamped to >= 1e-12 (sqrt'(0) is infinite; on CUDA it turned
    the gradients of padded batches into NaN)."""
    return torch.where(mask > 0, square, torch.ones_like(square)).clamp_min(1e-12).sqrt()


def score_chunk(
    img: PreparedImages,
    txt: PreparedCaptions,
    p: AlignmentParams,
    use_l2l: bool = True,
    use_context: bool = True,
    use_g2g: bool = True,
    workspace: dict | None = None,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All three SHAN steps for every pair of a chunk (fast path).

    Args:
        img: ``Nc`` prepared images (``k`` regions); txt: ``Mc`` prepared captions (``n`` words).
        use_l2l: compute ``S_L2L`` (otherwise zeros; the step-1 attention is still computed when
            the context steps need it).
        use_context: compute steps 2 and 3 (``S_G2L``); use_g2g: also ``S_G2G``.
        workspace: a dict kept across chunks; without gradients the big per-pair tensors are
            written into its reused buffers.
        fused: use the fused CPU kernel (default: when gradients are off, the tensors are
            float32 on the CPU, the context steps are on, ``smooth <= 40`` and the kernel
            compiled).

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
    if fused is None:
        fused = (
            inplace
            and use_context
            and lam <= 40.0
            and img.v.device.type == "cpu"
            and img.v.dtype == torch.float32
            and fused_cpu_available()
        )
    elif fused and not fused_cpu_available():
        raise RuntimeError(
            "the fused CPU kernel is unavailable (no C compiler, or SHAN_FUSED_CPU=0)"
        )

    # ---- Step 1: all affinities of the chunk in one GEMM, one exp for both softmaxes.
    aff = (img.proj.reshape(nc * k, d) @ txt.proj.reshape(mc * n, d).T).view(nc, k, mc, n)
    if fused:
        s_l2l, s_g2l, s_g2g = _score_fused(img, txt, aff, p)
        return (s_l2l if use_l2l else zeros), s_g2l, (s_g2g if use_g2g else zeros)
    real = img.mask.view(nc, k, 1, 1) * txt.mask.view(1, 1, mc, n)
    if lam <= 40.0:
        # |A| <= 1 (cosines), so exp(lam (A - 1)) neither overflows nor underflows to 0.
        ex = torch.exp(aff.sub(1.0).mul_(lam)) if inplace else torch.exp(lam * (aff - 1.0))
        ex = ex.mul_(real) if inplace else ex * real
        # padded rows / columns are all zero: add 1 to their sums (never divide by ~0, whose
        # gradient is huge or NaN)
        alpha = ex / (ex.sum(3, keepdim=True) + (1.0 - img.mask).view(nc, k, 1, 1))  # over words
        beta = ex / (ex.sum(1, keepdim=True) + (1.0 - txt.mask).view(1, 1, mc, n))  # over regions
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
        tstar_norm = _safe_sqrt((a_h * alpha).sum(3), img.mask.view(nc, k, 1))
        r_v = num_v / (img.norm.view(nc, k, 1) * tstar_norm).clamp_min(EPS)
        # R_t(j) = cos(t_j, v*_j): |v*_j|^2 = beta_j^T G beta_j
        num_t = (beta * cos_raw).sum(1)  # (nc, mc, n)
        g_b = torch.einsum("ikl,ilmj->ikmj", img.gram, beta)
        vstar_norm = _safe_sqrt((g_b * beta).sum(1), txt.mask.view(1, mc, n))
        r_t = num_t / (txt.norm.view(1, mc, n) * vstar_norm).clamp_min(EPS)
        mean_v = (r_v * img.mask.view(nc, k, 1)).sum(1) / img.count.view(nc, 1)
        mean_t = (r_t * txt.mask.view(1, mc, n)).sum(2) / txt.count.view(1, mc)
        s_l2l = p.mu * mean_v + (1 - p.mu) * mean_t
    if not use_context:
        return s_l2l, zeros, zeros

    # ---- Step 2: gated fusion. Region side, per caption m: alpha_m (nc*k, n) @ [t ; -W t].
    ws = workspace if inplace else None
    alpha_m = alpha.reshape(nc * k, mc, n).transpose(0, 1)  # (mc, nc*k, n)
    bias_v = img.fuse_bias.reshape(nc * k, 2 * d)
    e_v = _attend_and_fuse(alpha_m, txt.att_src, bias_v, ws, "v").view(mc, nc, k, d)
    v_ctx, _ = _pool_fused(e_v, img.v, img.x_sum, img.mask, img.count, p.pool_img.weight)
    del e_v  # v_ctx: (mc, nc, d)
    # Word side, per image i: beta_i^T (mc*n, k) @ [v ; -W v] (k, 2d).
    beta_i = beta.reshape(nc, k, mc * n).transpose(1, 2)  # (nc, mc*n, k)
    bias_t = txt.fuse_bias.reshape(mc * n, 2 * d)
    e_t = _attend_and_fuse(beta_i, img.att_src, bias_t, ws, "t").view(nc, mc, n, d)
    t_ctx, _ = _pool_fused(e_t, txt.t, txt.x_sum, txt.mask, txt.count, p.pool_txt.weight)
    del e_t  # t_ctx: (nc, mc, d)

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
    "fused_cpu_available",
]
