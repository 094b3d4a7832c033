"""``scripts/deploy_space.py``: the exact upload, a valid Space configuration, one-line errors.

Uploads go to :class:`tests.fake_hub.FakeHub` (a local HTTP server standing in for the Hub, via
``HF_ENDPOINT``); nothing here uses the network.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "deploy_space.py"
TOKEN = "hf_fake_write_token"

_spec = importlib.util.spec_from_file_location("deploy_space", SCRIPT)
deploy_space = importlib.util.module_from_spec(_spec)
sys.modules["deploy_space"] = deploy_space  # dataclasses look their module up there
_spec.loader.exec_module(deploy_space)

FRONT_MATTER = """---
title: test
sdk: gradio
sdk_version: 6.31.0
python_version: "3.10"
app_file: app.py
---

# A test Space
"""
#: A project tree: what must be uploaded, and what must not.
UPLOADED = {
    "app.py": b"print('app')\n",
    "requirements.txt": b"torch\n",
    "README.md": FRONT_MATTER.encode(),
    ".gitattributes": b"*.png filter=lfs diff=lfs merge=lfs -text\n",
    "demo/__init__.py": b"",
    "demo/ui.py": b"x = 1\n",
    "shan/__init__.py": b"",
    "shan/detect/vocab/objects_vocab.txt": b"circle\nsquare\n",
    "checkpoints/README.md": b"card\n",
    "checkpoints/shan/config.json": b"{}\n",
    "checkpoints/shan/model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(256),
    "checkpoints/detector/detector.safetensors": bytes(range(256)) * 8,
    "assets/toy_01.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
    "assets/examples.json": b"[]\n",
}
NOT_UPLOADED = {
    "tests/test_x.py": b"",
    "benchmarks/bench.py": b"",
    "data/f30k_precomp/test_ims.npy": bytes(16),
    "runs/shan/last/model.safetensors": bytes(16),
    "scripts/test.sh": b"",
    "docs/API.md": b"",
    "pyproject.toml": b"",
    "notes.txt": b"",
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".gradio/flagged/x.csv": b"",
    ".venv/lib/site.py": b"",
    "demo/__pycache__/ui.cpython-311.pyc": bytes(8),
    "shan/__pycache__/x.pyc": bytes(8),
    "shan.egg-info/PKG-INFO": b"",
    "checkpoints/.cache/huggingface/x.lock": b"",
}


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "project", {**UPLOADED, **NOT_UPLOADED})


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    base = dict(os.environ)
    base.pop("HF_HUB_OFFLINE", None)  # tests/conftest.py sets it; a deploy needs the (fake) Hub
    base.pop("HF_TOKEN", None)
    base["HF_HUB_DISABLE_XET"] = "1"  # the fake Hub speaks git-LFS, not Xet
    base["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    base.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base,
    )


def hub_env(hub: FakeHub, tmp_path: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home")}
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


# ------------------------------------------------------------------------------------ the upload


def test_upload_files_is_exactly_the_app(project):
    files = deploy_space.upload_files(project)
    assert [f.path for f in files] == sorted(UPLOADED)
    by_path = {f.path: f for f in files}
    for rel, data in UPLOADED.items():
        assert by_path[rel].size == len(data)
    assert {f.path for f in files if f.binary} == {
        "checkpoints/shan/model.safetensors",
        "checkpoints/detector/detector.safetensors",
        "assets/toy_01.png",
    }


def test_dry_run_lists_paths_and_sizes_offline_without_a_token(
    project, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = deploy_space.main(["me/demo", "--dry-run", "--root", str(project)])
    out = capsys.readouterr().out
    assert rc == 0
    listed = re.findall(r"^\s*[\d.]+ (?:B|KiB|MiB)\s+(?:binary|text)\s+(\S+)$", out, re.M)
    assert listed == sorted(UPLOADED)
    assert f"total: {len(UPLOADED)} files, 3 binary" in out
    assert "2.0 KiB  binary  checkpoints/detector/detector.safetensors" in out
    assert "nothing uploaded" in out


def test_deploy_to_fake_hub_uploads_exactly_the_listing(project, tmp_path):
    with FakeHub(TOKEN) as hub:
        proc = run_script("me/demo", "--root", str(project), env=hub_env(hub, tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert f"deployed: {hub.endpoint}/spaces/me/demo" in proc.stdout
        space = hub.repo("me/demo", "space")
    assert space.sdk == "gradio" and not space.private
    assert space.files == UPLOADED  # exact paths and bytes
    # binaries went through large-file storage (the Hub refuses them as plain blobs)
    assert space.lfs_paths == {p for p, d in UPLOADED.items() if b"\0" in d}
    assert len(space.commits) == 1


def test_redeploy_with_prune_removes_stale_files_only(project, tmp_path):
    with FakeHub(TOKEN) as hub:
        env = hub_env(hub, tmp_path)
        assert run_script("me/demo", "--root", str(project), env=env).returncode == 0
        space = hub.repo("me/demo", "space")
        space.files["notes/added-on-the-hub.md"] = b"kept: outside the uploaded paths\n"
        (project / "demo" / "ui.py").unlink()
        proc = run_script("me/demo", "--root", str(project), "--prune", env=env)
        assert proc.returncode == 0, proc.stderr
    assert "demo/ui.py" not in space.files
    assert "notes/added-on-the-hub.md" in space.files
    assert space.commits[-1]["deleted"] == ["demo/ui.py"]
    assert set(space.files) == (set(UPLOADED) - {"demo/ui.py"}) | {"notes/added-on-the-hub.md"}


def test_this_repository_deploys_and_its_space_card_is_valid(tmp_path):
    """The real repository: upload == dry-run listing == the files git knows under those paths."""
    from huggingface_hub import RepoCard, SpaceCard, SpaceCardData

    files = deploy_space.upload_files(REPO)
    listed = {f.path for f in files}
    if shutil.which("git") and (REPO / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *deploy_space.ALLOW_PATTERNS],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        known = {p for p in out if p and (REPO / p).is_file()}
        assert listed == known
    for forbidden in ("tests/", "benchmarks/", "data/", "runs/", ".git/", "scripts/"):
        assert not any(p.startswith(forbidden) for p in listed), forbidden
    assert {"app.py", "requirements.txt", "README.md", "checkpoints/shan/model.safetensors"} <= (
        listed
    )
    with FakeHub(TOKEN) as hub:
        proc = run_script("me/shan", env=hub_env(hub, tmp_path))
        assert proc.returncode == 0, proc.stderr
        space = hub.repo("me/shan", "space")
    assert set(space.files) == listed
    assert {p for p in listed if p.endswith((".safetensors", ".png"))} <= space.lfs_paths
    for p in ("README.md", "app.py", "checkpoints/shan/model.safetensors"):
        assert space.files[p] == (REPO / p).read_bytes()
    # the README as it arrived in the Space is a valid Space card
    card = RepoCard(space.files["README.md"].decode())
    data = SpaceCardData(**card.data.to_dict())
    assert data.sdk == "gradio" and data.app_file in space.files
    assert SpaceCard(space.files["README.md"].decode()).data.sdk == "gradio"


# ----------------------------------------------------------------------- will the Space run?


def test_front_matter_fits_the_project():
    from huggingface_hub import SpaceCard
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    data = SpaceCard.load(REPO / "README.md").data
    assert data.sdk == "gradio"
    assert data.app_file == "app.py" and (REPO / data.app_file).is_file()
    assert str(data.python_version) == "3.10"  # the oldest Python the code supports
    pyproject = (REPO / "pyproject.toml").read_text()
    requires_python = re.search(r'requires-python\s*=\s*"([^"]+)"', pyproject).group(1)
    assert "3.10" in SpecifierSet(requires_python)
    reqs = [
        Requirement(line.split("#")[0].strip())
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    gradio = next(r for r in reqs if r.name == "gradio")
    assert str(data.sdk_version) in gradio.specifier  # Spaces installs exactly sdk_version


def _unguarded_imports(tree: ast.AST) -> set[str]:
    """Top-level module names imported outside ``try: ... except ImportError`` blocks."""
    found: set[str] = set()

    def guarded(handlers: list[ast.ExceptHandler]) -> bool:
        names = set()
        for h in handlers:
            for t in h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]:
                names.add(getattr(t, "id", None))
        return bool(names & {"ImportError", "ModuleNotFoundError", "Exception", None})

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and guarded(node.handlers):
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_requirements_name_every_third_party_import_of_the_upload():
    """What the Space installs (requirements.txt) covers every import of the uploaded code."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    files = [f.path for f in deploy_space.upload_files(REPO) if f.path.endswith(".py")]
    local = {p.split("/")[0].removesuffix(".py") for p in files}
    imports: dict[str, str] = {}
    for rel in files:
        for mod in _unguarded_imports(ast.parse((REPO / rel).read_text(), rel)):
            if mod not in sys.stdlib_module_names and mod not in local:
                imports.setdefault(mod, rel)
    assert {"torch", "gradio", "numpy"} <= set(imports)  # the scan sees the app's imports
    required = {
        canonicalize_name(Requirement(line.split("#")[0].strip()).name)
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    }
    dists = importlib.metadata.packages_distributions()
    missing = {
        mod: rel
        for mod, rel in imports.items()
        if not {canonicalize_name(d) for d in dists.get(mod, [mod])} & required
    }
    assert not missing, f"imported but not in requirements.txt: {missing}"


