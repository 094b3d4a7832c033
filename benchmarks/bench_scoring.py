"""Time SHAN's all-pairs scoring against a SCAN-style t2i scorer at Flickr30K-test shapes.

Flickr30K test: 1000 images x 36 regions, 5000 captions of ~12 words (here 8-16), d = 1024.
Inputs are random, already-encoded (unit) embeddings: this measures the scoring only, both methods
on the same device in the same process, their runs interleaved (best of ``--repeats``). A subset
(``--images`` x ``--captions``) is timed and extrapolated to 1000 x 5000 pairs (SHAN's per-image /
per-caption work apart from its per-pair work). Prints, for each method, pairs/s, wall and process
CPU seconds, the extrapolated time and the peak memory; then ``ratio_vs_scan=<x>`` alone on a line
(SHAN wall time per pair / SCAN's) and, on the CPU, ``ratio_vs_scan_cpu=<x>`` (the same from
process CPU time, which other processes on a shared machine disturb less).

    python benchmarks/bench_scoring.py --threads 2
    python benchmarks/bench_scoring.py --device cuda --images 1000 --captions 5000
    python benchmarks/bench_scoring.py --images 8 --captions 40 --dim 256 --repeats 1  # CI-sized
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.measure import alternate, load_average, sync  # noqa: E402
from benchmarks.scan_reference import scan_t2i  # noqa: E402
from shan.config import ModelConfig  # noqa: E402
from shan.device import resolve_device  # noqa: E402
from shan.model import SHAN, ImageEmbeddings, TextEmbeddings, fused_cpu  # noqa: E402

FULL_IMAGES, FULL_CAPTIONS = 1000, 5000
FULL_PAIRS = FULL_IMAGES * FULL_CAPTIONS


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--captions", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch and the kernel)")
    ap.add_argument("--regions", type=int, default=36)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--img-chunk", type=int, default=None, help="SHAN images per chunk")
    ap.add_argument("--txt-chunk", type=int, default=None, help="SHAN captions per chunk")
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
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
    on_cpu = device.type == "cpu"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device={device} ({name}) threads={torch.get_num_threads()} float32; load average "
        f"{load_average()}"
    )
    print(
        f"shapes: {args.images} images x {k} regions, {args.captions} captions of 8-16 words "
        f"(mean {lengths.float().mean():.1f}, padded to {n_pad}), d={d}; best of "
        f"{args.repeats} interleaved runs, extrapolated to {FULL_IMAGES} x {FULL_CAPTIONS}"
    )
    gemm = matmul_gflops(device)
    print(f"dense matmul (2048x1024 @ 1024x2048): {gemm:.0f} GFLOP/s")

    phases: list[dict[str, float]] = []

    def run_shan() -> None:
        timings: dict[str, float] = {}
        model.score(img, txt, timings=timings, **chunk_kw)
        phases.append(timings)

    fns = {"shan": run_shan}
    if not args.skip_scan:
        fns["scan"] = lambda: scan_t2i(v, t, lens)
    with torch.no_grad():
        res = alternate(fns, args.repeats, device)

    shan = res["shan"]
    if on_cpu:
        # per-image/caption work grows with N + M, pair work with N x M: extrapolate them apart
        best_phase = min(phases[1:] or phases, key=lambda ph: ph["prepare"] + ph["pairs"])
        prep, pair_sec = best_phase["prepare"], best_phase["pairs"]
    else:  # the phase timings are not synchronised on an accelerator: all of it scales by pairs
        prep, pair_sec = 0.0, shan.wall
    scale_prep = (FULL_IMAGES * k + FULL_CAPTIONS * float(lengths.float().mean())) / (
        args.images * k + float(lengths.sum())
    )
    full = prep * scale_prep + pair_sec * FULL_PAIRS / pairs
    full_cpu = shan.cpu * full / shan.wall
    flops = shan_flops(k, lens, d, args.images)
    fused = on_cpu and fused_cpu.is_available()
    method = "fused C kernel per pair (CPU)" if fused else "batched torch chunks"
    mem_note = "process peak RSS" if on_cpu else "peak allocated"
    print(
        f"SHAN  (3 steps; affinities as one GEMM per chunk, steps 1-3 {method}; "
        f"{chunk_kw or 'default chunks'}): {pairs / shan.wall:,.0f} pairs/s on this subset "
        f"(wall {shan.wall:.3f} s, cpu {shan.cpu:.3f} s; prepare {prep:.2f} s, pairs "
        f"{pair_sec:.2f} s)"
    )
    print(
        f"  extrapolated {FULL_IMAGES}x{FULL_CAPTIONS}: {full:.1f} s ({prep * scale_prep:.1f} s "
        f"per-image/caption work + {pair_sec * FULL_PAIRS / pairs:.1f} s pairs), "
        f"{FULL_PAIRS / full:,.0f} pairs/s; {flops / pair_sec / 1e9:.0f} GFLOP/s achieved in the "
        f"pair phase ({flops / pairs / 1e6:.2f} MFLOP/pair counted)"
    )
    print(f"  memory: {mem_note} {shan.mib()} (+{shan.mib(shan.above)} during a call)")
    if args.skip_scan:
        return
    scan = res["scan"]
    sflops = scan_flops(k, lens, d, args.images)
    full_scan = scan.wall * FULL_PAIRS / pairs
    full_scan_cpu = scan.cpu * FULL_PAIRS / pairs
    print(
        f"SCAN-style t2i (lambda 9, mean, per caption vs all images): {pairs / scan.wall:,.0f} "
        f"pairs/s (wall {scan.wall:.3f} s, cpu {scan.cpu:.3f} s), {full_scan:.1f} s for "
        f"{FULL_IMAGES}x{FULL_CAPTIONS}, {sflops / scan.wall / 1e9:.0f} GFLOP/s achieved"
    )
    print(f"  memory: {mem_note} {scan.mib()} (+{scan.mib(scan.above)} during a call)")
    print(
        f"SHAN / SCAN per pair at {FULL_IMAGES}x{FULL_CAPTIONS} (extrapolated): {full:.1f} s / "
        f"{full_scan:.1f} s wall"
        + (f", {full_cpu:.1f} s / {full_scan_cpu:.1f} s cpu" if on_cpu else "")
    )
    print(f"ratio_vs_scan={full / full_scan:.3f}")
    if on_cpu:
        print(f"ratio_vs_scan_cpu={full_cpu / full_scan_cpu:.3f}")


if __name__ == "__main__":
    main()
