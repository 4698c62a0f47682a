#!/usr/bin/env bash
# Create .venv and install the project with its test tools. Idempotent: a second run is quick.
#
#   PROJECT_EXTRAS  the extras to install (default dev,cpu,openvino,pt2). Exactly one of them must pick the ONNX
#                   Runtime package: cpu (onnxruntime, x86 and ARM) or gpu (onnxruntime-gpu, CUDA).
#                   The two packages share one module; switching an existing .venv from one to the
#                   other removes the old one first (pip would leave both, and the CPU one would win).
#   PYTHON          the interpreter that makes .venv (default: TORCH_PYTHON if set, else python3)
#   TORCH_PYTHON    an interpreter that already imports torch (e.g. a CUDA build on a GPU host):
#                   .venv then sees its packages (a .pth file) instead of installing torch again
#                   (scripts/gpu-check.sh sets it when python3 already has torch with CUDA).
#   Offline hosts:  PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder of wheels>; pip reads both, and the
#                   project is then built with the environment's own setuptools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-${TORCH_PYTHON:-python3}}
EXTRAS=${PROJECT_EXTRAS:-dev,cpu,openvino,pt2}

# The ONNX Runtime extras (pyproject.toml) and the package each one installs; every other ONNX
# Runtime package (bench/runtimes/onnxruntime.py, ORT_DISTRIBUTIONS) is removed when found.
ORT_PACKAGES=(onnxruntime onnxruntime-gpu onnxruntime-directml onnxruntime-openvino onnxruntime-qnn onnxruntime-rocm
              onnxruntime-migraphx onnxruntime-training onnxruntime-cann onnxruntime-vitisai onnxruntime-coreml
              onnxruntime-silicon onnxruntime-azure)
ORT_EXTRAS=()
IFS=, read -r -a _extras <<< "$EXTRAS"
for e in "${_extras[@]}"; do
  case "$e" in cpu|gpu) ORT_EXTRAS+=("$e") ;; esac
done
if [ "${#ORT_EXTRAS[@]}" -ne 1 ]; then
  echo "setup.sh: PROJECT_EXTRAS=$EXTRAS must name exactly one ONNX Runtime extra, cpu (x86, ARM) or gpu (CUDA): ONNX Runtime supports one package per environment" >&2
  exit 2
fi
if [ "${ORT_EXTRAS[0]}" = gpu ]; then ORT_WANTED=onnxruntime-gpu; else ORT_WANTED=onnxruntime; fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  if [ -n "${TORCH_PYTHON:-}" ]; then
    # Appended after .venv's own site-packages: what is installed here wins, the rest is reused.
    "$TORCH_PYTHON" -c 'import os, site; print("\n".join(p for p in site.getsitepackages() if os.path.isdir(p)))' \
      > "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_torch_python.pth"
  fi
fi
. .venv/bin/activate
PIP_OPTS=(-q)
if [ -z "${PIP_NO_INDEX:-}" ]; then
  python -m pip install -q --upgrade pip
elif python -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
  PIP_OPTS+=(--no-build-isolation)  # offline: build with the setuptools already here (else from PIP_FIND_LINKS)
fi
if python -c "import torch" 2>/dev/null; then
  :  # any torch >= 2.10 works; one that is there already (TORCH_PYTHON, an earlier run) is kept
elif [ "$(uname -m)" = "x86_64" ]; then
  # Pinned to the releases this workplace serves from local disk; any torch >= 2.10 works. On
  # Linux x86_64 this wheel is a CUDA build (it bundles the CUDA libraries), so a GPU host needs
  # nothing else.
  python -m pip install "${PIP_OPTS[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi

# Remove every ONNX Runtime package of this environment that is not the one wanted, and the wanted
# one too when another sits beside it (they share files: removing one breaks the other).
present=$(python -m pip list --local --format=freeze 2>/dev/null | sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' \
          | tr 'A-Z_.' 'a-z--' | grep -Fx "$(printf '%s\n' "${ORT_PACKAGES[@]}")" || true)
if [ -n "$present" ] && [ "$present" != "$ORT_WANTED" ]; then
  echo "setup.sh: removing $(echo $present) (this environment gets $ORT_WANTED only)"
  python -m pip uninstall -y -q $present
fi
python -m pip install "${PIP_OPTS[@]}" -e ".[$EXTRAS]"
# The start-up check the plugin runs: exactly one ONNX Runtime package.
python -c "import sys; from bench.runtimes.onnxruntime import package_conflict; m = package_conflict(); sys.exit(m and 'setup.sh: ' + m)"
