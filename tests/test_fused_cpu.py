"""The fused CPU kernel and its loader: same scores as the torch path, one checked entry point,
the C signature declared once, the build cache, the one predicate, and no fast-math side effects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shan.errors import ShanError
from shan.model import fused_cpu
from shan.model.fused_cpu import FusedKernelArgumentError, FusedKernelError
from shan.model.scoring import kernel_arguments, prepare_captions, prepare_images, score_chunk
from tests.test_alignment import make_params, unit

D = 32
needs_kernel = pytest.mark.skipif(
    not fused_cpu.is_available(), reason="no C compiler for the fused CPU kernel"
)


def chunk(seed: int = 0, nc: int = 3, mc: int = 4, k: int = 5, n: int = 7, d: int = D):
    """Prepared images / captions, their affinities and the parameters of a small chunk."""
    p = make_params(seed, d=d)
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(nc, k, d, generator=g), dim=-1)
    t = F.normalize(torch.randn(mc, n, d, generator=g), dim=-1)
    vm = torch.rand(nc, k, generator=g) > 0.3
    tm = torch.rand(mc, n, generator=g) > 0.3
    vm[:, 0] = True
    tm[:, 0] = True
    with torch.no_grad():
        pi, pc = prepare_images(v, vm, p), prepare_captions(t, tm, p)
        aff = torch.einsum("ikd,mjd->ikmj", pi.proj, pc.proj).contiguous()
    return pi, pc, aff, p


# ----------------------------------------------------------------------------- same scores


@needs_kernel
@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    d=st.sampled_from([32, 64, 80, 128]),
    smooth=st.sampled_from([9.0, 20.0, 40.0]),
)
def test_fused_cpu_kernel_equals_torch_path(seed: int, d: int, smooth: float) -> None:
    """The fused C kernel and the pure-torch chunk path agree (vector and scalar code paths)."""
    p = make_params(seed, smooth=smooth, mu=0.4, d=d)
    with torch.no_grad():
        v = F.normalize(torch.randn(3, 6, d), dim=-1)
        t = F.normalize(torch.randn(5, 9, d), dim=-1)
        vm = torch.rand(3, 6) > 0.3
        tm = torch.rand(5, 9) > 0.3
        vm[:, 2] = True
        tm[:, 4] = True
        pi, pc = prepare_images(v, vm, p), prepare_captions(t, tm, p)
        fast = score_chunk(pi, pc, p, fused=True)
        slow = score_chunk(pi, pc, p, fused=False)
    for a, b in zip(fast, slow, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@needs_kernel
def test_fused_kernel_row_layout_of_att_src() -> None:
    """On the CPU ``att_src`` rows are 2d + 16 floats apart (L1-set aliasing fix); the kernel
    gives the same scores from slices, caption selections and plain contiguous tensors."""
    torch.manual_seed(3)
    p = make_params(3)
    v, t = unit(6, 5, D), unit(7, 8, D)
    vm, tm = torch.rand(6, 5) > 0.3, torch.rand(7, 8) > 0.3
    vm[:, 0] = True
    tm[:, 1] = True
    with torch.no_grad():
        pi, pc = prepare_images(v, vm, p), prepare_captions(t, tm, p)
        assert pi.att_src.shape == (6, 5, 2 * D)
        assert pi.att_src.stride() == (5 * (2 * D + 16), 2 * D + 16, 1)
        sub_i = pi[2:5]
        sub_c = pc.select(torch.tensor([6, 0, 3]), 8)
        assert sub_c.att_src.stride()[1:] == (2 * D + 16, 1)
        ref = score_chunk(sub_i, sub_c, p, fused=False)
        fast = score_chunk(sub_i, sub_c, p, fused=True)
        sub_i.att_src = sub_i.att_src.contiguous()  # plain layout: the kernel pads a copy
        sub_c.att_src = sub_c.att_src.contiguous()
        plain = score_chunk(sub_i, sub_c, p, fused=True)
    for a, b, c in zip(ref, fast, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        assert torch.equal(b, c)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_thread_split_gives_the_same_scores(threads: int) -> None:
    """The pairs of a block split over threads: any split covers every pair exactly once."""
    pi, pc, aff, p = chunk(seed=4, nc=3, mc=5)
    with torch.no_grad():
        one = fused_cpu.score_pairs(**kernel_arguments(pi, pc, aff, p), threads=1)
        many = fused_cpu.score_pairs(**kernel_arguments(pi, pc, aff, p), threads=threads)
    for a, b in zip(one, many, strict=True):
        assert a.shape == (3, 5)
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- checked entry point


def _bad_arguments():
    """(description, keyword changes) that the C code cannot take."""
    return [
        ("float64 regions", lambda a: {"iv": a["iv"].double()}),
        ("wrong shape", lambda a: {"tnorm": a["tnorm"][:, :-1].contiguous()}),
        ("non-contiguous", lambda a: {"ibias": a["ibias"].mT.contiguous().mT}),
        ("transposed mask", lambda a: {"imask": a["imask"].t().contiguous().t()}),
        ("plain src rows", lambda a: {"isrc": a["isrc"].contiguous()}),
        ("meta device", lambda a: {"aff": a["aff"].to("meta")}),
        ("not a tensor", lambda a: {"wi": a["wi"].tolist()}),
        ("empty image", lambda a: {"icnt": torch.zeros_like(a["icnt"])}),
        ("lambda above 40", lambda a: {"lam": 41.0}),
        ("affinities of other captions", lambda a: {"aff": a["aff"][:, :, :-1].contiguous()}),
        ("2-d regions", lambda a: {"iv": a["iv"][0]}),
    ]


@needs_kernel
@pytest.mark.parametrize("case", range(len(_bad_arguments())))
def test_bad_arguments_raise_instead_of_crashing(case: int) -> None:
    what, change = _bad_arguments()[case]
    pi, pc, aff, p = chunk(seed=1)
    args = kernel_arguments(pi, pc, aff, p)
    args.update(change(args))
    with torch.no_grad(), pytest.raises(FusedKernelArgumentError, match="fused SHAN kernel"):
        fused_cpu.score_pairs(**args)
    assert issubclass(FusedKernelArgumentError, ShanError), what


@needs_kernel
def test_tensors_that_require_grad_are_refused() -> None:
    """The kernel has no backward: called with gradients on, it refuses rather than detach."""
    pi, pc, aff, p = chunk(seed=2)
    args = kernel_arguments(pi, pc, aff, p)
    args["wi"] = args["wi"].clone().requires_grad_(True)
    with pytest.raises(FusedKernelArgumentError, match="requires grad"):
        fused_cpu.score_pairs(**args)


def test_unavailable_kernel_is_a_library_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pi, pc, aff, p = chunk(seed=2)
    monkeypatch.setenv("SHAN_FUSED_CPU", "0")
    with torch.no_grad(), pytest.raises(FusedKernelError, match="unavailable"):
        score_chunk(pi, pc, p, fused=True)


def _c_prototype() -> list[tuple[str, str]]:
    """(name, kind) of shan_pairs' parameters, read from the C source."""
    source = fused_cpu.source_text()
    match = re.search(r"\bint\s+shan_pairs\s*\(([^)]*)\)\s*\{", source)
    assert match, "shan_pairs not found in the C source"
    params = []
    for part in match.group(1).split(","):
        words = " ".join(part.split())
        name = re.findall(r"\w+", words)[-1]
        if "*" in words:
            kind = "const float *" if words.startswith("const float") else "float *"
        else:
            kind = words.rsplit(" ", 1)[0]
        params.append((name, kind))
    return params


