"""Replay the security/reliability probe list against a running app; one line per probe.

    python benchmarks/probe_app.py --url http://127.0.0.1:7860    # an app that is already running
    python benchmarks/probe_app.py --start                        # start ``python app.py`` itself
    python benchmarks/probe_app.py --start --checkpoint DIR --port 7861

Each probe sends what a hostile or careless client could send (server paths with and without
Gradio's ``meta`` marker, ``data:`` URLs that are broken, huge or decompression bombs, extremely
thin images, direct calls of events meant to follow a click) and checks the app's answer: the
app's own one-line message, no server path, no echoed input, no Python exception text, a refused
path answered exactly like a missing one, and the server still serving afterwards. Prints
``PASS``/``FAIL``, the seconds the probe took and the message the app answered; exits 1 if any
probe fails. Not a test: ``tests/test_app_client.py`` holds the regression tests; this script is
for checking a deployed app.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
META = {"_type": "gradio.FileData"}
# text that must never reach a client
LEAKS = ("Traceback", "/tmp/", "Errno", "PIL.", "UnidentifiedImageError", "Could not preprocess",
         "NoneType", "data:image", "BytesIO", "gradio cache", "list of choices")  # fmt: skip


class Answer:
    """One event's outcome: ``ok`` with ``data``, or not ok with the error ``message``."""

    def __init__(self, ok: bool, data: Any = None, message: str = "") -> None:
        self.ok, self.data, self.message = ok, data, message


