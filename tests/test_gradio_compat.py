"""Gradio's image cache must never truncate a picture that another request is serving."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio import processing_utils as pu  # noqa: E402

from demo import gradio_compat  # noqa: E402


def test_same_picture_is_replaced_atomically_not_rewritten_in_place(tmp_path: Path) -> None:
    assert gradio_compat.install() and gradio_compat.install()  # idempotent
    img = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    first = Path(pu.save_pil_to_cache(img, str(tmp_path), format="png"))
    expected = first.read_bytes()
    assert first.parent.name == pu.hash_bytes(expected) and first.name == "image.png"
    with open(first, "rb") as reader:  # a request streaming the file...
        inode = os.fstat(reader.fileno()).st_ino
        second = Path(pu.save_pil_to_cache(img, str(tmp_path), format="png"))  # ...and a second one
        assert second == first
        assert reader.read() == expected  # the reader still gets every byte
    assert os.stat(second).st_ino != inode  # a new file was renamed into place
    assert second.read_bytes() == expected
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]


def test_array_images_go_through_the_atomic_writer(tmp_path: Path) -> None:
    gradio_compat.install()
    arr = np.full((8, 8, 3), 200, np.uint8)
    paths = []

    def save() -> None:
        paths.append(pu.save_img_array_to_cache(arr, str(tmp_path), format="png"))

    threads = [threading.Thread(target=save) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1
    assert np.array_equal(np.asarray(Image.open(paths[0]).convert("RGB")), arr)
