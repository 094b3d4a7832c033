"""All-pairs scoring: chunking, ablation switches, step weights, agreement with the reference."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shan.config import ModelConfig
from shan.model import SHAN, ImageEmbeddings, StepScores, TextEmbeddings, fused_cpu
from shan.model.alignment import align_pair

D = 32


def make_model(**kw) -> SHAN:
    cfg = ModelConfig(img_dim=12, embed_dim=D, vocab_size=20, word_dim=8, **kw)
    torch.manual_seed(0)
    model = SHAN(cfg)
    with torch.no_grad():
        for mod in (model.affinity, model.fuse_img, model.fuse_txt, model.pool_img, model.pool_txt):
            for w in mod.parameters():
                w.add_(0.3 * torch.randn_like(w))
    return model.eval()


def embeddings(n_img=5, n_cap=7, k=5, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(n_img, k, D, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(n_cap, n, D, generator=g), dim=-1)
    vm = torch.rand(n_img, k, generator=g) > 0.3
    tm = torch.arange(n)[None, :] < torch.randint(1, n + 1, (n_cap,), generator=g)[:, None]
    vm[:, 0] = True
    return ImageEmbeddings(v, vm), TextEmbeddings(t, tm)


@settings(max_examples=10, deadline=None)
@given(img_chunk=st.integers(1, 6), txt_chunk=st.integers(1, 8))
def test_chunked_equals_unchunked(img_chunk: int, txt_chunk: int) -> None:
    model = make_model()
    img, txt = embeddings()
    with torch.no_grad():
        full = model.score(img, txt, img_chunk=100, txt_chunk=100)
        part = model.score(img, txt, img_chunk=img_chunk, txt_chunk=txt_chunk)
    for a, b in zip(full, part, strict=True):
        assert a.shape == (5, 7)
        assert torch.allclose(a, b, atol=1e-5)


def test_score_equals_reference_per_pair() -> None:
    model = make_model(mu=0.7, step_weights=(0.5, 2.0, 1.5))
    img, txt = embeddings(seed=1)
    with torch.no_grad():
        s = model.score(img, txt, img_chunk=2, txt_chunk=3)
        for i in range(5):
            for j in range(7):
                r = align_pair(img.regions[i], txt.words[j], img.mask[i], txt.mask[j], model.params)
                assert s.l2l[i, j] == pytest.approx(float(r["s_l2l"]), abs=1e-5)
                assert s.g2l[i, j] == pytest.approx(float(r["s_g2l"]), abs=1e-5)
                assert s.g2g[i, j] == pytest.approx(float(r["s_g2g"]), abs=1e-5)
    expected = 0.5 * s.l2l + 2.0 * s.g2l + 1.5 * s.g2g
    assert torch.allclose(s.total, expected, atol=1e-6)


@pytest.mark.parametrize(
    "switches",
    [
        dict(use_l2l=False),
        dict(use_g2l=False),
        dict(use_g2g=False),
        dict(use_g2l=False, use_g2g=False),
        dict(use_l2l=False, use_g2g=False),
    ],
)
def test_ablation_switches_zero_the_right_parts(switches: dict) -> None:
    full_model = make_model()
    img, txt = embeddings(seed=2)
    with torch.no_grad():
        full = full_model.score(img, txt)
        model = make_model(**switches)
        s = model.score(img, txt)
    for step in ("l2l", "g2l", "g2g"):
        got = getattr(s, step)
        if switches.get(f"use_{step}", True):
            # an enabled step is unaffected by switching others off (G2L/G2G still use step 1)
            assert torch.allclose(got, getattr(full, step), atol=1e-6), step
            assert got.abs().sum() > 0
        else:
            assert (got == 0).all(), step
    assert torch.allclose(s.total, s.l2l + s.g2l + s.g2g, atol=1e-6)


def test_all_steps_off_is_an_error() -> None:
    model = make_model(use_l2l=False, use_g2l=False, use_g2g=False)
    img, txt = embeddings()
    with pytest.raises(ValueError, match="switched off"):
        model.score(img, txt)


def test_score_shapes_and_types() -> None:
    model = make_model()
    img, txt = embeddings(n_img=2, n_cap=3, k=4, n=6)
    with torch.no_grad():
        s = model.score(img, txt)
    assert isinstance(s, StepScores)
    assert all(x.shape == (2, 3) and x.dtype == torch.float32 for x in s)
    with pytest.raises(ValueError, match="expected"):
        model.score(img, TextEmbeddings(txt.words[..., :5], txt.mask))


def test_images_with_different_region_counts_in_one_batch() -> None:
    """An image padded from 3 to 5 regions scores like the same image with exactly 3."""
    model = make_model()
    img, txt = embeddings(n_img=2, k=5, seed=4)
    vm = img.mask.clone()
    vm[1] = torch.tensor([True, True, True, False, False])
    with torch.no_grad():
        padded = model.score(ImageEmbeddings(img.regions, vm), txt)
        alone = model.score(ImageEmbeddings(img.regions[1:, :3], vm[1:, :3]), txt)
    for a, b in zip(padded, alone, strict=True):
        assert torch.allclose(a[1:], b, atol=1e-5)


def test_step_weights_config_roundtrip() -> None:
    model = make_model(step_weights=(1.0, 0.0, 2.0))
    assert dataclasses.asdict(model.cfg)["step_weights"] == (1.0, 0.0, 2.0)
    img, txt = embeddings()
    with torch.no_grad():
        s = model.score(img, txt)
    assert torch.allclose(s.total, s.l2l + 2 * s.g2g, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_gradients_finite_with_padding_under_anomaly_detection() -> None:
    """Regression: sqrt of an exactly-zero squared norm (padded word) gave NaN gradients on CUDA."""
    model = make_model()
    img, txt = embeddings(seed=5)
    v = img.regions.clone().requires_grad_(True)
    t = txt.words.clone().requires_grad_(True)
    with torch.autograd.detect_anomaly():
        s = model.score(ImageEmbeddings(v, img.mask), TextEmbeddings(t, txt.mask))
        (s.total * torch.randn_like(s.total)).sum().backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()
    assert (v.grad[~img.mask] == 0).all() and (t.grad[~txt.mask] == 0).all()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_torch_fallback_when_fused_kernel_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHAN_FUSED_CPU=0 (or no C compiler) selects the pure-torch path, with the same scores."""
    model = make_model()
    img, txt = embeddings(seed=6)
    with torch.no_grad():
        default = model.score(img, txt)
        monkeypatch.setenv("SHAN_FUSED_CPU", "0")
        assert not fused_cpu.is_available()
        fallback = model.score(img, txt)
    for a, b in zip(default, fallback, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_names_that_moved_out_of_alignment_still_import() -> None:
    """The batched path and the kernel switch moved to shan.model.scoring / fused_cpu; the old
    import path ``shan.model.alignment`` still gives the same objects."""
    import shan.model.alignment as alignment
    from shan.model import scoring

    for name in ("PreparedImages", "PreparedCaptions", "prepare_images", "prepare_captions"):
        assert getattr(alignment, name) is getattr(scoring, name)
    from shan.model.alignment import fused_cpu_available, score_chunk

    assert score_chunk is scoring.score_chunk and fused_cpu_available is fused_cpu.is_available
    with pytest.raises(AttributeError):
        alignment.no_such_name  # noqa: B018
