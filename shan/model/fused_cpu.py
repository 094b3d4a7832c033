"""The fused CPU kernel of SHAN's all-pairs scoring: build, load, check arguments, run.

The kernel (``shan/model/kernels/fused_cpu.c``, shipped as package data) computes steps 1-3 of a
block of image-caption pairs from their step-1 affinities, one pair at a time with its data in
cache. It is plain C (no PyTorch headers): built once with the system C compiler, cached under
``~/.cache/shan`` (``SHAN_CACHE_DIR`` overrides) keyed by source, flags, compiler and CPU, and
loaded with :mod:`ctypes`. This module is the only place that knows about it:

* :func:`is_available` — whether the kernel is built and loaded (builds it on first call);
* :func:`use_fused_cpu` — THE predicate that decides whether a scoring call runs the kernel
  (every caller asks it; ``SHAN_FUSED_CPU=0`` turns the kernel off);
* :func:`score_pairs` — the one typed entry point: checks every tensor (dtype, device, shape,
  layout) against the C signature declared once in :data:`SIGNATURE` and raises
  :class:`FusedKernelArgumentError` instead of letting a mismatch crash the process.

Without a C compiler the torch path runs instead (same scores, several times slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from shan.errors import ShanError

ENV_SWITCH = "SHAN_FUSED_CPU"  # "0" turns the kernel off
ENV_CACHE = "SHAN_CACHE_DIR"  # build cache (default ~/.cache/shan)
MAX_SMOOTH = 40.0  # the kernel's exp(lam (A - 1)) stays > 0 in float32 only for lam <= 40
SRC_PAD = 16  # floats (one cache line) added to each [y ; -W_att y] row, see src_stride()

# Flag sets tried in order (the later ones drop what an older compiler or another CPU refuses).
# Never -ffast-math / -Ofast / -funsafe-math-optimizations: GCC < 13 then links crtfastmath.o,
# whose constructor switches the whole process to flush-to-zero and denormals-are-zero (after the
# library loads, 1e-310 * 1.0 == 0.0 in numpy, torch and plain Python). The kernel needs only: no
# errno (sqrtf becomes one instruction), no trapping, and FMA contraction.
# Measured on 2 cores (CPU time, alternating builds): -fassociative-math -fno-signed-zeros and
# -freciprocal-math on top change the pair time by < 3 %, within the noise, so they stay off.
_SAFE_MATH = ["-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast"]
FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native", "-mprefer-vector-width=512", *_SAFE_MATH),
    ("-O3", "-march=native", *_SAFE_MATH),
    ("-O3", *_SAFE_MATH),
)
_LINK = ("-shared", "-fPIC")

# shan_pairs' C signature, declared once: (name, kind). Kinds: "int" / "long" / "float" scalars,
# or a tensor with its shape in the dimension names nc, mc (images / captions of the block),
# k, n (regions / words), d (embedding size), d2 (= 2d); "src" tensors have rows ``ss`` floats
# apart (the last dimension contiguous); "out" marks the outputs.
SIGNATURE: tuple[tuple[str, object], ...] = (
    ("nc", "int"),
    ("mc", "int"),
    ("k", "int"),
    ("n", "int"),
    ("d", "int"),
    ("p0", "long"),
    ("p1", "long"),
    ("ss", "long"),
    ("aff", ("nc", "k", "mc", "n")),
    ("iv", ("nc", "k", "d")),
    ("ibias", ("nc", "k", "d2")),
    ("isrc", ("src", "nc", "k", "d2")),
    ("imask", ("nc", "k")),
    ("icnt", ("nc",)),
    ("inorm", ("nc", "k")),
    ("tt", ("mc", "n", "d")),
    ("tbias", ("mc", "n", "d2")),
    ("tsrc", ("src", "mc", "n", "d2")),
    ("tmask", ("mc", "n")),
    ("tcnt", ("mc",)),
    ("tnorm", ("mc", "n")),
    ("wi", ("d",)),
    ("wt", ("d",)),
    ("mu", "float"),
    ("lam", "float"),
    ("l2l", ("out", "nc", "mc")),
    ("g2l", ("out", "nc", "mc")),
    ("g2g", ("out", "nc", "mc")),
)
_CTYPES = {"int": ctypes.c_int, "long": ctypes.c_long, "float": ctypes.c_float}


class FusedKernelError(ShanError, RuntimeError):
    """The fused CPU kernel is unavailable, or failed (out of memory for its scratch buffer)."""


class FusedKernelArgumentError(FusedKernelError, ValueError):
    """A tensor passed to the fused CPU kernel has the wrong dtype, device, shape or layout."""


_lock = threading.Lock()
_state: dict = {}


# ----------------------------------------------------------------------------- build and load


def source_text() -> str:
    """The kernel's C source (package data ``shan/model/kernels/fused_cpu.c``)."""
    return (importlib.resources.files("shan.model") / "kernels" / "fused_cpu.c").read_text()


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = next((ln for ln in lines if ln.startswith("flags")), "")
    model = next((ln for ln in lines if ln.startswith("model name")), "")
    return f"{platform.machine()}|{platform.processor()}|{model}|{flags}"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def _compiler_version(cc: str) -> str:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, timeout=30, text=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.splitlines()[0] if done.stdout else ""


