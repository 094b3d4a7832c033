"""Time SHAN's all-pairs scoring against a SCAN-style t2i scorer at Flickr30K-test shapes.

Flickr30K test: 1000 images x 36 regions, 5000 captions of ~12 words (here 8-16), d = 1024.
Inputs are random, already-encoded (unit) embeddings: this measures the scoring only. A subset
(``--images`` x ``--captions``) is timed ``--repeats`` times (best run kept) and extrapolated to
1000 x 5000 pairs. Prints the method, pairs/s, extrapolated seconds, the machine's dense matmul
GFLOP/s, SHAN's achieved GFLOP/s (counted matmul FLOPs) and ``ratio_vs_scan=<x>`` alone on a line
(SHAN time per pair / SCAN time per pair).

    python benchmarks/bench_scoring.py --threads 2
    python benchmarks/bench_scoring.py --device cuda --images 1000 --captions 5000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from shan.config import ModelConfig  # noqa: E402
from shan.model import SHAN, ImageEmbeddings, TextEmbeddings, fused_cpu  # noqa: E402

FULL_PAIRS = 1000 * 5000


def scan_t2i(images: torch.Tensor, captions: torch.Tensor, lengths: list[int], smooth: float = 9.0):
    """SCAN's t2i scorer (Lee et al. 2018; clipped_l2norm, lambda 9, mean over words), written as
    SCAN does it: for each caption, one batched cross-attention against all images.

    ``images (N, k, d)``, ``captions (M, n, d)`` -> ``(N, M)``.
    """
    n_image = images.shape[0]
    sims = []
    for i, n_word in enumerate(lengths):
        cap_i = captions[i, :n_word].unsqueeze(0).repeat(n_image, 1, 1)  # (N, n, d)
        attn = torch.bmm(images, cap_i.transpose(1, 2))  # (N, k, n)
        attn = F.leaky_relu(attn, 0.1)
        attn = attn / (attn.norm(dim=2, keepdim=True) + 1e-8)  # clipped_l2norm over words
        attn = torch.softmax(attn.transpose(1, 2) * smooth, dim=2)  # (N, n, k) over regions
        weighted = torch.bmm(attn, images)  # (N, n, d)
        row_sim = F.cosine_similarity(cap_i, weighted, dim=2).mean(dim=1, keepdim=True)
        sims.append(row_sim)
    return torch.cat(sims, 1)


def shan_flops(k: int, lengths: list[int], d: int, n_img: int) -> float:
    """Multiply-add FLOPs of SHAN's pair phase for ``n_img`` images x captions (``n`` = real words;
    sigmoids and softmaxes not counted).

    Per pair: the affinity GEMM ``2knd`` and the two attended products onto ``[x ; -W_att x]``
    ``2 * 4knd``; step-1 relevance dots, pooling (mean, logits, context) and global-to-local
    attention, about ``16(k + n)d`` together.
    """
    return float(sum(10 * k * n * d + 16 * (k + n) * d for n in lengths)) * n_img


def scan_flops(k: int, lengths: list[int], d: int, n_img: int) -> float:
    """Matmul FLOPs of the SCAN t2i scorer: two ``(k x n x d)`` products per pair."""
    return float(sum(4 * k * n * d for n in lengths)) * n_img


def matmul_gflops(device: torch.device, size: int = 2048, reps: int = 10) -> float:
    a = torch.randn(size, size // 2, device=device)
    b = torch.randn(size // 2, size, device=device)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size * size * (size // 2) / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(fns: list, repeats: int, device: torch.device) -> list[float]:
    """Best wall time of each function; runs are interleaved (A B A B ...) so that a change in the
    machine's load hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    sync(device)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--captions", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--regions", type=int, default=36)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--img-chunk", type=int, default=None, help="SHAN images per chunk")
    ap.add_argument("--txt-chunk", type=int, default=None, help="SHAN captions per chunk")
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    k, d = args.regions, args.dim
    lengths = torch.randint(8, 17, (args.captions,), generator=g)
    n_pad = int(lengths.max())
    v = F.normalize(torch.randn(args.images, k, d, generator=g), dim=-1).to(device)
    t = F.normalize(torch.randn(args.captions, n_pad, d, generator=g), dim=-1)
    t_mask = torch.arange(n_pad)[None, :] < lengths[:, None]
    t = t.masked_fill(~t_mask[..., None], 0.0).to(device)
    img = ImageEmbeddings(v, torch.ones(args.images, k, dtype=torch.bool, device=device))
    txt = TextEmbeddings(t, t_mask.to(device))
    lens = lengths.tolist()

    model = SHAN(ModelConfig(img_dim=8, embed_dim=d, vocab_size=4, word_dim=4)).to(device).eval()
    chunk_kw = {}
    if args.img_chunk:
        chunk_kw["img_chunk"] = args.img_chunk
    if args.txt_chunk:
        chunk_kw["txt_chunk"] = args.txt_chunk
    pairs = args.images * args.captions
    print(f"device={device} threads={torch.get_num_threads()} shapes: {args.images} images x {k}")
    print(f"  regions, {args.captions} captions of 8-16 words (mean {lengths.float().mean():.1f},")
    print(f"  padded to {n_pad}), d={d}; best of {args.repeats} runs, extrapolated to 1000 x 5000")
    gemm = matmul_gflops(device)
    print(f"dense matmul (2048x1024 @ 1024x2048): {gemm:.0f} GFLOP/s")

    phases: list[dict[str, float]] = []

    def run_shan() -> None:
        timings: dict[str, float] = {}
        model.score(img, txt, timings=timings, **chunk_kw)
        phases.append(timings)

    fns = [run_shan]
    if not args.skip_scan:
        fns.append(lambda: scan_t2i(v, t, lens))
    with torch.no_grad():
        secs = best_times(fns, args.repeats, device)
    sec = secs[0]
    # per-image/caption work grows with N + M, pair work with N x M: extrapolate them apart
    best_phase = min(phases[1:] or phases, key=lambda ph: ph["prepare"] + ph["pairs"])
    prep, pair_sec = best_phase["prepare"], best_phase["pairs"]
    scale_prep = (1000 * k + 5000 * float(lengths.float().mean())) / (
        args.images * k + float(lengths.sum())
    )
    full = prep * scale_prep + pair_sec * FULL_PAIRS / pairs
    flops = shan_flops(k, lens, d, args.images)
    fused = device.type == "cpu" and fused_cpu.is_available()
    method = "fused C kernel per pair (CPU)" if fused else "batched torch chunks"
    print(
        f"SHAN  (3 steps; affinities as one GEMM per chunk, step 2-3 {method}; "
        f"{chunk_kw or 'default chunks'}): {pairs / sec:,.0f} pairs/s on this subset "
        f"(prepare {prep:.2f} s, pairs {pair_sec:.2f} s)"
    )
    print(
        f"  extrapolated 1000x5000: {full:.0f} s ({prep * scale_prep:.1f} s per-image/caption "
        f"work + {pair_sec * FULL_PAIRS / pairs:.0f} s pairs), {FULL_PAIRS / full:,.0f} pairs/s; "
        f"{flops / pair_sec / 1e9:.0f} GFLOP/s achieved in the pair phase "
        f"({flops / pairs / 1e6:.2f} MFLOP/pair counted)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nc = chunk_kw.get("img_chunk", 16 if device.type == "cpu" and not fused else 64)
    mc = chunk_kw.get("txt_chunk", 32 if device.type == "cpu" else 128)
    if fused:  # the chunk's affinities + per-thread scratch of one pair
        chunk_mb = (nc * k * mc * n_pad + args.threads * (k + 8) * d) * 4 / 2**20
    else:  # the attended/fused (rows, 2d) + (rows, d) tensors of both sides
        chunk_mb = nc * mc * (k + n_pad) * 3 * d * 4 / 2**20
    prep_mb = (args.images * k + mc * n_pad) * 6 * d * 4 / 2**20
    print(
        f"memory: per-chunk intermediates ~{chunk_mb:.0f} MiB ({nc} images x {mc} captions per "
        f"chunk); prepared images + one caption block {prep_mb:.0f} MiB (6 d-vectors per fragment, "
        f"linear in N); process max RSS {rss:.0f} MiB"
    )
    if args.skip_scan:
        return
    sec_scan = secs[1]
    sflops = scan_flops(k, lens, d, args.images)
    print(
        f"SCAN t2i (lambda 9, mean, per caption vs all images): {pairs / sec_scan:,.0f} pairs/s, "
        f"{sec_scan * FULL_PAIRS / pairs:.0f} s for 1000x5000, {sflops / sec_scan / 1e9:.0f} "
        f"GFLOP/s achieved"
    )
    full_scan = sec_scan * FULL_PAIRS / pairs
    print(f"SHAN / SCAN per pair at 1000x5000 (extrapolated): {full:.0f} s / {full_scan:.0f} s")
    print(f"ratio_vs_scan={full / full_scan:.3f}")


if __name__ == "__main__":
    main()
