"""Time one training step of SHAN against a SCAN-style t2i model at Flickr30K shapes.

A step is what ``shan.train`` does per batch: forward (encoders + all B x B scores), the VSE++
max-violation triplet loss (margin 0.2), backward, gradient clipping (2.0) and an Adam step. Both
models use the same encoders (linear region encoder, bi-GRU text encoder); SCAN-style scores with
SCAN's t2i cross-attention (lambda 9; ``benchmarks/scan_reference.py``), SHAN with its three steps.
Defaults are Flickr30K's: batch 128, 36 x 2048 regions, captions of 8-16 words, d = 1024, word
embeddings of 300. Random inputs (the cost does not depend on the values).

Prints for each model: steps/s (best of ``--repeats`` interleaved runs of ``--steps`` steps), wall
and process CPU time per step, peak memory, and the extrapolated epoch (145 000 captions = 1133
steps of 128) and 30-epoch times; then ``ratio_train_vs_scan=<x>`` alone on a line (SHAN step
time / SCAN-style step time).

    python benchmarks/bench_train.py --device cuda                     # fp32
    python benchmarks/bench_train.py --device cuda --dtype bf16    # autocast, as shan.train
    python benchmarks/bench_train.py --device cpu --threads 2 --steps 1 --repeats 2
    python benchmarks/bench_train.py --batch 16 --dim 128 --img-dim 256 --regions 12 \\
        --steps 2 --repeats 1                                          # CI-sized, seconds on a CPU
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.measure import alternate, load_average  # noqa: E402
from benchmarks.scan_reference import ScanStyle  # noqa: E402
from shan.config import ModelConfig  # noqa: E402
from shan.device import resolve_device  # noqa: E402
from shan.model import SHAN, ContrastiveLoss  # noqa: E402
from shan.train import optimizer_step  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_batches(args: argparse.Namespace, device: torch.device, count: int) -> list[dict]:
    """``count`` random batches: features (B, k, F) >= 0 like pooled CNN features, all regions
    real, tokens (B, n) with lengths in [min_words, max_words]."""
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for _ in range(count):
        lengths = torch.randint(args.min_words, args.max_words + 1, (args.batch,), generator=g)
        tokens = torch.randint(2, args.vocab, (args.batch, int(lengths.max())), generator=g)
        tokens = tokens.masked_fill(torch.arange(tokens.shape[1]) >= lengths[:, None], 0)
        feats = torch.randn(args.batch, args.regions, args.img_dim, generator=g).abs()
        out.append(
            {
                "feats": feats.to(device),
                "mask": torch.ones(args.batch, args.regions, dtype=torch.bool, device=device),
                "tokens": tokens.to(device),
                "lengths": lengths.to(device),
            }
        )
    return out


def trainer(model: torch.nn.Module, forward, device: torch.device, dtype, margin: float = 0.2):
    """One optimisation step per batch, as ``shan.train`` does it (Adam 2e-4, clip 2.0)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=2e-4)
    criterion = ContrastiveLoss(margin=margin, max_violation=True)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step(batch: dict) -> float:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            loss = criterion(forward(batch).float())
        optimizer_step(loss, optimizer, params, 2.0, scaler)  # what shan.train does per batch
        return float(loss.detach())

    return step


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--regions", type=int, default=36)
    ap.add_argument("--img-dim", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--word-dim", type=int, default=300)
    ap.add_argument("--vocab", type=int, default=8500, help="Flickr30K's vocabulary is ~8.5k words")
    ap.add_argument("--min-words", type=int, default=8)
    ap.add_argument("--max-words", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--epoch-captions", type=int, default=145_000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    cfg = ModelConfig(
        img_dim=args.img_dim, embed_dim=args.dim, vocab_size=args.vocab, word_dim=args.word_dim
    )
    shan = SHAN(cfg).to(device).train()
    models = {
        "shan": (
            shan,
            trainer(
                shan,
                lambda b: shan(b["feats"], b["mask"], b["tokens"], b["lengths"]),
                device,
                dtype,
            ),
        )
    }
    if not args.skip_scan:
        scan = ScanStyle(args.img_dim, args.dim, args.vocab, args.word_dim).to(device).train()
        models["scan"] = (
            scan,
            trainer(scan, lambda b: scan(b["feats"], b["tokens"], b["lengths"]), device, dtype),
        )
    batches = make_batches(args, device, args.steps)

    def runner(step):  # noqa: ANN001, ANN202
        return lambda: [step(b) for b in batches]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device={device} ({name}) threads={torch.get_num_threads()} dtype={args.dtype}; load "
        f"average {load_average()}"
    )
    print(
        f"shapes: batch {args.batch}, {args.regions} x {args.img_dim} regions, captions of "
        f"{args.min_words}-{args.max_words} words, d={args.dim}, word dim {args.word_dim}, "
        f"vocabulary {args.vocab}; best of {args.repeats} interleaved runs of {args.steps} steps"
    )
    res = alternate({k: runner(step) for k, (_, step) in models.items()}, args.repeats, device)
    steps_per_epoch = -(-args.epoch_captions // args.batch)
    mem_note = "process peak RSS" if device.type == "cpu" else "peak allocated"
    for key, label in (("shan", "SHAN"), ("scan", "SCAN-style t2i")):
        if key not in res:
            continue
        m = res[key]
        per_step = m.wall / args.steps
        epoch = per_step * steps_per_epoch
        n_params = sum(p.numel() for p in models[key][0].parameters())
        print(
            f"{label}: {1 / per_step:.3f} steps/s ({per_step:.3f} s/step wall, "
            f"{m.cpu / args.steps:.3f} s cpu); {mem_note} {m.mib()} (+{m.mib(m.above)} during "
            f"the steps); {n_params / 1e6:.1f} M parameters"
        )
        print(
            f"  epoch of {args.epoch_captions} captions ({steps_per_epoch} steps): "
            f"{epoch / 60:.1f} min; {args.epochs} epochs: {epoch * args.epochs / 3600:.2f} h"
        )
    if "scan" in res:
        print(f"ratio_train_vs_scan={res['shan'].wall / res['scan'].wall:.3f}")
        if device.type == "cpu":
            print(f"ratio_train_vs_scan_cpu={res['shan'].cpu / res['scan'].cpu:.3f}")


if __name__ == "__main__":
    main()
