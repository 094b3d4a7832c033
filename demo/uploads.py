"""What the app accepts from the network as files, checked in one place.

Three layers, each small:

* :func:`check_upload_path` — the one check every file path that reaches a handler passes: the
  real path (symlinks resolved) must be a regular file inside Gradio's upload folder (which is also
  its cache) or one of the app's own asset folders. Anything else — another file on the server, a
  missing file, a directory — is refused with the same :data:`PATH_REFUSED` message, so a caller
  learns nothing about which paths exist.
* :func:`image_input` / :func:`file_inputs` — what the Match and Search events (which run with
  ``preprocess=False``) do instead of Gradio's ``gr.Image`` / ``gr.File`` preprocessing: run that
  check rather than open the path (the pipeline opens it, under its pixel budget), and decode a
  ``data:`` URL themselves, refusing one larger than the upload limit before decoding it.
* :class:`GuardedBlocks` — a ``gr.Blocks`` that (a) gives every file dict that arrives without
  Gradio's ``meta`` marker that marker, so Gradio's own upload-folder check applies to it too, and
  (b) turns any error Gradio raises while reading the inputs into the app's own one-line message for
  that event (Gradio's text — server paths, PIL messages, echoed input — goes to the server log).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.exceptions import InvalidPathError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file, uploads and data: URLs alike (Gradio's "20mb")
MAX_UPLOAD_TEXT = "20 MB"
PATH_REFUSED = (
    "This file is not one the app received as an upload; please upload the image again "
    f"(PNG or JPEG, at most {MAX_UPLOAD_TEXT})."
)
DATA_URL_BAD = "The pasted image could not be read; please upload it as a PNG or JPEG file."
DATA_URL_TOO_BIG = f"The pasted image is larger than {MAX_UPLOAD_TEXT}, the upload limit."
GENERIC_REFUSAL = "This request could not be used; please reload the page and try again."
_FILE_META = {"_type": "gradio.FileData"}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.I)


class InputRefused(gr.Error):
    """An input the app refuses; its message is the app's own and safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message, title="Please check the input", print_exception=False)


# --------------------------------------------------------------------------------------------
# The one path check


def upload_roots(extra: Iterable[str | Path] = ()) -> tuple[Path, ...]:
    """Gradio's upload folder (its cache too) plus ``extra`` folders, as real paths."""
    from gradio.utils import get_upload_folder

    roots = [Path(get_upload_folder()), *map(Path, extra)]
    return tuple(dict.fromkeys(Path(os.path.realpath(r)) for r in roots))


def check_upload_path(path: Any, roots: Iterable[Path]) -> str:
    """``path`` as a string if it is a regular file inside one of ``roots``; else refuse.

    Symlinks are resolved first, so a link inside the upload folder pointing elsewhere is refused.
    The message is the same whether or not the path exists.

    Raises:
        InputRefused: with :data:`PATH_REFUSED`.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise InputRefused(PATH_REFUSED)
    real = Path(os.path.realpath(path))
    inside = any(real == r or real.is_relative_to(r) for r in roots)
    if not inside or not real.is_file():
        log.warning("refused a file outside the upload folder: %r", str(path)[:300])
        raise InputRefused(PATH_REFUSED)
    return str(real)


def decode_data_url(url: str, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes of a base64 ``data:`` URL, refusing one over ``max_bytes`` before decoding it.

    Raises:
        InputRefused: not a base64 data URL, bad base64, or too large (never echoes the URL).
    """
    head = _DATA_URL.match(url[:256])
    if head is None:
        raise InputRefused(DATA_URL_BAD)
    body = url[head.end() :]
    if len(body) // 4 * 3 - body[-2:].count("=") > max_bytes:  # the decoded size, known up front
        raise InputRefused(DATA_URL_TOO_BIG)
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InputRefused(DATA_URL_BAD) from None
    if not data:
        raise InputRefused(DATA_URL_BAD)
    if len(data) > max_bytes:
        raise InputRefused(DATA_URL_TOO_BIG)
    return data


# --------------------------------------------------------------------------------------------
# Event inputs: the events that take files run with ``preprocess=False``; this is their preprocess


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)


def image_input(value: Any, roots: Iterable[Path]) -> str | bytes | None:
    """The image of a Match request: a checked upload path, or the bytes of a ``data:`` URL.

    ``value`` is what Gradio received for a ``gr.Image`` (its file dict, with ``path`` and/or
    ``url``) or, for an example click, the path Gradio already preprocessed. Nothing is opened or
    decoded here: the pipeline does that under its pixel budget.

    Raises:
        InputRefused: a path outside ``roots``, a bare URL (the app fetches nothing), a bad or
            oversized ``data:`` URL.
    """
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return check_upload_path(value, roots)
    url = _field(value, "url")
    if isinstance(url, str) and url[:5].lower() == "data:":
        return decode_data_url(url)
    path = _field(value, "path")
    if path is None:
        raise InputRefused(PATH_REFUSED)
    return check_upload_path(path, roots)


def file_inputs(value: Any, roots: Iterable[Path]) -> list[str]:
    """The files of a Search request as checked upload paths (``[]`` for none).

    ``value``: what Gradio received for a ``gr.File`` (one file dict or a list of them) or the
    preprocessed path(s). File types are not judged here: the pipeline skips, with a notice, any
    file that is not an image it can use.

    Raises:
        InputRefused: any path outside ``roots``.
    """
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        path = item if isinstance(item, (str, os.PathLike)) else _field(item, "path")
        out.append(check_upload_path(path, roots))
    return out


# --------------------------------------------------------------------------------------------
# Blocks


def _add_file_meta(value: Any) -> Any:
    """Mark every ``{"path": str}`` dict as Gradio file data (so Gradio checks where it is)."""
    if isinstance(value, list):
        return [_add_file_meta(v) for v in value]
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) and value.get("meta") != _FILE_META:
            return {**value, "meta": dict(_FILE_META)}
        return value
    return value


class GuardedBlocks(gr.Blocks):
    """``gr.Blocks`` whose input errors are the app's own messages.

    ``refusals`` maps an event's ``api_name`` to the message shown when Gradio cannot read that
    event's inputs (anything but :class:`InputRefused`, which already carries the app's message);
    a path Gradio refuses gets :data:`PATH_REFUSED`, like the app's own check.
    """

    def __init__(self, *args: Any, refusals: Mapping[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.refusals: dict[str, str] = dict(refusals or {})

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any):
        files = (gr.Image, gr.File)
        blocks = list(getattr(block_fn, "inputs", []))
        inputs = [
            _add_file_meta(v) if i < len(blocks) and isinstance(blocks[i], files) else v
            for i, v in enumerate(inputs)
        ]
        try:
            return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
        except InputRefused:
            raise
        except Exception as err:
            log.warning(
                "inputs of %r refused: %s: %s",
                getattr(block_fn, "api_name", None),
                type(err).__name__,
                " ".join(str(err).split())[:500],
            )
            if isinstance(err, InvalidPathError):
                raise InputRefused(PATH_REFUSED) from None
            names = (getattr(block_fn, "api_name", None), getattr(block_fn, "name", None))
            message = next((self.refusals[n] for n in names if n in self.refusals), None)
            raise InputRefused(message or GENERIC_REFUSAL) from None


__all__ = [
    "DATA_URL_BAD",
    "DATA_URL_TOO_BIG",
    "GuardedBlocks",
    "InputRefused",
    "MAX_UPLOAD_BYTES",
    "PATH_REFUSED",
    "check_upload_path",
    "decode_data_url",
    "file_inputs",
    "image_input",
    "upload_roots",
]
