"""SHAN's batched all-pairs scoring: every image against every caption, in chunks.

The same maths as the per-pair reference in :mod:`shan.model.alignment` (the tests' ground
truth), rearranged with the algebra of ``docs/METHOD.md`` ("Scoring cost"):

* per image / caption work done once (:func:`prepare_images`, :func:`prepare_captions`): linear
  maps are applied to the original fragments (``W t*_i = sum_j alpha_ij (W t_j)``), never to each
  attended vector;
* per chunk of ``Nc x Mc`` pairs (:func:`score_chunk`): all affinities as one GEMM, one ``exp``
  shared by both softmaxes of step 1, cosines of attended vectors from small Gram matrices, gated
  fusion as one GEMM + GLU, pooling without forming the fused fragments. Runs with autograd and on
  accelerators;
* on the CPU without gradients, steps 1-3 of a chunk run in the fused C kernel
  (:mod:`shan.model.fused_cpu`, decided by :func:`shan.model.fused_cpu.use_fused_cpu`);
* :func:`score_all_pairs` walks all ``N x M`` pairs in chunks (what ``SHAN.score`` calls).

Conventions as in :mod:`shan.model.alignment`: masks are bool (``True`` = real fragment) on input,
float 0/1 once prepared; every image needs >= 1 real region and every caption >= 1 real word.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from shan.model import fused_cpu
from shan.model.alignment import EPS, AlignmentParams, GatedFusion, cosine, masked_softmax

_P = TypeVar("_P", bound="_Prepared")


@dataclass
class _Prepared:
    """The fields both sides share, for ``B`` items of ``K`` fragments each: ``mask (B, K)``,
    ``count (B,)``, ``norm (B, K)``, ``proj (B, K, d)``, ``fuse_bias (B, K, 2d)``, ``att_src (B, K,
    2d)``, ``gram (B, K, K)``, ``x_sum (B, d)``; :class:`PreparedImages` / :class:`PreparedCaptions`
    add the fragments themselves and say what each field holds. Slice with ``[a:b]``."""

    mask: torch.Tensor
    count: torch.Tensor
    norm: torch.Tensor
    proj: torch.Tensor
    fuse_bias: torch.Tensor
    att_src: torch.Tensor
    gram: torch.Tensor
    x_sum: torch.Tensor

    def __getitem__(self: _P, sl: slice) -> _P:
        return type(self)(**{f: getattr(self, f)[sl] for f in self.__dataclass_fields__})

    def __len__(self) -> int:
        return int(self.mask.shape[0])


@dataclass
class PreparedImages(_Prepared):
    """Per-image quantities computed once for :func:`score_chunk` (slice with ``[a:b]``).

    ``v (N, k, d)`` zero-padded regions; ``mask (N, k)`` float 0/1; ``count (N,)`` real regions;
    ``norm (N, k)`` |v_i|; ``proj (N, k, d)`` norm(W~_v v_i); ``fuse_bias (N, k, 2d)`` =
    [-v_i ; -(W_own v_i + b_g)] (own part of the image-side fusion); ``att_src (N, k, 2d)`` =
    [v_i ; -W_att^txt v_i] (what the word side's attention ``beta`` is applied to; a view whose
    rows ``2d + 16`` floats apart on the CPU, see :func:`shan.model.fused_cpu.src_stride`);
    ``gram (N, k, k)`` = V V^T; ``x_sum (N, d)`` masked sum of ``v``.
    """

    v: torch.Tensor


@dataclass
class PreparedCaptions(_Prepared):
    """Per-caption quantities for :func:`score_chunk`, symmetric to :class:`PreparedImages`:
    ``t (M, n, d)``, ``mask (M, n)``, ``count (M,)``, ``norm (M, n)``, ``proj (M, n, d)``,
    ``fuse_bias (M, n, 2d)`` = [-t_j ; -(W_own^txt t_j + b_h)], ``att_src (M, n, 2d)`` =
    [t_j ; -W_att^img t_j] (rows ``2d + 16`` floats apart on the CPU), ``gram (M, n, n)`` = T T^T,
    ``x_sum (M, d)``."""

    t: torch.Tensor

    def select(self, index: torch.Tensor, n_words: int) -> PreparedCaptions:
        """Captions ``index`` (long ``(Mc,)``), word axis trimmed to the first ``n_words``."""
        out = {f: getattr(self, f).index_select(0, index) for f in self.__dataclass_fields__}
        for f in ("t", "mask", "norm", "proj", "fuse_bias"):
            out[f] = out[f][:, :n_words].contiguous()
        out["att_src"] = _kernel_rows(out["att_src"][:, :n_words])
        out["gram"] = out["gram"][:, :n_words, :n_words].contiguous()
        return PreparedCaptions(**out)


def _kernel_rows(x: torch.Tensor) -> torch.Tensor:
    """``x (B, K, 2d)`` laid out for the fused kernel on the CPU (rows ``2d + 16`` floats apart,
    :func:`shan.model.fused_cpu.strided_rows`); contiguous elsewhere."""
    return fused_cpu.strided_rows(x) if x.device.type == "cpu" else x.contiguous()


def kernel_arguments(
    img: PreparedImages, txt: PreparedCaptions, aff: torch.Tensor, p: AlignmentParams
) -> dict:
    """The keyword arguments of :func:`shan.model.fused_cpu.score_pairs` for a chunk with step-1
    affinities ``aff (nc, k, mc, n)``: tensors copied to float32 / the kernel's layout where they
    are not (no copy where they are)."""

    def plain(x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().contiguous()

    def src(x: torch.Tensor) -> torch.Tensor:
        return fused_cpu.strided_rows(x.detach().float())

    return dict(
        aff=plain(aff),
        ibias=plain(img.fuse_bias),
        isrc=src(img.att_src),
        imask=plain(img.mask),
        icnt=plain(img.count),
        inorm=plain(img.norm),
        tbias=plain(txt.fuse_bias),
        tsrc=src(txt.att_src),
        tmask=plain(txt.mask),
        tcnt=plain(txt.count),
        tnorm=plain(txt.norm),
        wi=plain(p.pool_img.weight),
        wt=plain(p.pool_txt.weight),
        mu=float(p.mu),
        lam=float(p.smooth),
    )


def _prepare(
    x: torch.Tensor,
    mask: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    own_fuse: GatedFusion,
    other_fuse: GatedFusion,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One side's preparation: ``x (B, K, d)`` fragments, ``mask (B, K)`` bool, ``project`` that
    side's affinity projection, ``own_fuse`` that side's gated fusion (its own part goes into
    ``fuse_bias``), ``other_fuse`` the other side's (its attended part of ``x`` goes into
    ``att_src``) -> zero-padded ``x (B, K, d)`` and the :class:`_Prepared` fields."""
    x = x.masked_fill(~mask[..., None], 0.0)
    m = mask.to(x.dtype)
    return x, dict(
        mask=m,
        count=m.sum(-1),
        norm=x.norm(dim=-1),
        proj=project(x) * m[..., None],
        fuse_bias=-torch.cat([x, own_fuse.own_part(x)], dim=-1),
        att_src=_kernel_rows(torch.cat([x, -other_fuse.attended_part(x)], dim=-1)),
        gram=x @ x.transpose(-1, -2),
        x_sum=x.sum(1),
    )


