"""A local stand-in for the Hugging Face Hub's HTTP API, enough for ``create_repo`` and uploads.

``huggingface_hub`` reads its server from ``HF_ENDPOINT``; pointing it at :class:`FakeHub` lets
tests deploy and push without a network. The fake keeps each repository's files in memory and
follows the Hub's rules that matter here:

* ``POST /api/repos/create`` — 409 when the repository exists (``exist_ok`` handles it).
* ``POST /api/validate-yaml`` — the README front matter must be a YAML mapping.
* ``POST /api/{type}s/{id}/preupload/{rev}`` — a file is sent as a large file (``lfs``) when its
  sample holds a NUL byte (binary) or it is over 10 MB, as a ``regular`` git blob otherwise.
* ``POST /{prefix}{id}.git/info/lfs/objects/batch`` and ``PUT /lfs-upload/{oid}`` — the basic
  git-LFS transfer; the stored content must hash to its sha256.
* ``POST /api/{type}s/{id}/commit/{rev}`` — refuses a binary file sent as a regular blob (the
  Hub's "contains binary files" rejection) and a large file whose content was never uploaded.
* ``GET /api/{type}s/{id}/tree/{rev}`` — the file listing (``list_repo_files``).

Every write needs ``Authorization: Bearer <token>``. Xet storage is not imitated: run clients
with ``HF_HUB_DISABLE_XET=1`` so they use the git-LFS protocol.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import yaml

LFS_THRESHOLD = 10 * 1024 * 1024
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


@dataclass
class FakeRepo:
    """One repository: its files (path → bytes), which of them are large files, its commits."""

    repo_type: str
    repo_id: str
    sdk: str | None = None
    private: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[dict] = field(default_factory=list)


class FakeHub:
    """Start with ``with FakeHub(token) as hub:``; ``hub.endpoint`` is the ``HF_ENDPOINT``."""

    def __init__(self, token: str = "hf_fake_write_token") -> None:
        self.token = token
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- life cycle
    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]


def _is_binary(sample: bytes) -> bool:
    return b"\0" in sample


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    # ----------------------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: object = None, headers: dict | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message}, {"X-Error-Message": message})

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _route(self) -> tuple[str, list[str]]:
        path = unquote(urlparse(self.path).path)
        with self.hub.lock:
            self.hub.requests.append((self.command, path))
        return path, [p for p in path.split("/") if p]

    def _find_repo(self, repo_type: str, repo_id: str) -> FakeRepo | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            self._send(
                404,
                {"error": "Repository not found"},
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
        return repo

    # ----------------------------------------------------------------------------- verbs
    def do_GET(self) -> None:  # noqa: N802
        path, parts = self._route()
        # /api/{type}s/{owner}/{name}/tree/{rev}[/subpath]
        if len(parts) >= 6 and parts[0] == "api" and parts[4] == "tree":
            repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
            repo = self._find_repo(repo_type, repo_id)
            if repo is None:
                return
            sub = "/".join(parts[6:])
            listing = [
                {
                    "type": "file",
                    "path": p,
                    "size": len(data),
                    "oid": hashlib.sha1(data).hexdigest(),
                }
                for p, data in sorted(repo.files.items())
                if not sub or p.startswith(sub + "/")
            ]
            self._send(200, listing)
            return
        self._error(404, f"fake hub: no route for GET {path}")

    def do_PUT(self) -> None:  # noqa: N802
        path, parts = self._route()
        body = self._body()
        if len(parts) == 2 and parts[0] == "lfs-upload":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                self._error(400, "content does not match its sha256")
                return
            with self.hub.lock:
                self.hub.lfs_store[oid] = body
            self._send(200, {})
            return
        self._error(404, f"fake hub: no route for PUT {path}")

    def do_POST(self) -> None:  # noqa: N802
        path, parts = self._route()
        body = self._body()
        if path == "/api/validate-yaml":
            self._validate_yaml(body)
        elif path == "/api/repos/create":
            self._create(body)
        elif path.endswith(".git/info/lfs/objects/batch"):
            self._lfs_batch(body)
        elif len(parts) >= 6 and parts[0] == "api" and parts[4] == "preupload":
            self._preupload(parts, body)
        elif len(parts) >= 6 and parts[0] == "api" and parts[4] == "commit":
            self._commit(parts, body)
        else:
            self._error(404, f"fake hub: no route for POST {path}")

    # ----------------------------------------------------------------------------- endpoints
    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        errors = []
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1])
                if meta is not None and not isinstance(meta, dict):
                    errors.append({"message": "front matter is not a mapping"})
            except yaml.YAMLError as e:
                errors.append({"message": f"invalid YAML: {e}"})
        if errors:
            self._send(400, {"errors": errors, "error": errors[0]["message"]})
        else:
            self._send(200, {"errors": [], "warnings": []})

    def _create(self, body: bytes) -> None:
        if not self._authorised():
            return
        req = json.loads(body)
        repo_type = req.get("type") or "model"
        repo_id = f"{req['organization']}/{req['name']}"
        url = f"{self.hub.endpoint}/{_PREFIX[repo_type]}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                self._send(409, {"error": "You already created this repo", "url": url})
                return
            if repo_type == "space" and req.get("sdk") not in ("gradio", "streamlit", "docker"):
                self._error(400, "a Space needs an sdk")
                return
            self.hub.repos[(repo_type, repo_id)] = FakeRepo(
                repo_type,
                repo_id,
                sdk=req.get("sdk"),
                private=req.get("private") is True or req.get("visibility") == "private",
            )
        self._send(200, {"url": url, "name": repo_id})

    def _preupload(self, parts: list[str], body: bytes) -> None:
        if not self._authorised():
            return
        if self._find_repo(parts[1][:-1], f"{parts[2]}/{parts[3]}") is None:
            return
        files = json.loads(body)["files"]
        out = []
        for f in files:
            sample = base64.b64decode(f["sample"])
            lfs = _is_binary(sample) or f["size"] > LFS_THRESHOLD
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                }
            )
        self._send(200, {"files": out, "commitOid": "0" * 40})

    def _lfs_batch(self, body: bytes) -> None:
        if not self._authorised():
            return
        req = json.loads(body)
        objects = []
        for obj in req["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_store:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs-upload/{obj['oid']}"}
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _commit(self, parts: list[str], body: bytes) -> None:
        if not self._authorised():
            return
        repo = self._find_repo(parts[1][:-1], f"{parts[2]}/{parts[3]}")
        if repo is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        added: dict[str, bytes] = {}
        lfs: set[str] = set()
        deleted: list[str] = []
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                if _is_binary(data[:8192]):
                    self._error(
                        400,
                        "Your push was rejected because it contains binary files; "
                        f"{value['path']} must be stored as a large file",
                    )
                    return
                added[value["path"]] = data
            elif key == "lfsFile":
                data = self.hub.lfs_store.get(value["oid"])
                if data is None:
                    self._error(400, f"large file {value['path']} was never uploaded")
                    return
                added[value["path"]] = data
                lfs.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                self._error(400, f"fake hub: unsupported commit operation {key}")
                return
        with self.hub.lock:
            for p in deleted:
                repo.files.pop(p, None)
                repo.lfs_paths.discard(p)
            repo.files.update(added)
            repo.lfs_paths = (repo.lfs_paths - set(added)) | lfs
            repo.commits.append(
                {
                    "summary": header.get("summary"),
                    "added": sorted(added),
                    "lfs": sorted(lfs),
                    "deleted": sorted(deleted),
                }
            )
            oid = hashlib.sha1(str(len(repo.commits)).encode()).hexdigest()
        url = f"{self.hub.endpoint}/{_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        self._send(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})


__all__ = ["FakeHub", "FakeRepo", "LFS_THRESHOLD"]