class App:
    """The app's HTTP API: ``/gradio_api/upload`` and ``/gradio_api/call/<event>`` (raw JSON)."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)
        self.session = f"probe{os.getpid()}{int(time.time())}"

    def upload(self, name: str, data: bytes) -> dict:
        r = self.http.post(f"{self.url}/gradio_api/upload", files={"files": (name, data)})
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": name, "meta": META}

    def call(self, event: str, *data: Any, session: bool = False) -> Answer:
        body: dict[str, Any] = {"data": list(data)}
        if session:
            body["session_hash"] = self.session
        r = self.http.post(f"{self.url}/gradio_api/call/{event}", json=body)
        if r.status_code != 200:
            return Answer(False, message=f"HTTP {r.status_code}: {r.text[:200]}")
        event_id = r.json()["event_id"]
        kind, payload = "", None
        with self.http.stream("GET", f"{self.url}/gradio_api/call/{event}/{event_id}") as s:
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = json.loads(line.split(":", 1)[1])
                    break
        if kind == "complete":
            return Answer(True, data=payload)
        if isinstance(payload, dict):
            return Answer(False, message=str(payload.get("error")))
        return Answer(False, message=str(payload))


def png(size: tuple[int, int], mode: str = "RGB", colour: Any = "white") -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, size, colour)
    if mode == "RGB" and min(size) >= 40:
        img.paste((220, 40, 40), (10, 10, 40, 40))
    img.save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def leaks(text: str) -> list[str]:
    return [w for w in LEAKS if w in text]


def probes(app: App, scratch: Path) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    """``(name, run)`` pairs; ``run()`` returns ``(passed, what the app answered)``."""
    good = app.upload("scene.png", png((240, 160)))
    outside = scratch / "outside.png"
    outside.write_bytes(png((64, 64)))
    refusals: dict[str, str] = {}

    def refused(name: str, payload: Any) -> Callable[[], tuple[bool, str]]:
        def run() -> tuple[bool, str]:
            a = app.call("match", payload, "a red circle")
            refusals[name] = a.message
            same = len(set(refusals.values())) == 1
            passed = not a.ok and not leaks(a.message) and same and str(outside) not in a.message
            return passed, a.message if same else f"differs from another refusal: {a.message}"

        return run

    def message(event: str, *data: Any, want: str = "", session: bool = False):
        def run() -> tuple[bool, str]:
            a = app.call(event, *data, session=session)
            text = a.message
            return (not a.ok and not leaks(text) and want.lower() in text.lower()), text

        return run

    def thin(size: tuple[int, int]):
        def run() -> tuple[bool, str]:
            f = app.upload(f"thin{size[0]}x{size[1]}.png", png(size))
            a = app.call("match", f, "a red circle")
            return (not a.ok and "too thin" in a.message and not leaks(a.message)), a.message

        return run

    def search_skips_thin() -> tuple[bool, str]:
        f = app.upload("thin1x5000.png", png((1, 5000)))
        a = app.call("search", [f, good], "a red circle")
        if not a.ok:
            return False, a.message
        notices = str(a.data[0])
        return "thin1x5000.png" in notices and len(a.data[1]) == 1, notices

    def bomb_upload() -> tuple[bool, str]:
        f = app.upload("bomb.png", png((9000, 9000), mode="1", colour=0))
        t0 = time.perf_counter()
        a = app.call("match", f, "a red circle")
        dt = time.perf_counter() - t0
        return (not a.ok and "pixels" in a.message and dt < 2.0), f"{a.message} ({dt:.2f} s)"

    def bomb_data_url() -> tuple[bool, str]:
        a = app.call("match", {"url": data_url(png((9000, 9000), mode="1", colour=0))}, "a circle")
        return (not a.ok and "pixels" in a.message and not leaks(a.message)), a.message

    def huge_data_url() -> tuple[bool, str]:
        body = png((64, 64)) + b"\0" * (25 * 1024 * 1024)
        a = app.call("match", {"url": data_url(body)}, "a red circle")
        return (not a.ok and "20 MB" in a.message), a.message

    def good_data_url() -> tuple[bool, str]:
        a = app.call("match", {"url": data_url(png((240, 160)))}, "a red circle")
        return a.ok, "matched" if a.ok else a.message

    def direct_explain_word() -> tuple[bool, str]:
        a = app.call("match", good, "a red circle\na blue square", session=True)
        if not a.ok:
            return False, f"match failed: {a.message}"
        b = app.call("explain_word", 0, 999, session=True)
        return (not b.ok and not leaks(b.message)), b.message

    def file_route() -> tuple[bool, str]:
        """Gradio's file route serves no server file, and answers alike for missing ones."""
        answers = set()
        for path in (str(outside), "/etc/hostname", str(REPO / "app.py"), "/no/such/file.png"):
            r = app.http.get(f"{app.url}/gradio_api/file={path}")
            answers.add(r.status_code)
        return answers <= {403, 404} and len(answers) == 1, f"HTTP {sorted(answers)}"

    def still_serving() -> tuple[bool, str]:
        a = app.call("match", good, "a red circle\na blue square")
        return (a.ok and len(a.data[1]["data"]) == 2), "served" if a.ok else a.message

    return [
        ("finding 1: server image path, no meta", refused("exists", {"path": str(outside)})),
        ("finding 1: missing path, no meta", refused("missing", {"path": "/no/such/file.png"})),
        ("finding 1: server non-image, no meta", refused("etc", {"path": "/etc/hostname"})),
        ("finding 1: server path with meta", refused("meta", {"path": str(outside), "meta": META})),
        ("finding 1: URL only (no fetch)", refused("url", {"url": "http://127.0.0.1:9/x.png"})),
        (
            "finding 1: search, server path",
            message("search", [{"path": str(outside)}], "a circle", want="upload"),
        ),
        ("finding 1: the file route, server paths", file_route),
        ("finding 4: 1×5000 image", thin((1, 5000))),
        ("finding 4: 5000×4 image", thin((5000, 4))),
        ("finding 4: 10000×20 image", thin((10000, 20))),
        ("finding 4: search skips a thin file", search_skips_thin),
        (
            "finding 5: a text file as the image",
            message(
                "match", app.upload("notes.png", b"not an image"), "a circle", want="not an image"
            ),
        ),
        (
            "finding 5: a broken data: URL",
            message(
                "match", {"url": "data:image/png;base64,!!SECRET!!"}, "a circle", want="pasted"
            ),
        ),
        ("finding 5: /choose_word called directly", message("choose_word", 0)),
        ("finding 5: /explain_caption, no session", message("explain_caption", "zz")),
        ("finding 5: /explain_word, word 999", direct_explain_word),
        ("finding 7: 25 MB data: URL", huge_data_url),
        ("finding 7: 9000² 1-bit PNG upload", bomb_upload),
        ("finding 7: 9000² 1-bit PNG data: URL", bomb_data_url),
        ("a good data: URL still works", good_data_url),
        ("the server still serves", still_serving),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(port: int, checkpoint: str | None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--device", "cpu"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = log.open("w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_up(url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/gradio_api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no app answered at {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running app, e.g. http://127.0.0.1:7860")
    p.add_argument("--start", action="store_true", help="start python app.py for the probes")
    p.add_argument("--checkpoint", help="with --start: the checkpoint to serve")
    p.add_argument("--port", type=int, default=0, help="with --start: port (default: a free one)")
    args = p.parse_args(argv)
    if bool(args.url) == bool(args.start):
        p.error("give either --url URL or --start")
    proc = None
    with tempfile.TemporaryDirectory(prefix="shan-probe-") as tmp:
        scratch = Path(tmp)
        if args.start:
            port = args.port or _free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start_app(port, args.checkpoint, scratch / "app.log")
        else:
            url = args.url
        try:
            wait_until_up(url, proc)
            app = App(url)
            failed = 0
            for name, run in probes(app, scratch):
                t0 = time.perf_counter()
                try:
                    ok, said = run()
                except Exception as err:  # a probe that cannot run counts as failed
                    ok, said = False, f"probe error: {type(err).__name__}: {err}"
                failed += not ok
                said = " ".join(str(said).split())
                print(f"{'PASS' if ok else 'FAIL'}  {time.perf_counter() - t0:5.2f} s  "
                      f"{name:<42} {said[:150]}", flush=True)  # fmt: skip
            print(f"{failed} of the probes failed" if failed else "all probes passed")
            return 1 if failed else 0
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
