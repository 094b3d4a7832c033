"""SHAN's three steps (the reference): attention normalisation, masking, and the batched path
== the reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shan.model.alignment import (
    AlignmentParams,
    ContextPooling,
    FragmentAffinity,
    GatedFusion,
    align_pair,
    masked_softmax,
)
from shan.model.scoring import prepare_captions, prepare_images, score_chunk

D = 32


def make_params(seed: int = 0, smooth: float = 9.0, mu: float = 0.5, d: int = D) -> AlignmentParams:
    torch.manual_seed(seed)
    p = AlignmentParams(
        FragmentAffinity(d),
        GatedFusion(d),
        GatedFusion(d),
        ContextPooling(d),
        ContextPooling(d),
        smooth=smooth,
        mu=mu,
    )
    with torch.no_grad():  # move away from the identity / zero initialisation
        for mod in (p.affinity, p.fuse_img, p.fuse_txt, p.pool_img, p.pool_txt):
            for w in mod.parameters():
                w.add_(0.3 * torch.randn_like(w))
    return p


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def test_masked_softmax_ignores_masked_positions() -> None:
    x = torch.tensor([[1.0, 2.0, 1e6], [0.0, -3.0, 5.0]])
    m = torch.tensor([[True, True, False], [True, False, True]])
    p = masked_softmax(x, m, dim=1)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert p[0, 2] == 0 and p[1, 1] == 0
    assert torch.allclose(p[0, :2], torch.softmax(torch.tensor([1.0, 2.0]), 0))


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 6),
    n=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_attention_rows_sum_to_one_over_real_fragments(k: int, n: int, seed: int, data) -> None:
    p = make_params(seed % 5)
    torch.manual_seed(seed)
    v_mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    t_mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    v_mask[data.draw(st.integers(0, k - 1))] = True
    t_mask[data.draw(st.integers(0, n - 1))] = True
    with torch.no_grad():
        r = align_pair(unit(k, D), unit(n, D), v_mask, t_mask, p)
    # alpha: each real region's row sums to 1 over real words; beta: each real word's column
    assert torch.allclose(r["alpha"][v_mask].sum(1), torch.ones(int(v_mask.sum())), atol=1e-5)
    assert torch.allclose(r["beta"][:, t_mask].sum(0), torch.ones(int(t_mask.sum())), atol=1e-5)
    assert (r["alpha"][:, ~t_mask] == 0).all() and (r["beta"][~v_mask] == 0).all()
    for name, m in (
        ("img_pool", v_mask),
        ("delta", v_mask),
        ("txt_pool", t_mask),
        ("gamma", t_mask),
    ):
        assert torch.allclose(r[name].sum(), torch.tensor(1.0), atol=1e-5), name
        assert (r[name][~m] == 0).all(), name
    for name in ("s_l2l", "s_g2l", "s_g2g"):
        assert -1.0 - 1e-5 <= float(r[name]) <= 1.0 + 1e-5


def test_reference_l2l_matches_direct_formulas() -> None:
    """S_L2L written out by hand (no masks) equals the reference step function."""
    p = make_params(1)
    v, t = unit(4, D), unit(3, D)
    with torch.no_grad():
        r = align_pair(v, t, torch.ones(4, dtype=torch.bool), torch.ones(3, dtype=torch.bool), p)
        a = F.normalize(p.affinity.img(v), dim=-1) @ F.normalize(p.affinity.txt(t), dim=-1).T
        alpha = torch.softmax(9 * a, 1)
        beta = torch.softmax(9 * a, 0)
        rv = F.cosine_similarity(v, alpha @ t, dim=-1)
        rt = F.cosine_similarity(t, beta.T @ v, dim=-1)
    assert torch.allclose(r["s_l2l"], 0.5 * rv.mean() + 0.5 * rt.mean(), atol=1e-6)


def _batched_vs_pairs(p, v, vm, t, tm, atol=1e-5):
    with torch.no_grad():
        l2l, g2l, g2g = score_chunk(prepare_images(v, vm, p), prepare_captions(t, tm, p), p)
        for i in range(v.shape[0]):
            for j in range(t.shape[0]):
                r = align_pair(v[i], t[j], vm[i], tm[j], p)
                for got, name in ((l2l, "s_l2l"), (g2l, "s_g2l"), (g2g, "s_g2g")):
                    assert abs(float(got[i, j]) - float(r[name])) < atol, (name, i, j)
    return l2l, g2l, g2g


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), smooth=st.sampled_from([9.0, 4.0, 60.0]))
def test_batched_equals_per_pair(seed: int, smooth: float) -> None:
    """The fast chunk kernel equals the readable per-pair reference (random masks, any lambda)."""
    p = make_params(seed % 3, smooth=smooth, mu=0.3)
    g = torch.Generator().manual_seed(seed)
    nimg, ncap, k, n = 3, 4, 5, 7
    v = F.normalize(torch.randn(nimg, k, D, generator=g), dim=-1)
    t = F.normalize(torch.randn(ncap, n, D, generator=g), dim=-1)
    vm = torch.rand(nimg, k, generator=g) > 0.4
    tm = torch.rand(ncap, n, generator=g) > 0.4
    vm[:, 0] = True
    tm[:, 0] = True
    _batched_vs_pairs(p, v, vm, t, tm)


def test_padding_with_garbage_never_changes_scores() -> None:
    p = make_params(2)
    v, t = unit(3, 5, D), unit(4, 7, D)
    vm = torch.ones(3, 5, dtype=torch.bool)
    tm = torch.ones(4, 7, dtype=torch.bool)
    vm[1, 3:] = False
    tm[2, 4:] = False
    v = v.masked_fill(~vm[..., None], 0.0)
    t = t.masked_fill(~tm[..., None], 0.0)
    base = _batched_vs_pairs(p, v, vm, t, tm)
    # append 3 pad regions and 4 pad words holding garbage (huge, inf) and overwrite old padding
    v2 = torch.cat([v, 1e3 * torch.randn(3, 3, D)], 1)
    t2 = torch.cat([t, 1e3 * torch.randn(4, 4, D)], 1)
    v2[1, 3:5] = float("inf")
    t2[2, 4:7] = -7.0
    vm2 = torch.cat([vm, torch.zeros(3, 3, dtype=torch.bool)], 1)
    tm2 = torch.cat([tm, torch.zeros(4, 4, dtype=torch.bool)], 1)
    padded = _batched_vs_pairs(p, v2, vm2, t2, tm2)
    for a, b in zip(base, padded, strict=True):
        assert torch.isfinite(b).all()
        assert torch.allclose(a, b, atol=1e-6)
