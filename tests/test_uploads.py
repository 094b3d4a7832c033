"""demo.uploads: the one path check, data: URLs, and the raw inputs of the Match/Search events."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from demo import uploads
from demo.uploads import (
    DATA_URL_BAD,
    DATA_URL_TOO_BIG,
    MAX_UPLOAD_BYTES,
    PATH_REFUSED,
    InputRefused,
    check_upload_path,
    decode_data_url,
    file_inputs,
    image_input,
    upload_roots,
)


@pytest.fixture()
def roots(tmp_path) -> tuple[Path, ...]:
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "a.png").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.png").write_bytes(b"x")
    return upload_roots([tmp_path / "uploads"])


def _refusal(fn, *args) -> str:
    with pytest.raises(InputRefused) as info:
        fn(*args)
    return info.value.message


def test_upload_roots_hold_gradios_upload_folder(tmp_path):
    from gradio.utils import get_upload_folder

    r = upload_roots([tmp_path])
    assert Path(os.path.realpath(get_upload_folder())) in r and tmp_path.resolve() in r


def test_a_file_in_a_root_is_accepted(roots, tmp_path):
    path = tmp_path / "uploads" / "a.png"
    assert check_upload_path(str(path), roots) == str(path.resolve())
    assert check_upload_path(path, roots) == str(path.resolve())


def test_everything_else_gets_one_message_whether_it_exists_or_not(roots, tmp_path):
    up = tmp_path / "uploads"
    cases = [
        tmp_path / "elsewhere" / "secret.png",  # exists, outside
        tmp_path / "elsewhere" / "missing.png",  # missing, outside
        up / "missing.png",  # missing, inside
        up,  # a directory
        up / ".." / "elsewhere" / "secret.png",  # climbs out
        "/etc/hostname",
        "",
        "a\x00b",
    ]
    os.symlink(tmp_path / "elsewhere" / "secret.png", up / "link.png")
    cases.append(up / "link.png")  # a link inside pointing outside
    messages = {_refusal(check_upload_path, str(c), roots) for c in cases}
    messages |= {_refusal(check_upload_path, c, roots) for c in (None, 3, {"path": "x"})}
    assert messages == {PATH_REFUSED}
    assert "secret" not in PATH_REFUSED and str(tmp_path) not in PATH_REFUSED


def test_data_urls():
    assert decode_data_url("data:image/png;base64," + base64.b64encode(b"abc").decode()) == b"abc"
    for bad in ("data:image/png;base64,!!SECRET!!", "data:,plain", "data:image/png;base64,"):
        assert _refusal(decode_data_url, bad) == DATA_URL_BAD  # never echoes the URL


def test_oversized_data_url_refused_before_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an oversized data URL")

    monkeypatch.setattr(uploads.base64, "b64decode", no_decoding)
    body = "A" * (4 * (MAX_UPLOAD_BYTES // 3) + 8)
    assert _refusal(decode_data_url, "data:image/png;base64," + body) == DATA_URL_TOO_BIG
    assert _refusal(decode_data_url, "data:image/png;base64,AAAA", 2) == DATA_URL_TOO_BIG


def test_image_input_forms(roots, tmp_path):
    good = str((tmp_path / "uploads" / "a.png").resolve())
    assert image_input(None, roots) is None
    assert image_input(good, roots) == good
    assert image_input({"path": good, "meta": {"_type": "gradio.FileData"}}, roots) == good
    url = "data:image/png;base64," + base64.b64encode(b"png!").decode()
    assert image_input({"path": None, "url": url}, roots) == b"png!"
    for bad in ({"url": "http://127.0.0.1:9/x.png"}, {"path": "/etc/hostname"}, {}, 7):
        assert _refusal(image_input, bad, roots) == PATH_REFUSED


def test_file_inputs_forms(roots, tmp_path):
    good = str((tmp_path / "uploads" / "a.png").resolve())
    assert file_inputs(None, roots) == []
    assert file_inputs([{"path": good}, good], roots) == [good, good]
    assert file_inputs({"path": good}, roots) == [good]
    secret = str(tmp_path / "elsewhere" / "secret.png")
    assert _refusal(file_inputs, [{"path": good}, {"path": secret}], roots) == PATH_REFUSED


def test_file_dicts_get_gradios_meta_so_gradio_checks_them():
    meta = {"_type": "gradio.FileData"}
    value = [{"path": "/x.png"}, {"path": "/y.png", "meta": meta}, {"url": "data:,"}, "text"]
    marked = uploads._add_file_meta(value)
    assert marked[0] == {"path": "/x.png", "meta": meta} and marked[1]["meta"] == meta
    assert marked[2] == {"url": "data:,"} and marked[3] == "text"
    assert value[0] == {"path": "/x.png"}  # the caller's data is not changed
