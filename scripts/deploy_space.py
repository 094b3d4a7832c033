"""Deploy the app to a Hugging Face Space in one command.

    python scripts/deploy_space.py OWNER/NAME --dry-run   # list what would be uploaded, with sizes
    HF_TOKEN=hf_... python scripts/deploy_space.py OWNER/NAME

Creates the Space if needed (``HfApi.create_repo(..., repo_type="space", space_sdk="gradio",
exist_ok=True)``) and uploads the files the app needs through the Hub's HTTP API
(``HfApi.upload_folder``), which stores binary files (checkpoints, images) as large files itself —
a plain ``git push`` of this repository is refused by the Hub because its history holds those
files as ordinary git blobs (see ``docs/DEPLOY.md`` for the git route).

What is uploaded (:data:`ALLOW_PATTERNS` minus :data:`IGNORE_PATTERNS`, patterns relative to the
repository root): ``app.py``, ``requirements.txt``, ``README.md`` (its YAML front matter is the
Space configuration), ``.gitattributes``, ``demo/``, ``shan/``, ``checkpoints/``, ``assets/``.
Never tests, benchmarks, data, runs, caches or ``.git``. Before any request the Space
configuration is checked locally (front matter parses as a Space card with ``sdk: gradio``, its
``app_file`` and ``requirements.txt`` are in the upload).

The token comes from ``--token``, else ``HF_TOKEN``, else a saved ``hf auth login``; it needs
write access. ``HF_ENDPOINT`` selects another Hub (the tests use a local fake one). Errors end
the command with exit code 1 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What the Space needs, relative to the repository root (``fnmatch`` patterns; ``*`` also
#: matches ``/``, so ``demo/*`` is the whole folder).
ALLOW_PATTERNS = [
    "app.py",
    "requirements.txt",
    "README.md",
    ".gitattributes",
    "demo/*",
    "shan/*",
    "checkpoints/*",
    "assets/*",
]
#: Never uploaded, even inside an allowed folder: byte code, caches, editor and OS leftovers.
IGNORE_PATTERNS = [
    "*__pycache__*",
    "*.pyc",
    "*.pyo",
    "*.egg-info*",
    "*/.ipynb_checkpoints/*",
    "*.DS_Store",
    "*~",
    "*.swp",
    "*/.cache/*",
    ".git",
    ".git/*",
    "*/.git/*",
]
#: Files the Space cannot start without.
REQUIRED = ["app.py", "requirements.txt", "README.md"]


class DeployError(Exception):
    """A problem the user must fix; the message is printed as one line."""


@dataclass(frozen=True)
class UploadFile:
    """One file of the upload: its path in the Space (POSIX, relative) and its size in bytes."""

    path: str
    size: int
    binary: bool


def _is_binary(path: Path) -> bool:
    """The Hub's own rule of thumb: a NUL byte in the first 8 KiB marks a binary file."""
    with path.open("rb") as f:
        return b"\0" in f.read(8192)


def upload_files(root: Path = ROOT) -> list[UploadFile]:
    """The files ``upload_folder`` will send for ``root``, sorted, with sizes.

    The same ``huggingface_hub.utils.filter_repo_objects`` filter as ``upload_folder`` is applied
    to the same walk, so the dry run lists exactly what a deploy uploads.
    """
    from huggingface_hub.utils import filter_repo_objects

    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DeployError(f"not a directory: {root}")
    rel = {p.relative_to(root).as_posix(): p for p in sorted(root.glob("**/*")) if p.is_file()}
    kept = filter_repo_objects(rel, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS)
    return [UploadFile(r, rel[r].stat().st_size, _is_binary(rel[r])) for r in kept]


def check_space(root: Path, files: list[UploadFile]) -> list[str]:
    """Problems that would stop the Space from building or starting (empty list: none)."""
    from huggingface_hub import SpaceCard

    names = {f.path for f in files}
    problems = [f"{name} is missing" for name in REQUIRED if name not in names]
    if "README.md" not in names:
        return problems
    try:
        card = SpaceCard.load(Path(root) / "README.md")
    except Exception as e:  # yaml errors, a README without front matter
        return [*problems, f"README.md front matter is not a valid Space card: {_one_line(e)}"]
    data = card.data
    if data.sdk != "gradio":
        problems.append(f"README.md front matter: sdk is {data.sdk!r}, expected 'gradio'")
    app_file = data.app_file or "app.py"
    if app_file not in names:
        problems.append(f"README.md front matter: app_file {app_file!r} is not in the upload")
    if not data.sdk_version:
        problems.append("README.md front matter: no sdk_version")
    if data.python_version is not None and not str(data.python_version).startswith("3."):
        problems.append(f"README.md front matter: python_version {data.python_version!r}")
    if not any(f.path.endswith(".safetensors") for f in files):
        problems.append("no checkpoint (*.safetensors) in the upload: the app has no model")
    return problems