def prepare_images(v: torch.Tensor, mask: torch.Tensor, p: AlignmentParams) -> PreparedImages:
    """``v (N, k, d)``, ``mask (N, k)`` bool -> :class:`PreparedImages` (O(N k d^2), once)."""
    v, fields = _prepare(v, mask, p.affinity.project_images, p.fuse_img, p.fuse_txt)
    return PreparedImages(v=v, **fields)


def prepare_captions(t: torch.Tensor, mask: torch.Tensor, p: AlignmentParams) -> PreparedCaptions:
    """``t (M, n, d)``, ``mask (M, n)`` bool -> :class:`PreparedCaptions` (O(M n d^2), once)."""
    t, fields = _prepare(t, mask, p.affinity.project_words, p.fuse_txt, p.fuse_img)
    return PreparedCaptions(t=t, **fields)


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


def _kernel_inputs(img: PreparedImages, txt: PreparedCaptions) -> tuple[torch.Tensor, ...]:
    """The prepared tensors the fused kernel reads (what :func:`use_fused_cpu` checks)."""
    return (img.v, img.proj, img.fuse_bias, img.att_src) + (
        txt.t,
        txt.proj,
        txt.fuse_bias,
        txt.att_src,
    )


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
        fused: use the fused CPU kernel (default: :func:`shan.model.fused_cpu.use_fused_cpu`
            on the chunk's tensors — gradients off, float32 on the CPU, context steps on,
            ``smooth <= 40``, kernel built, ``SHAN_FUSED_CPU`` not 0).

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
        fused = fused_cpu.use_fused_cpu(*_kernel_inputs(img, txt), context=use_context, smooth=lam)

    # ---- Step 1: all affinities of the chunk in one GEMM, one exp for both softmaxes.
    aff = (img.proj.reshape(nc * k, d) @ txt.proj.reshape(mc * n, d).T).view(nc, k, mc, n)
    if fused:
        s_l2l, s_g2l, s_g2g = fused_cpu.score_pairs(**kernel_arguments(img, txt, aff, p))
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


