"""Writing results so that they are never lost or left half-written.

* :func:`atomic_path` — write to a temporary name in the target's folder, rename into place on
  success (``os.replace`` is atomic on one file system), delete it on failure: a reader sees the old
  file or the complete new one, never a truncated one.
* :func:`check_writable_dir` / :func:`check_writable_file` — find out *before* hours of work whether
  the output can be written (a file is really created and removed), raising the ``OSError`` the
  write would have raised.
* :func:`read_json` — read back a JSON file, any failure raised as the caller's error.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_name(path: str | Path) -> Path:
    """A fresh hidden name beside ``path`` for writing it: same folder (so a rename is atomic),
    same suffix (``np.save`` keeps a name that ends in ``.npy``)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{p.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on normal exit it replaces
    ``path``, on an exception it is removed and ``path`` is left as it was."""
    target = Path(path)
    tmp = temp_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def check_writable_dir(path: str | Path) -> Path:
    """Create ``path`` (and its parents) if needed and check a file can be written in it.

    Raises:
        OSError: e.g. ``PermissionError``, ``NotADirectoryError``, ``FileExistsError``.
    """
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"not a directory: {d}")
    d.mkdir(parents=True, exist_ok=True)
    probe = temp_name(d / "write-test")
    probe.write_bytes(b"")
    probe.unlink()
    return d


def check_writable_file(path: str | Path) -> Path:
    """Check that ``path`` can be written (its folder is created if needed; the file itself is
    not touched).

    Raises:
        OSError: ``IsADirectoryError`` when ``path`` is a folder, or whatever writing in its
            folder raises.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"is a directory: {p}")
    check_writable_dir(p.parent)  # the file is replaced by a rename: its folder must be writable
    return p


def read_json(path: str | Path, error: type[Exception]) -> Any:
    """The JSON value in ``path`` (UTF-8).

    Raises:
        error: ``"cannot read {path}: ..."`` when the file cannot be read or parsed.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None


__all__ = [
    "atomic_path",
    "check_writable_dir",
    "check_writable_file",
    "read_json",
    "temp_name",
    "write_text",
]