def test_declared_signature_matches_the_c_source() -> None:
    """SIGNATURE (the one Python declaration) names and types every C parameter, in order:
    scalars by type, inputs as ``const float *``, outputs as ``float *``."""
    declared = []
    for name, kind in fused_cpu.SIGNATURE:
        if isinstance(kind, str):
            declared.append((name, kind))
        else:
            declared.append((name, "float *" if kind[0] == "out" else "const float *"))
    assert _c_prototype() == declared


# ----------------------------------------------------------------------------- the one predicate


@needs_kernel
def test_use_fused_cpu_decides_every_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2, 3)
    with torch.no_grad():
        assert fused_cpu.use_fused_cpu(x, x, context=True, smooth=9.0)
        assert not fused_cpu.use_fused_cpu(x, x.double(), context=True, smooth=9.0)
        assert not fused_cpu.use_fused_cpu(x, x.half(), context=True, smooth=9.0)
        assert not fused_cpu.use_fused_cpu(x.to("meta"), context=True, smooth=9.0)
        assert not fused_cpu.use_fused_cpu(x, context=False, smooth=9.0)
        assert not fused_cpu.use_fused_cpu(x, context=True, smooth=40.5)
        monkeypatch.setenv("SHAN_FUSED_CPU", "0")
        assert not fused_cpu.use_fused_cpu(x, context=True, smooth=9.0)
        assert not fused_cpu.is_available()
    monkeypatch.delenv("SHAN_FUSED_CPU")
    assert not fused_cpu.use_fused_cpu(x, context=True, smooth=9.0)  # gradients on