def cache_dir() -> Path:
    """Where built kernels are kept: ``$SHAN_CACHE_DIR`` or ``~/.cache/shan``."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "shan")


def cache_key(source: str, cc: str, flags: tuple[str, ...], compiler: str, cpu: str) -> str:
    """16 hex digits naming a build: a change of source, flags, compiler or CPU rebuilds."""
    text = "\n".join([source, cc, " ".join(flags), compiler, cpu])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(cc: str, flags: tuple[str, ...], source: str, target: Path) -> None:
    """Compile ``source`` into ``target`` (written atomically: concurrent builds are safe)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "fused_cpu.c"
        c_file.write_text(source)
        out = Path(tmp) / "fused_cpu.so"
        subprocess.run(
            [cc, *flags, *_LINK, "-o", str(out), str(c_file), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, partial)
        os.replace(partial, target)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    fn = lib.shan_pairs
    fn.argtypes = [
        _CTYPES[kind] if isinstance(kind, str) else ctypes.c_void_p for _, kind in SIGNATURE
    ]
    fn.restype = ctypes.c_int
    return lib


def _load() -> ctypes.CDLL | None:
    """Build (or find in the cache) and load the kernel; None without a working C compiler."""
    cc = _compiler()
    if not cc:
        return None
    source, compiler, cpu = source_text(), _compiler_version(cc), _cpu_signature()
    errors = []
    for flags in FLAG_SETS:
        name = f"shan_fused_{cache_key(source, cc, flags, compiler, cpu)}.so"
        for folder in (cache_dir(), Path(tempfile.gettempdir()) / "shan-kernels"):
            lib_path = folder / name
            try:
                if not lib_path.exists():
                    _build(cc, flags, source, lib_path)
                return _declare(ctypes.CDLL(str(lib_path)))
            except subprocess.CalledProcessError as err:
                errors.append(f"{' '.join(flags)}: {err.stderr.decode(errors='replace')[-300:]}")
                break  # these flags do not compile here; another folder will not help
            except (OSError, subprocess.SubprocessError) as err:
                errors.append(f"{lib_path}: {err}")  # e.g. a read-only cache: try the next one
    warnings.warn(
        f"could not build the fused SHAN CPU kernel with {cc} (the torch path runs instead): "
        + " | ".join(errors),
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def is_available() -> bool:
    """Whether the fused CPU kernel can run: not switched off (``SHAN_FUSED_CPU=0``), and built and
    loaded (the first call builds it, or finds it in the cache)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _load()
    return _state["lib"] is not None


def use_fused_cpu(*tensors: torch.Tensor, context: bool = True, smooth: float = 9.0) -> bool:
    """THE decision whether a scoring call runs the fused CPU kernel (every caller asks this).

    True when gradients are off (the kernel has no backward), every tensor is float32 on the CPU
    (other dtypes keep their precision on the torch path), the context steps run (``context``:
    the kernel always computes steps 2-3), ``smooth <= MAX_SMOOTH`` and :func:`is_available`.
    Tensors that are not laid out for the kernel are copied to its layout by the caller.
    """
    if torch.is_grad_enabled() or not context or smooth > MAX_SMOOTH:
        return False
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in tensors):
        return False
    return is_available()


# ----------------------------------------------------------------------------- layout


def src_stride(d: int) -> int:
    """Row stride (floats) of the ``[y ; -W_att y]`` rows the kernel reads: ``2d`` plus one cache
    line. With ``2d`` a multiple of 1024 floats (4 KiB) every row of a block would map to the same
    L1 sets, and the 14-36 rows the kernel cycles through would keep evicting each other."""
    return 2 * d + SRC_PAD


def strided_rows(x: torch.Tensor) -> torch.Tensor:
    """``x (B, K, 2d)`` with its rows :func:`src_stride` floats apart (a view of a padded buffer):
    ``x`` itself when it already is laid out so, else a padded copy (same dtype, device and autograd
    history; the pad is never read)."""
    b, k, d2 = x.shape
    ss = src_stride(d2 // 2)
    if _has_src_layout(x, ss):
        return x
    return F.pad(x, (0, ss - d2))[..., :d2]


def _has_src_layout(x: torch.Tensor, ss: int) -> bool:
    b, k, _ = x.shape
    if x.stride(2) != 1 or (k > 1 and x.stride(1) != ss):
        return False
    return b == 1 or x.stride(0) == k * ss


# ----------------------------------------------------------------------------- entry point


def _pool(threads: int) -> ThreadPoolExecutor:
    """One worker pool per thread count (kept; safe when several threads score at once)."""
    with _lock:
        pools = _state.setdefault("pools", {})
        if threads not in pools:
            pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="shan-fused")
        return pools[threads]


def _check(name: str, x: object, shape: tuple[int, ...], layout: str, ss: int) -> None:
    """Raise :class:`FusedKernelArgumentError` unless ``x`` is what the C code will read."""

    def fail(why: str) -> None:
        raise FusedKernelArgumentError(f"fused SHAN kernel: argument {name!r} {why}")

    if not isinstance(x, torch.Tensor):
        fail(f"must be a tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        fail(f"must be on the CPU, got {x.device}")
    if x.dtype != torch.float32:
        fail(f"must be float32, got {x.dtype}")
    if tuple(x.shape) != shape:
        fail(f"must have shape {shape}, got {tuple(x.shape)}")
    if x.requires_grad and torch.is_grad_enabled():
        fail("requires grad: the kernel has no backward (call it under torch.no_grad())")
    if layout == "src":
        if not _has_src_layout(x, ss):
            fail(f"must have rows {ss} floats apart (see strided_rows), got strides {x.stride()}")
    elif not x.is_contiguous():
        fail(f"must be contiguous, got strides {x.stride()}")


def score_pairs(
    *,
    aff: torch.Tensor,
    iv: torch.Tensor,
    ibias: torch.Tensor,
    isrc: torch.Tensor,
    imask: torch.Tensor,
    icnt: torch.Tensor,
    inorm: torch.Tensor,
    tt: torch.Tensor,
    tbias: torch.Tensor,
    tsrc: torch.Tensor,
    tmask: torch.Tensor,
    tcnt: torch.Tensor,
    tnorm: torch.Tensor,
    wi: torch.Tensor,
    wt: torch.Tensor,
    mu: float,
    lam: float,
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 for all ``nc x mc`` pairs of a block, on ``threads`` threads (default
    ``torch.get_num_threads()``). Every tensor is float32 on the CPU, contiguous unless said:

    Args:
        aff: ``(nc, k, mc, n)`` step-1 cosine affinities.
        iv: ``(nc, k, d)`` regions (padding zero); ibias: ``(nc, k, 2d)`` =
            ``[-v ; -(W_own v + b)]``; isrc: ``(nc, k, 2d)`` = ``[v ; -W_att v]`` with rows
            :func:`src_stride` floats apart; imask: ``(nc, k)`` 0/1; icnt: ``(nc,)`` real regions
            (>= 1); inorm: ``(nc, k)`` region norms.
        tt, tbias, tsrc, tmask, tcnt, tnorm: the same for the captions, ``(mc, n, ...)``.
        wi, wt: ``(d,)`` the image / text context-pooling vectors.
        mu: step-1 mixing weight; lam: the temperature (``<= MAX_SMOOTH``).

    Returns:
        ``(s_l2l, s_g2l, s_g2g)``, each ``(nc, mc)``.

    Raises:
        FusedKernelArgumentError: an argument the C code cannot take (checked before the call).
        FusedKernelError: the kernel is unavailable, or out of memory.
    """
    if not is_available():
        raise FusedKernelError(
            f"the fused CPU kernel is unavailable (no C compiler, or {ENV_SWITCH}=0)"
        )
    if not 0.0 < lam <= MAX_SMOOTH:
        raise FusedKernelArgumentError(f"fused SHAN kernel: lam must lie in (0, 40], got {lam}")
    tensors = {
        "aff": aff,
        "iv": iv,
        "ibias": ibias,
        "isrc": isrc,
        "imask": imask,
        "icnt": icnt,
        "inorm": inorm,
        "tt": tt,
        "tbias": tbias,
        "tsrc": tsrc,
        "tmask": tmask,
        "tcnt": tcnt,
        "tnorm": tnorm,
        "wi": wi,
        "wt": wt,
    }
    for name in ("iv", "tt"):
        if not isinstance(tensors[name], torch.Tensor) or tensors[name].dim() != 3:
            raise FusedKernelArgumentError(f"fused SHAN kernel: {name!r} must be a 3-d tensor")
    nc, k, d = iv.shape
    mc, n, _ = tt.shape
    dims = {"nc": nc, "mc": mc, "k": k, "n": n, "d": d, "d2": 2 * d}
    ss = src_stride(d)
    out = torch.empty(3, nc, mc)
    tensors.update(l2l=out[0], g2l=out[1], g2g=out[2])
    args: list = []
    for name, kind in SIGNATURE:
        if isinstance(kind, str):
            args.append(name)  # scalars are filled in per thread below
            continue
        layout = kind[0] if kind[0] in ("src", "out") else ""
        shape = tuple(dims[s] for s in (kind[1:] if layout else kind))
        _check(name, tensors[name], shape, layout, ss)
        args.append(tensors[name].data_ptr())
    for name, count in (("icnt", icnt), ("tcnt", tcnt)):
        if count.numel() and float(count.min()) < 1:
            raise FusedKernelArgumentError(
                f"fused SHAN kernel: {name!r}: every image / caption needs >= 1 real fragment"
            )
    total = nc * mc
    if total == 0:
        return out[0], out[1], out[2]
    threads = max(1, min(threads or torch.get_num_threads(), total))
    cuts = [total * i // threads for i in range(threads + 1)]
    fn = _state["lib"].shan_pairs
    scalars = {"nc": nc, "mc": mc, "k": k, "n": n, "d": d, "ss": ss, "mu": mu, "lam": lam}

    def run(i: int) -> int:
        call = dict(scalars, p0=cuts[i], p1=cuts[i + 1])
        return fn(*(call[a] if isinstance(a, str) else a for a in args))

    codes = [run(0)] if threads == 1 else list(_pool(threads).map(run, range(threads)))
    if any(codes):
        raise FusedKernelError("fused SHAN kernel: out of memory for its scratch buffer")
    return out[0], out[1], out[2]


__all__ = [
    "ENV_SWITCH",
    "MAX_SMOOTH",
    "SIGNATURE",
    "FLAG_SETS",
    "FusedKernelError",
    "FusedKernelArgumentError",
    "is_available",
    "use_fused_cpu",
    "score_pairs",
    "src_stride",
    "strided_rows",
    "source_text",
    "cache_dir",
    "cache_key",
]
