#!/usr/bin/env bash
# Create .venv and install the project with its test tools. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ "$(uname -m)" = "x86_64" ]; then
  # Pinned to the releases this workplace serves from local disk; any torch >= 2.10 works.
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
python -m pip install -q -e ".[${PROJECT_EXTRAS:-dev}]"  # the CI workflow adds gpu on CUDA runners