# ------------------------------------------------------------------------------ one-line errors


def test_invalid_space_card_is_refused_before_any_request(project, tmp_path):
    (project / "README.md").write_text("---\nsdk: docker\napp_file: main.py\n---\n# x\n")
    with FakeHub(TOKEN) as hub:
        proc = run_script("me/demo", "--root", str(project), env=hub_env(hub, tmp_path))
        requests = list(hub.requests)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1
    assert "sdk is 'docker'" in line and "app_file 'main.py' is not in the upload" in line
    assert requests == []


def test_no_token_is_one_line(project, tmp_path):
    with FakeHub(TOKEN) as hub:
        proc = run_script("me/demo", "--root", str(project), env=hub_env(hub, tmp_path, None))
        assert hub.requests == []
    assert proc.returncode == 1
    assert "no Hugging Face token" in one_error_line(proc.stderr)


def test_wrong_token_is_one_line(project, tmp_path):
    with FakeHub(TOKEN) as hub:
        env = hub_env(hub, tmp_path, None)
        proc = run_script("me/demo", "--root", str(project), "--token", "hf_wrong", env=env)
        assert hub.repos == {}
    assert proc.returncode == 1
    assert "refused the token (HTTP 401)" in one_error_line(proc.stderr)


def test_unreachable_hub_is_one_line(project, tmp_path):
    from tests.app_fixtures import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "h"), "HF_TOKEN": TOKEN}
    t0 = time.perf_counter()
    proc = run_script("me/demo", "--root", str(project), env=env)
    assert proc.returncode == 1
    assert f"cannot reach the Hub at {endpoint}" in one_error_line(proc.stderr)
    assert time.perf_counter() - t0 < 60


