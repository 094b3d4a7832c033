#!/usr/bin/env bash
# The README's test command: installs everything the tests need on a fresh machine, then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch/torchvision first, pinned to the builds that lie on this kind of machine's disk (pip takes them
# from there; elsewhere it downloads them).
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$PY" -m pip install -q -r requirements-dev.txt
"$PY" -m pip install -q --no-deps -e .

# Headless Chromium for the real-browser test (Debian package); skipped where we cannot install it.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not installed and not root: the browser test will be skipped" >&2
  fi
fi

"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m pytest -q "$@"