def format_listing(files: list[UploadFile]) -> str:
    """A table of the upload: size, kind, path, and a total line."""
    lines = [f"{_human(f.size):>10}  {'binary' if f.binary else 'text  '}  {f.path}" for f in files]
    total = sum(f.size for f in files)
    n_bin = sum(f.binary for f in files)
    lines.append(
        f"{_human(total):>10}  total: {len(files)} files, {n_bin} binary "
        f"(stored by the Hub as large files, {_human(sum(f.size for f in files if f.binary))})"
    )
    return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def _token(cli_token: str | None) -> str:
    token = cli_token or os.environ.get("HF_TOKEN")
    if not token:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except ImportError:  # very old huggingface_hub
            token = None
    if not token:
        raise DeployError(
            "no Hugging Face token: set HF_TOKEN or pass --token (a write token from "
            "https://huggingface.co/settings/tokens)"
        )
    return token


def deploy(
    repo_id: str,
    token: str,
    root: Path = ROOT,
    private: bool = False,
    prune: bool = False,
    message: str = "Deploy the SHAN demo",
) -> str:
    """Create the Space (if needed) and upload :func:`upload_files`; returns the Space URL.

    ``prune`` also deletes files of the Space that match :data:`ALLOW_PATTERNS` but are no longer
    part of the upload (a module that was removed here, an old checkpoint file).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(
        repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
    )
    api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=str(root),
        allow_patterns=list(ALLOW_PATTERNS),
        ignore_patterns=list(IGNORE_PATTERNS),
        delete_patterns=list(ALLOW_PATTERNS) if prune else None,
        commit_message=message,
    )
    return str(url)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Deploy the SHAN demo to a Hugging Face Space (creates it if needed).",
    )
    p.add_argument("repo_id", help="the Space, OWNER/NAME")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    p.add_argument("--token", default=None, help="write token (default: HF_TOKEN, then login)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument(
        "--prune",
        action="store_true",
        help="also delete Space files under the uploaded paths that no longer exist here",
    )
    p.add_argument("--message", default="Deploy the SHAN demo", help="commit message")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(args.repo_id)
        except ValueError as e:
            raise DeployError(f"bad Space id {args.repo_id!r}: {_one_line(e)}") from None
        if args.repo_id.count("/") != 1:
            raise DeployError(f"bad Space id {args.repo_id!r}: expected OWNER/NAME")
        files = upload_files(args.root)
        problems = check_space(args.root, files)
        if problems:
            raise DeployError("the Space would not run: " + "; ".join(problems))
        if args.dry_run:
            print(format_listing(files))
            print(f"dry run: nothing uploaded to spaces/{args.repo_id}")
            return 0
        token = _token(args.token)
        print(f"uploading {len(files)} files ({_human(sum(f.size for f in files))}) …", flush=True)
        url = deploy(args.repo_id, token, args.root, args.private, args.prune, args.message)
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # network, HTTP and auth errors from huggingface_hub: one line
        print(f"error: {_describe_hub_error(e)}", file=sys.stderr)
        return 1
    print(f"deployed: {url}")
    return 0


def _describe_hub_error(e: BaseException) -> str:
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    name = type(e).__name__
    if name == "OfflineModeIsEnabled":
        return "HF_HUB_OFFLINE is set: unset it to deploy"
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return f"the Hub refused the token (HTTP {status}): it needs write access"
    if status is not None:
        return f"the Hub at {endpoint} answered HTTP {status}: {_one_line(e)}"
    if "connect" in name.lower() or "timeout" in name.lower() or isinstance(e, OSError):
        return f"cannot reach the Hub at {endpoint} ({name}: {_one_line(e)})"
    return f"deploy failed: {name}: {_one_line(e)}"


if __name__ == "__main__":
    sys.exit(main())
