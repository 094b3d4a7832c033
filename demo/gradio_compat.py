"""Work around a Gradio race that serves truncated images to concurrent users.

Gradio (seen in 6.31) stores every output image under a content hash, ``<cache>/<hash>/image.png``,
and rewrites that file in place (``Path.write_bytes``: truncate, then write) each time the same
picture is produced. When two users get an identical picture at the same moment (two people
clicking the same example), one request can be streaming the file while the other truncates it:
the browser receives fewer bytes than the declared Content-Length, and the picture breaks. Our
8-concurrent-clients test hit this (``LocalProtocolError: Too little data for declared
Content-Length``).

The fix keeps Gradio's contract (same path for the same bytes) but writes to a temporary file in the
same directory and renames it into place: ``os.replace`` is atomic, a reader that already opened the
file keeps reading complete bytes, and a new reader sees the complete new file — whose bytes are
identical, since the name is their hash. Gradio's own ``save_file_to_cache`` already works this way.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install() -> bool:
    """Patch ``gradio.processing_utils.save_pil_to_cache`` to write atomically (idempotent).

    Returns whether the patch is active. If Gradio's helpers are not what this was written
    against, nothing is patched and a warning is logged: the app still works, with the race.
    """
    from gradio import processing_utils as pu

    current = getattr(pu, "save_pil_to_cache", None)
    if getattr(current, "_shan_atomic", False):
        return True
    needed = ("encode_pil_to_bytes", "hash_bytes")
    if current is None or not all(hasattr(pu, n) for n in needed):
        log.warning("gradio.processing_utils changed; concurrent identical images may be truncated")
        return False

    def save_pil_to_cache(
        img: Any, cache_dir: str, name: str = "image", format: str = "webp"
    ) -> str:
        data = pu.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        _write_atomically(path, data)
        return str(path)

    save_pil_to_cache._shan_atomic = True  # type: ignore[attr-defined]
    pu.save_pil_to_cache = save_pil_to_cache
    return True
