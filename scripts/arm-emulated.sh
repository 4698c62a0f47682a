#!/usr/bin/env bash
# Run the bench suite's ARM (aarch64) correctness checks on an x86_64 host under qemu-user emulation.
#
#   scripts/arm-emulated.sh [extra pytest args...]
#
# Stages (each timed; provisioning is idempotent and cached under $ARM_EMU_DIR, never in the repo):
#   1. provision: qemu-aarch64 (>= 8.2: older qemu passes the host's x86 /proc/cpuinfo through and
#      onnxruntime's cpuinfo crashes at import), an arm64 Debian bookworm Python 3.11 sysroot (debs
#      unpacked with dpkg -x via a private apt configuration: the host's apt/dpkg setup is not
#      changed) and the project's dependencies as aarch64 wheels (installed by the host's pip with
#      --platform/--target). No binfmt_misc registration is needed: qemu runs python explicitly.
#   2. native model: the embedded digits model is trained (or read from cache) natively with the
#      host venv; training it under emulation would take far too long.
#   3. emulated run: pytest bench/ --device arm on a small subset, RESNET18_BENCH_EMULATED set, so the
#      report marks every latency as emulated. Accuracy/equivalence items are the point here.
#
# Environment:
#   ARM_EMU_DIR        cache (default $HOME/.cache/resnet18-bench/arm-emu); several GB (the aarch64
#                      torch wheel on PyPI is a CUDA build and needs the CUDA runtime wheels to load)
#   HOST_PYTHON        x86 python with pip and the project installed (default <repo>/.venv/bin/python)
#   ARM_TORCH_VERSION  aarch64 torch (default 2.14.1); ARM_TORCHVISION_VERSION (default 0.29.1)
#   QEMU_AARCH64       a qemu-aarch64 binary to use instead of provisioning one
#   ARM_EMU_VARIANTS   default fp32,int8-static-arm,int8-dynamic,prune-struct-0.5
#   ARM_EMU_RUNTIMES   default eager,torchscript,onnxruntime
#   ARM_EMU_EVAL_SAMPLES default 100
# Exits non-zero when provisioning or the emulated pytest run fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EMU=${ARM_EMU_DIR:-$HOME/.cache/resnet18-bench/arm-emu}
mkdir -p "$EMU"
EMU=$(cd "$EMU" && pwd)
case "$EMU/" in
  "$ROOT"/*) echo "arm-emulated: ARM_EMU_DIR ($EMU) must not be inside the repository" >&2; exit 2 ;;
esac
HOST_PY=${HOST_PYTHON:-$ROOT/.venv/bin/python}
TORCH_V=${ARM_TORCH_VERSION:-2.14.1}
TV_V=${ARM_TORCHVISION_VERSION:-0.29.1}
VARIANTS=${ARM_EMU_VARIANTS:-fp32,int8-static-arm,int8-dynamic,prune-struct-0.5}
RUNTIMES=${ARM_EMU_RUNTIMES:-eager,torchscript,onnxruntime}
EVAL_SAMPLES=${ARM_EMU_EVAL_SAMPLES:-100}
SYSROOT=$EMU/sysroot
SITE=$EMU/site-torch$TORCH_V
LOG() { echo "[arm-emulated $(date -u +%H:%M:%S)] $*" >&2; }
T_START=$(date +%s)
declare -A STAGE_S=()
stage_done() { STAGE_S[$1]=$(( $(date +%s) - $2 )); LOG "stage $1: ${STAGE_S[$1]}s"; }

[ "$(uname -m)" = "x86_64" ] || LOG "warning: host is $(uname -m); this script is meant for x86_64 hosts"
[ -x "$HOST_PY" ] || { echo "arm-emulated: $HOST_PY not found: run scripts/setup.sh first (or set HOST_PYTHON)" >&2; exit 2; }

# A private apt configuration under $EMU: downloads only, nothing installed, host apt untouched.
apt_private() {  # apt_private NAME ARCH SUITE-LINES... -> sets APT_OPTS
  local name=$1 arch=$2; shift 2
  local d=$EMU/apt/$name
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/etc/preferences.d" "$d/debs"
  : > "$d/status"
  printf '%s\n' "$@" > "$d/etc/sources.list"
  APT_OPTS=(-q -o "Dir::Etc::SourceList=$d/etc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
            -o Dir::Etc::Preferences=/nonexistent -o "Dir::Etc::PreferencesParts=$d/etc/preferences.d"
            -o "Dir::State::Lists=$d/lists" -o "Dir::State::Status=$d/status" -o "Dir::Cache=$d/cache"
            -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o APT::Sandbox::User=root)
  apt-get "${APT_OPTS[@]}" update >/dev/null
  APT_DEBS=$d/debs
}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

qemu_ok() {  # qemu >= 8.2 emulates /proc/cpuinfo for aarch64 guests
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)
  [ -n "$v" ] && set -- $v && { [ "$1" -gt 8 ] || { [ "$1" -eq 8 ] && [ "$2" -ge 2 ]; }; }
}

# ---------------------------------------------------------------- 1. provision
t=$(date +%s)
LOG "provisioning in $EMU"
QEMU=${QEMU_AARCH64:-}
if [ -z "$QEMU" ]; then
  for q in "$EMU/qemu/usr/bin/qemu-aarch64" "$(command -v qemu-aarch64-static || true)" "$(command -v qemu-aarch64 || true)"; do
    if [ -n "$q" ] && [ -x "$q" ] && qemu_ok "$q"; then QEMU=$q; break; fi
  done
fi
if [ -z "$QEMU" ]; then
  # Debian bookworm's qemu-user-static is 7.2: too old (see above). trixie's qemu-user is a static-pie
  # binary with no dependencies: unpack it into the cache.
  LOG "fetching qemu-user from Debian trixie (the host's qemu-aarch64 is missing or older than 8.2)"
  apt_private qemu amd64 "deb [arch=amd64 signed-by=$KEYRING] http://deb.debian.org/debian trixie main" \
    "deb [arch=amd64 signed-by=$KEYRING] http://deb.debian.org/debian-security trixie-security main"
  rm -f "$APT_DEBS"/*.deb
  (cd "$APT_DEBS" && apt-get "${APT_OPTS[@]}" download qemu-user >/dev/null)
  rm -rf "$EMU/qemu.tmp" && mkdir -p "$EMU/qemu.tmp"
  dpkg-deb --fsys-tarfile "$APT_DEBS"/qemu-user_*.deb | tar -x -C "$EMU/qemu.tmp" ./usr/bin/qemu-aarch64
  rm -rf "$EMU/qemu" && mv "$EMU/qemu.tmp" "$EMU/qemu"
  QEMU=$EMU/qemu/usr/bin/qemu-aarch64
  qemu_ok "$QEMU" || { echo "arm-emulated: $QEMU is not a usable qemu >= 8.2" >&2; exit 1; }
fi
LOG "qemu: $QEMU ($("$QEMU" --version | head -1))"

ARM_DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11 libc6 libexpat1 zlib1g
          libffi8 libssl3 libgcc-s1 libstdc++6 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6
          libtinfo6 libreadline8 libgomp1 libcrypt1 libdb5.3 libgdbm6 libzstd1)
SYSROOT_STAMP=$SYSROOT/.arm-emu-$(printf '%s\n' "${ARM_DEBS[@]}" | sha256sum | cut -c1-12)
if [ ! -f "$SYSROOT_STAMP" ]; then
  LOG "building the arm64 Python 3.11 sysroot (Debian bookworm debs)"
  apt_private bookworm-arm64 arm64 \
    "deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian bookworm main" \
    "deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian bookworm-updates main" \
    "deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian-security bookworm-security main"
  rm -f "$APT_DEBS"/*.deb
  (cd "$APT_DEBS" && apt-get "${APT_OPTS[@]}" download "${ARM_DEBS[@]}" >/dev/null)
  rm -rf "$SYSROOT.tmp" && mkdir -p "$SYSROOT.tmp"
  for deb in "$APT_DEBS"/*.deb; do dpkg -x "$deb" "$SYSROOT.tmp"; done
  rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
  touch "$SYSROOT_STAMP"
fi
EPY=("$QEMU" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11")
"${EPY[@]}" -c 'import platform, ssl, sqlite3, lzma, bz2, ctypes; assert platform.machine() == "aarch64"'

# Every manylinux tag the sysroot's glibc (2.36) can run: pip's --platform does not expand a tag to
# older glibc versions, and NVIDIA's aarch64 wheels use manylinux_2_25/2_27/2_28/2_34.
PIP_PLAT=(--platform manylinux2014_aarch64)
for i in $(seq 17 36); do PIP_PLAT+=(--platform "manylinux_2_${i}_aarch64"); done
PIP_T=(-m pip install -qq --disable-pip-version-check --target "$SITE" "${PIP_PLAT[@]}" --only-binary=:all:
       --python-version 3.11 --implementation cp)
DEPS=(filelock typing-extensions "setuptools>=77" sympy networkx jinja2 fsspec "onnx>=1.16" "onnxscript>=0.2"
      "onnxruntime>=1.18" "safetensors>=0.4" "scikit-learn>=1.3" "pytest>=8" "pytest-benchmark>=4" "pandas>=2"
      "tabulate>=0.9" "matplotlib>=3.7" "numpy>=1.24" "scipy>=1.10" "platformdirs>=3" "filelock>=3.12"
      "py-cpuinfo>=9" "pillow>=10")
SITE_STAMP=$SITE/.arm-emu-$(printf '%s\n' "$TORCH_V" "$TV_V" "${DEPS[@]}" | sha256sum | cut -c1-12)
if [ ! -f "$SITE_STAMP" ]; then
  LOG "installing aarch64 wheels into $SITE (torch $TORCH_V, torchvision $TV_V; several GB)"
  rm -rf "$SITE"
  # torch, torchvision, torch-pruning without dependencies: the host's pip would evaluate their
  # markers for x86_64; torch's own dependencies are listed in DEPS and added below.
  "$HOST_PY" "${PIP_T[@]}" --no-deps "torch==$TORCH_V" "torchvision==$TV_V" "torch-pruning>=1.5"
  "$HOST_PY" "${PIP_T[@]}" "${DEPS[@]}"
  # PyPI's aarch64 torch is a CUDA (sbsa) build: libtorch links the CUDA runtime libraries, so they
  # must be present to import torch at all (no GPU is used). Install exactly what torch declares.
  mapfile -t CUDA_REQS < <("$HOST_PY" - "$SITE" "$TORCH_V" <<'EOF'
import sys
from pathlib import Path
from email.parser import Parser
meta = Parser().parsestr((Path(sys.argv[1]) / f"torch-{sys.argv[2]}.dist-info" / "METADATA").read_text())
for req in meta.get_all("Requires-Dist") or []:
    spec = req.split(";")[0].strip()
    if spec.startswith(("nvidia-", "cuda-toolkit")):
        print(spec)
EOF
)
  if [ "${#CUDA_REQS[@]}" -gt 0 ]; then
    LOG "torch's CUDA runtime wheels: ${CUDA_REQS[*]}"
    "$HOST_PY" "${PIP_T[@]}" "${CUDA_REQS[@]}"
  fi
  touch "$SITE_STAMP"
fi
# The plugin's pytest11 entry point, so pytest loads bench.plugin without installing the project.
META=$EMU/plugin-meta
mkdir -p "$META/resnet18_bench_emulated-0.dist-info"
printf 'Metadata-Version: 2.1\nName: resnet18-bench-emulated\nVersion: 0\n' > "$META/resnet18_bench_emulated-0.dist-info/METADATA"
printf '[pytest11]\nresnet18_bench = bench.plugin\n' > "$META/resnet18_bench_emulated-0.dist-info/entry_points.txt"
stage_done provision "$t"

# ---------------------------------------------------------------- 2. native embedded model
t=$(date +%s)
export RESNET18_BENCH_CACHE=$EMU/native-cache
CKPT=$(cd "$ROOT" && OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$HOST_PY" -c '
import sys
from compress.context import embedded_checkpoint
print(embedded_checkpoint(log=lambda m: print(m, file=sys.stderr, flush=True)))' | tail -1)
[ -f "$CKPT" ] || { echo "arm-emulated: no embedded checkpoint ($CKPT)" >&2; exit 1; }
LOG "checkpoint: $CKPT"
stage_done native-model "$t"

# ---------------------------------------------------------------- 3. emulated run
t=$(date +%s)
REPORTS=$EMU/reports
mkdir -p "$REPORTS" "$EMU/cache" "$EMU/pycache" "$EMU/mpl"
LOG "emulated pytest (aarch64 under $(basename "$QEMU")): variants $VARIANTS, runtimes $RUNTIMES"
set +e
(cd "$ROOT" && env RESNET18_BENCH_EMULATED=qemu-aarch64 OMP_NUM_THREADS=2 MPLBACKEND=Agg MPLCONFIGDIR="$EMU/mpl" \
   PYTHONPYCACHEPREFIX="$EMU/pycache" PYTHONNOUSERSITE=1 PYTHONPATH="$SITE:$META:$ROOT" \
   "${EPY[@]}" -m pytest bench/ --device arm --variant "$VARIANTS" --runtime "$RUNTIMES" --finetune-epochs 0 \
   --eval-samples "$EVAL_SAMPLES" --calib-samples 64 --input-size native --batch-size 1 --min-samples 5 \
   --min-time 0 --threads 2 --no-gate -p no:cacheprovider -rfEs --report-dir "$REPORTS" \
   --cache-dir "$EMU/cache" --checkpoint "$CKPT" "$@")
RC=$?
set -e
stage_done emulated-run "$t"

TOTAL=$(( $(date +%s) - T_START ))
echo
echo "arm-emulated: provision ${STAGE_S[provision]}s, native model ${STAGE_S[native-model]}s, emulated run ${STAGE_S[emulated-run]}s; total wall time ${TOTAL}s"
echo "arm-emulated: report in $REPORTS ($(ls -t "$REPORTS"/*.md 2>/dev/null | head -1))"
echo "arm-emulated: emulated pytest exit status $RC"
exit "$RC"