@needs_kernel
def test_score_chunk_default_follows_the_predicate(monkeypatch: pytest.MonkeyPatch) -> None:
    """score_chunk runs the kernel exactly when use_fused_cpu says so (float64 stays in torch)."""
    calls = []
    real = fused_cpu.score_pairs
    monkeypatch.setattr(fused_cpu, "score_pairs", lambda **kw: calls.append(1) or real(**kw))
    pi, pc, _, p = chunk(seed=5)
    with torch.no_grad():
        score_chunk(pi, pc, p)
        assert len(calls) == 1
        p64 = make_params(5)
        for mod in (p64.affinity, p64.fuse_img, p64.fuse_txt, p64.pool_img, p64.pool_txt):
            mod.double()
        v64, t64 = pi.v.double(), pc.t.double()
        score_chunk(
            prepare_images(v64, pi.mask > 0, p64), prepare_captions(t64, pc.mask > 0, p64), p64
        )
        assert len(calls) == 1
    score_chunk(pi, pc, p)  # gradients on
    assert len(calls) == 1


# ----------------------------------------------------------------------------- build and cache


def test_cache_key_changes_with_source_flags_compiler_and_cpu() -> None:
    base = ("src", "gcc", ("-O3",), "gcc 12", "cpu A")
    key = fused_cpu.cache_key(*base)
    assert len(key) == 16 and key == fused_cpu.cache_key(*base)
    for i, other in enumerate(["src2", "clang", ("-O2",), "gcc 13", "cpu B"]):
        changed = list(base)
        changed[i] = other
        assert fused_cpu.cache_key(*changed) != key, i


@needs_kernel
def test_build_lands_in_the_cache_and_is_reused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fused_cpu, "_state", {})
    assert fused_cpu.is_available()
    built = sorted(tmp_path.glob("shan_fused_*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(fused_cpu, "_state", {})
    assert fused_cpu.is_available()  # loaded from the cache, not rebuilt
    assert sorted(tmp_path.glob("shan_fused_*.so")) == built
    assert built[0].stat().st_mtime_ns == stamp


def test_no_compiler_means_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_cpu, "_state", {})
    monkeypatch.setattr(fused_cpu, "_compiler", lambda: None)
    assert not fused_cpu.is_available()
    pi, pc, aff, p = chunk(seed=6)
    with torch.no_grad():
        assert not fused_cpu.use_fused_cpu(pi.v, context=True, smooth=9.0)
        scores = score_chunk(pi, pc, p)
    assert all(torch.isfinite(s).all() for s in scores)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_source_compiles_cleanly_with_warnings_on(tmp_path) -> None:
    """The kernel is real C: -Wall -Wextra find nothing (native and portable flag sets)."""
    src = tmp_path / "k.c"
    src.write_text(fused_cpu.source_text())
    for flags in (fused_cpu.FLAG_SETS[0], fused_cpu.FLAG_SETS[-1]):
        warn = ["-Wall", "-Wextra", "-Wno-psabi", "-Werror", "-fsyntax-only"]
        done = subprocess.run(["gcc", *flags, *warn, str(src)], capture_output=True, text=True)
        assert done.returncode == 0, (flags, done.stderr)


# ----------------------------------------------------------------------------- process side effects


def test_no_flag_set_turns_on_fast_math() -> None:
    """-ffast-math, -Ofast and -funsafe-math-optimizations make GCC < 13 link crtfastmath.o."""
    for flags in fused_cpu.FLAG_SETS:
        assert not {"-ffast-math", "-Ofast", "-funsafe-math-optimizations"} & set(flags), flags


@needs_kernel
def test_loading_the_kernel_keeps_denormals() -> None:
    """The kernel is built without -ffast-math: with GCC < 13 that flag links crtfastmath.o, which
    switches the whole process to flush-to-zero when the library loads (1e-310 * 1.0 == 0.0)."""
    assert fused_cpu.is_available()  # loaded in this process (and this thread)
    tiny = torch.tensor(1e-310, dtype=torch.float64)
    assert (tiny * 1.0).item() != 0.0
    assert float(np.float64(1e-310) * np.float64(1.0)) != 0.0
    one = 1.0
    assert 1e-310 * one != 0.0
    assert torch.finfo(torch.float32).tiny / 2 * torch.ones(1) != 0  # float32 denormal too


@needs_kernel
def test_loading_the_kernel_keeps_denormals_in_a_fresh_process() -> None:
    """Same check in a new interpreter whose first act is loading the (cached) kernel."""
    code = (
        "from shan.model import fused_cpu; assert fused_cpu.is_available();"
        "import numpy as np, torch; one = 1.0;"
        "print(1e-310 * one, float(np.float64(1e-310) * one),"
        " (torch.tensor(1e-310, dtype=torch.float64) * one).item())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # compared as text: with denormals-are-zero on in *this* process, 0.0 == 1e-310 holds
    assert done.stdout.split() == ["1e-310"] * 3


@pytest.mark.slow
def test_kernel_source_ships_in_the_wheel(tmp_path) -> None:
    """pyproject's package data puts kernels/fused_cpu.c into a built wheel (the loader reads it
    from the installed package)."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tree = tmp_path / "src"
    shutil.copytree(root / "shan", tree / "shan", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("shan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "shan/model/kernels/fused_cpu.c" in names
    assert "shan/model/fused_cpu.py" in names