def test_offline_mode_is_one_line(project, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "h"), "HF_TOKEN": TOKEN}
    proc = run_script("me/demo", "--root", str(project), env=env)
    assert proc.returncode == 1
    assert "HF_HUB_OFFLINE is set" in one_error_line(proc.stderr)


@pytest.mark.parametrize("repo_id", ["no-owner", "a/b/c", "bad id/x"])
def test_bad_space_id_is_one_line(repo_id, project):
    proc = run_script(repo_id, "--root", str(project), "--dry-run")
    assert proc.returncode == 1
    assert "bad Space id" in one_error_line(proc.stderr)


# ------------------------------------------------------------------ the uploaded app starts


@pytest.mark.slow
def test_the_uploaded_files_alone_run_the_app(tmp_path):
    """Copy exactly the upload into an empty folder and start the app there as a Space would
    (models loaded, UI built, one example matched): nothing outside the upload (tests,
    pyproject, an installed ``shan``) is needed. Serving over HTTP is tested in
    ``tests/test_app_client.py``."""
    space = tmp_path / "space"
    for f in deploy_space.upload_files(REPO):
        (space / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f.path, space / f.path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import json, app, demo, shan\n"
        "from demo.pipeline import DemoPipeline, load_examples\n"
        "from demo.ui import build_demo\n"
        "pipe = DemoPipeline.from_checkpoint(str(app.DEFAULT_CHECKPOINT), device='cpu')\n"
        "examples = load_examples(app.EXAMPLES)\n"
        "build_demo(pipe, examples)\n"
        "caps = examples[0].all_captions\n"
        "r = pipe.match(examples[0].image, caps)\n"
        "files = [app.__file__, demo.__file__, shan.__file__]\n"
        "print(json.dumps({'files': files, 'scored': r.scores.shape[0], 'captions': len(caps)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=space, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(Path(p).resolve().is_relative_to(space.resolve()) for p in out["files"]), out
    assert out["scored"] == out["captions"] >= 2
