"""``shan-train`` / ``python -m shan.cli.train`` / ``torchrun -m shan.cli.train``: train SHAN.

Example::

    shan-train --config configs/f30k.json --set data.root=data --set train.out_dir=runs/shan_f30k
    torchrun --nproc_per_node=4 -m shan.cli.train --config configs/coco.json --set data.root=data

The training itself, the config file format and the outputs are described in :mod:`shan.train`.
``train.out_dir`` is checked for writability before any data is read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from shan.cli.common import Parser, positive_int, run
from shan.config import DataConfig, ModelConfig, TrainConfig, to_dict
from shan.data.vocab import Vocabulary
from shan.files import check_writable_dir
from shan.train import apply_set_overrides, dist_info, load_config_file, train

PROG = "shan-train"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Train SHAN on SCAN-format precomputed features.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--config", help="JSON file with model/data/train sections (e.g. configs/f30k.json)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config field, e.g. --set train.lr=1e-4 (repeatable)",
    )
    p.add_argument(
        "--vocab", help="use this vocab.json instead of building one from train captions"
    )
    p.add_argument(
        "--min-count", type=positive_int, default=1, help="min word count for a built vocabulary"
    )
    p.add_argument("--resume", help="continue from OUT_DIR/last (same as --set train.resume=...)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        cfgs: tuple[ModelConfig, DataConfig, TrainConfig] = (
            load_config_file(args.config)
            if args.config
            else (ModelConfig(), DataConfig(), TrainConfig())
        )
        overrides = list(args.overrides)
        if args.resume:
            overrides.append(f"train.resume={args.resume}")
        model_cfg, data_cfg, train_cfg = apply_set_overrides(cfgs, overrides)
        if args.print_config:
            dump = {
                "model": to_dict(model_cfg),
                "data": to_dict(data_cfg),
                "train": to_dict(train_cfg),
            }
            print(json.dumps(dump, indent=2))
            return 0
        check_writable_dir(train_cfg.out_dir)  # before hours of training, not after
        vocab = Vocabulary.load(args.vocab) if args.vocab else None
        best = train(
            model_cfg,
            data_cfg,
            train_cfg,
            vocab=vocab,
            min_count=args.min_count,
            progress=not args.no_progress,
        )
        if dist_info()[1] == 0:
            print(f"best checkpoint: {best}")
        return 0

    return run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
