"""SHAN teaching demo: ``python app.py`` serves on http://127.0.0.1:7860.

Flags: ``--host --port --share --checkpoint (local dir or Hub repo id) --detector toy|butd
--detector-weights --device auto|cpu|cuda``. ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` set
the defaults of ``--host`` / ``--port`` (Hugging Face Spaces sets them). The models are loaded once,
before the server starts; a checkpoint that cannot be loaded ends the process with exit code 2 and
a one-line error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

START = time.perf_counter()
HERE = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = HERE / "checkpoints" / "shan"
EXAMPLES = HERE / "assets" / "examples.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="SHAN step-by-step image-text matching demo (Gradio)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument(
        "--checkpoint",
        default=str(DEFAULT_CHECKPOINT),
        help="SHAN checkpoint directory or Hugging Face Hub repo id (owner/name)",
    )
    p.add_argument(
        "--detector",
        choices=("toy", "butd"),
        default=None,
        help="region extractor (default: the one named in the checkpoint's config.json)",
    )
    p.add_argument(
        "--detector-weights", default=None, help="toy detector directory or BUTD weights file"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: CPU cores / concurrent requests, at least 1)",
    )
    p.add_argument("--examples", default=str(EXAMPLES), help="examples JSON (image + captions)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    from demo.pipeline import DemoPipeline, SetupError, cpu_threads, load_examples
    from demo.ui import CONCURRENCY_LIMIT

    torch.set_num_threads(args.threads if args.threads > 0 else cpu_threads(CONCURRENCY_LIMIT))

    try:
        pipeline = DemoPipeline.from_checkpoint(
            args.checkpoint, args.detector, args.detector_weights, args.device
        )
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from demo.ui import build_demo, launch_kwargs, warm_up

    examples = load_examples(args.examples)
    demo = build_demo(pipeline, examples)
    warm = warm_up(pipeline)
    logging.getLogger("shan.app").info(
        "models loaded, %d examples, warm-up %.1f s, ready after %.1f s",
        len(examples),
        warm,
        time.perf_counter() - START,
    )
    demo.launch(**launch_kwargs(args.host, args.port, args.share))
    return 0


if __name__ == "__main__":
    sys.exit(main())