def checkpoint_by_default(
    device: torch.device, need_bytes: int, free_bytes: int | None = None
) -> bool:
    """Whether scoring with gradients recomputes each chunk in the backward pass by default.

    Without recomputation the torch path keeps about ``3 (k + n) d`` floats per pair for the
    backward pass (the fusion GEMM's output and its GLU) — ``need_bytes`` for the whole call, about
    10 GB for a Flickr30K batch of 128 at d = 1024 in float32. On a GPU with at least twice that
    free (``free_bytes``, default ``torch.cuda.mem_get_info``), keeping it saves the second forward
    pass (about a third of a training step); elsewhere, and on the CPU, memory wins.
    """
    if device.type != "cuda":
        return True
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return 2 * need_bytes > free_bytes


def score_all_pairs(
    v: torch.Tensor,
    v_mask: torch.Tensor,
    t: torch.Tensor,
    t_mask: torch.Tensor,
    p: AlignmentParams,
    *,
    use_l2l: bool = True,
    use_context: bool = True,
    use_g2g: bool = True,
    img_chunk: int | None = None,
    txt_chunk: int | None = None,
    grad_checkpoint: bool | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 for all ``N x M`` pairs, in chunks of ``img_chunk x txt_chunk`` pairs.

    Args:
        v: ``(N, k, d)`` region embeddings; v_mask: ``(N, k)`` bool (>= 1 True per row).
        t: ``(M, n, d)`` word embeddings; t_mask: ``(M, n)`` bool (>= 1 True per row).
        p: the alignment parameters; use_l2l / use_context / use_g2g: as :func:`score_chunk`.
        img_chunk, txt_chunk: chunk sizes (default 16 x 32 on the CPU, 64 x 32 with the fused
            CPU kernel, 64 x 128 on an accelerator).
        grad_checkpoint: recompute each chunk in the backward pass, which bounds the memory of
            training to one chunk's intermediates at the cost of a second forward pass (default:
            when gradients are enabled, except on a GPU with room for every chunk's
            intermediates, see :func:`checkpoint_by_default`).
        timings: receives the seconds spent preparing images / captions (``"prepare"``) and
            scoring pairs (``"pairs"``), added to what it holds.

    Captions are sorted by length so a caption block is padded only to its longest (words past a
    block's last real word are cut), and walked in the outer loop so each block is prepared once.
    Whether the fused CPU kernel runs is decided once, by
    :func:`shan.model.fused_cpu.use_fused_cpu`.

    Returns:
        ``(s_l2l, s_g2l, s_g2g)``, each ``(N, M)`` (a step not computed: zeros).
    """
    v_mask = v_mask.to(torch.bool)
    t_mask = t_mask.to(torch.bool)
    if v.shape[0] and not bool(v_mask.any(1).all()):
        raise ValueError("every image needs at least one real region (mask row all False)")
    # position after the last real word of each caption
    lengths = (t_mask * torch.arange(1, t_mask.shape[1] + 1, device=t_mask.device)).max(1).values
    if t.shape[0] and int(lengths.min()) < 1:
        raise ValueError("every caption needs at least one real word (mask row all False)")
    clock = time.perf_counter
    t_begin = t_start = clock()
    pi = prepare_images(v.float(), v_mask, p)
    t_prep = clock() - t_start
    t = t.float()
    fused = fused_cpu.use_fused_cpu(
        pi.v, pi.proj, pi.fuse_bias, pi.att_src, t, context=use_context, smooth=p.smooth
    )
    on_cpu = v.device.type == "cpu"
    # The fused kernel holds only the chunk's affinities (not (k + n) x 3d per pair), so its chunks
    # can be 4x taller: fewer torch GEMM / thread-pool hand-overs per pair (each leaves an OpenMP
    # thread spinning on a core the kernel's threads need).
    img_chunk = (16 if on_cpu and not fused else 64) if img_chunk is None else int(img_chunk)
    txt_chunk = (32 if on_cpu else 128) if txt_chunk is None else int(txt_chunk)
    if img_chunk < 1 or txt_chunk < 1:
        raise ValueError("img_chunk and txt_chunk must be >= 1")
    if grad_checkpoint is None:
        rows = v.shape[1] + t.shape[1]
        grad_checkpoint = torch.is_grad_enabled() and checkpoint_by_default(
            v.device, v.shape[0] * t.shape[0] * rows * 3 * v.shape[2] * 4
        )
    n_img, n_txt = len(pi), t.shape[0]
    workspace: dict = {}

    def run(ci: PreparedImages, ct: PreparedCaptions) -> tuple[torch.Tensor, ...]:
        return score_chunk(ci, ct, p, use_l2l, use_context, use_g2g, workspace, fused=fused)

    order = torch.argsort(lengths, descending=True, stable=True)
    blocks: list[list[torch.Tensor]] = [[], [], []]
    for t0 in range(0, n_txt, txt_chunk):
        index = order[t0 : t0 + txt_chunk]
        n_blk = int(lengths[index[0]])
        t_start = clock()
        ct = prepare_captions(t[index, :n_blk], t_mask[index, :n_blk], p)
        t_prep += clock() - t_start
        row: list[list[torch.Tensor]] = [[], [], []]
        for i0 in range(0, n_img, img_chunk):
            ci = pi[i0 : i0 + img_chunk]
            if grad_checkpoint:
                res = checkpoint(run, ci, ct, use_reentrant=False)
            else:
                res = run(ci, ct)
            for acc, r in zip(row, res, strict=True):
                acc.append(r)
        for acc, r in zip(blocks, row, strict=True):
            acc.append(torch.cat(r, 0))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n_txt, device=order.device)
    out = [torch.cat(acc, 1).index_select(1, inverse) for acc in blocks]
    if timings is not None:
        timings["prepare"] = timings.get("prepare", 0.0) + t_prep
        timings["pairs"] = timings.get("pairs", 0.0) + clock() - t_begin - t_prep
    return out[0], out[1], out[2]


__all__ = [
    "PreparedImages",
    "PreparedCaptions",
    "prepare_images",
    "prepare_captions",
    "score_chunk",
    "score_all_pairs",
    "kernel_arguments",
    "checkpoint_by_default",
]
