#!/usr/bin/env bash
# Prove the CUDA row in one shot: on a host with an NVIDIA GPU, from a fresh checkout, in at most
# 10 minutes of wall time (GPU_CHECK_BUDGET_S), set up, name the GPU and driver, run
# `pytest bench/ --device cuda` on the embedded default and (when $SHARED holds it) the CIFAR-10
# reference, record their baselines, render the reports, and leave everything in one flat folder.
#
#   OUT=<dir> bash scripts/gpu-check.sh      the check (needs a CUDA GPU)
#   bash scripts/gpu-check.sh --dry-run      every step but the CUDA work, on any host (CI): the
#                                            setup plan, the GPU and ONNX Runtime diagnosis, both
#                                            pytest command lines collected (a host without a GPU
#                                            must answer with a clean "no CUDA GPU" usage error),
#                                            render and table on a committed results file. < 60 s.
#
# What lands in $OUT (default bench-out/gpu-check; at most 8 files, no subfolders, so that a copy
# tool with such limits brings all of it back):
#   summary.md           the table printed at the end: stages, then per run every variant x runtime
#   gpu-check.log        everything printed, nvidia-smi included
#   <dataset>-cuda.json  each run's results document (python -m bench report render re-renders it)
#   RESULTS-cuda.md      the runs merged (python -m bench report merge)
#   gpu-check.tar.gz     reports/ (markdown and plots), baselines/ (the committed ones plus this
#                        run's CUDA entries: copy into the checkout and commit), junit XML
#
# Environment:
#   PYTHON               interpreter (default python3). When it already imports torch with CUDA,
#                        .venv reuses its packages (scripts/setup.sh, TORCH_PYTHON) instead of
#                        installing torch; otherwise setup.sh installs torch==2.14.1 (on Linux
#                        x86_64 PyPI's wheel is a CUDA build) and the gpu extra (onnxruntime-gpu).
#   GPU_CHECK_EXTRAS     extras for setup.sh (default gpu)
#   SHARED               where the CIFAR-10 reference lives (default ../shared, else ./shared)
#   GPU_CHECK_BUDGET_S   wall-clock budget of the whole check in seconds (default 570)
#   GPU_CHECK_PYTEST_ARGS  more options for both pytest runs, e.g. "--eval-samples 1000"
#   Without network: pip is pointed at ./.whl (PIP_NO_INDEX, PIP_FIND_LINKS); if the gpu extra
#   cannot be installed, the project is installed on its own into PYTHON's environment and the
#   ONNX Runtime items are skipped with the reason (the table says so).
# Exits non-zero when any stage fails.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown argument $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-bench-out/gpu-check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "gpu-check: cannot create OUT=$OUT" >&2; exit 2; }
find "$OUT" -mindepth 1 -maxdepth 1 \( -name 'summary.md' -o -name 'gpu-check.*' -o -name '*-cuda.json' \
  -o -name 'RESULTS-*.md' \) -exec rm -rf {} +
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
STAGES=$WORK/stages.tsv
: > "$STAGES"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
RESERVE=30  # kept for render, table and packing
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
log() { printf '\n== [%4ss] %s\n' "$(elapsed)" "$*"; }
FAILED=0
record() {  # record STAGE STATUS SECONDS DETAIL   (status: ok | FAIL | skip | dry-run)
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(printf '%s' "$4" | tr '\t\n' '  ' | cut -c1-400)" >> "$STAGES"
  [ "$2" = FAIL ] && FAILED=1
  printf -- '-> %s: %s (%ss) %s\n' "$1" "$2" "$3" "$4"
}

if [ -z "${SHARED:-}" ]; then
  if [ -d ../shared ]; then SHARED=../shared; else SHARED=shared; fi
fi
CIFAR_DATA=$SHARED/data/cifar10-jpeg
CIFAR_CKPT=$SHARED/models/resnet18-cifar10-32px.pt

log "gpu-check $([ $DRY = 1 ] && echo '(dry run) ')in $ROOT -> $OUT (budget ${BUDGET}s)"
git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null || true

# ---------------------------------------------------------------- 1. setup
t=$(date +%s)
log "setup"
RUN_PY=""
DEGRADED=""
torch_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
index_reachable() {  # a proxy is trusted to reach it; else one TCP connection to the index, 5 s
  [ -n "${https_proxy:-}${HTTPS_PROXY:-}" ] && return 0
  "$PY" - <<'PYEOF' >/dev/null 2>&1
import os, socket, urllib.parse
url = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").split()[0]
u = urllib.parse.urlparse(url)
if u.scheme == "file":
    raise SystemExit(0 if os.path.isdir(u.path) else 1)
socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=5).close()
PYEOF
}
EXTRAS=${GPU_CHECK_EXTRAS:-gpu}
if torch_cuda "$PY"; then
  TORCH_FROM="reused from $PY (it imports torch with CUDA)"
  SETUP_ENV=(TORCH_PYTHON="$PY")
else
  TORCH_FROM="from .venv (setup.sh installs torch==2.14.1, a CUDA build on Linux x86_64, if .venv has none)"
  SETUP_ENV=()
fi
if [ "$DRY" = 1 ]; then
  echo "would run: ${SETUP_ENV[*]}${SETUP_ENV[*]:+ }PROJECT_EXTRAS=$EXTRAS bash scripts/setup.sh   # torch $TORCH_FROM"
  bash -n scripts/setup.sh || record setup FAIL 0 "scripts/setup.sh does not parse"
  for cand in .venv/bin/python "$PY"; do
    if "$cand" -c 'import bench.plugin' >/dev/null 2>&1; then RUN_PY=$cand; break; fi
  done
  if [ -n "$RUN_PY" ]; then
    record setup dry-run $(( $(date +%s) - t )) "would run PROJECT_EXTRAS=$EXTRAS scripts/setup.sh, torch $TORCH_FROM; checks below use $RUN_PY"
  else
    record setup FAIL $(( $(date +%s) - t )) "the dry run needs the project installed: bash scripts/setup.sh"
  fi
else
  if [ -z "${PIP_NO_INDEX:-}" ] && ! index_reachable; then
    export PIP_NO_INDEX=1
    [ -d "$ROOT/.whl" ] && export PIP_FIND_LINKS="$ROOT/.whl"
    echo "no package index reachable: installing offline from ${PIP_FIND_LINKS:-nothing (no .whl/)}"
  fi
  if env "${SETUP_ENV[@]}" PROJECT_EXTRAS="$EXTRAS" bash scripts/setup.sh; then
    RUN_PY=$ROOT/.venv/bin/python
  else
    # No gpu extra to be had (e.g. no network and no onnxruntime-gpu wheel), or no venv at all: the
    # project without extras, into .venv if setup.sh made one that has torch, else into PYTHON's
    # environment when that has torch with CUDA. ONNX Runtime items then say why they are skipped.
    for cand in "$ROOT/.venv/bin/python" "$PY"; do
      [ "$cand" = "$PY" ] && ! torch_cuda "$PY" && continue
      "$cand" -c 'import torch' >/dev/null 2>&1 || continue
      nbi=(); [ -n "${PIP_NO_INDEX:-}" ] && nbi=(--no-build-isolation)
      if "$cand" -m pip install -q "${nbi[@]}" -e . || "$cand" -m pip install -q "${nbi[@]}" --no-deps -e .; then
        RUN_PY=$cand
        DEGRADED="setup.sh with PROJECT_EXTRAS=$EXTRAS failed; the project was installed without extras into $("$cand" -c 'import sys; print(sys.prefix)')"
        echo "$DEGRADED"
        break
      fi
    done
  fi
  if [ -n "$RUN_PY" ]; then
    missing=$("$RUN_PY" - <<'PYEOF'
import importlib.metadata as md, re
missing = []
for req in md.requires("resnet18-bench") or []:
    if "extra ==" in req or "python_version" in req:
        continue
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    try:
        md.version(name)
    except md.PackageNotFoundError:
        missing.append(name)
print(" ".join(missing))
PYEOF
    ) || missing="(the project is not installed)"
  fi
  if [ -z "$RUN_PY" ]; then
    record setup FAIL $(( $(date +%s) - t )) "scripts/setup.sh failed, and neither .venv nor $PY could take the project (see the log)"
  elif [ -n "$missing" ]; then
    record setup FAIL $(( $(date +%s) - t )) "missing packages: $missing (offline: put their wheels in .whl/)"
  else
    versions=$("$RUN_PY" - <<'PYEOF' 2>/dev/null
import torch
from bench.runtimes.onnxruntime import installed_ort_distributions
ort = sorted({d.name + " " + d.version for d in installed_ort_distributions()})
print("torch " + torch.__version__ + ", " + (", ".join(ort) or "no onnxruntime"))
PYEOF
    )
    record setup "$([ -n "$DEGRADED" ] && echo skip || echo ok)" $(( $(date +%s) - t )) \
      "${DEGRADED:+$DEGRADED; }$RUN_PY: $versions; torch $TORCH_FROM"
  fi
fi

# ---------------------------------------------------------------- 2. the GPU, the driver, ONNX Runtime
t=$(date +%s)
log "GPU and driver"
HAVE_GPU=0
if [ "$DRY" = 0 ]; then
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
  else
    echo "nvidia-smi: not found"
  fi
fi
if [ -n "$RUN_PY" ]; then
  diag=$("$RUN_PY" - "$DRY" <<'PYEOF'
import sys
from bench.devices import Device, cuda_description
from bench.runtimes.onnxruntime import availability_reason, ort_facts, package_conflict
import torch

dry = sys.argv[1] == "1"
print("gpu\t" + ("1" if torch.cuda.is_available() else "0") + "\t" + cuda_description())
conflict = package_conflict("cuda")
facts = ort_facts("cuda") if (torch.cuda.is_available() or dry) and not conflict else None
reason = conflict or (availability_reason(facts, "cuda") if facts else "not checked: no GPU")
what = ", ".join(f"{d.name} {d.version}" for d in (facts.installed if facts else ())) or "no onnxruntime"
started = "starts" if torch.cuda.is_available() else "is listed (not started: no GPU)"
print("ort\t" + ("conflict" if conflict else "ok" if reason is None else "unavailable") + "\t"
      + (f"{what}: CUDAExecutionProvider {started}" if reason is None else reason))
PYEOF
  ) || diag=$'gpu\t0\tthe diagnosis failed (see the log above)\nort\tunavailable\tnot checked'
  echo "$diag"
  gpu_line=$(printf '%s\n' "$diag" | awk -F'\t' '$1 == "gpu"')
  ort_line=$(printf '%s\n' "$diag" | awk -F'\t' '$1 == "ort"')
  HAVE_GPU=$(cut -f2 <<< "$gpu_line")
  GPU_TEXT=$(cut -f3- <<< "$gpu_line")
  ORT_STATE=$(cut -f2 <<< "$ort_line")
  ORT_TEXT=$(cut -f3- <<< "$ort_line")
  if [ "$DRY" = 1 ]; then
    record gpu dry-run $(( $(date +%s) - t )) "$GPU_TEXT"
    if [ "$ORT_STATE" = conflict ]; then record onnxruntime FAIL 0 "$ORT_TEXT"; else record onnxruntime dry-run 0 "$ORT_TEXT"; fi
  else
    if [ "$HAVE_GPU" = 1 ]; then record gpu ok $(( $(date +%s) - t )) "$GPU_TEXT"
    else record gpu FAIL $(( $(date +%s) - t )) "$GPU_TEXT"; fi
    case "$ORT_STATE" in
      ok) record onnxruntime ok 0 "$ORT_TEXT" ;;
      unavailable)  # a skip where it cannot be otherwise (no GPU, or no gpu extra to be had), else a failure
        if [ "$HAVE_GPU" != 1 ] || [ -n "$DEGRADED" ]; then record onnxruntime skip 0 "$ORT_TEXT"
        else record onnxruntime FAIL 0 "$ORT_TEXT"; fi ;;
      *) record onnxruntime FAIL 0 "$ORT_TEXT" ;;
    esac
  fi
else
  record gpu FAIL 0 "no Python environment with the project (setup failed)"
fi

# ---------------------------------------------------------------- 3. the runs
cp -r baselines "$WORK/baselines" 2>/dev/null || mkdir -p "$WORK/baselines"
mkdir -p "$WORK/reports"
run_bench() {  # run_bench NAME [more pytest args]
  local name=$1; shift
  local t rc left
  t=$(date +%s)
  # -c: the rootdir (whose pyproject.toml sets the gate thresholds, cuda's included) stays this
  # project; pytest would otherwise derive it from the paths given to --data-root and --checkpoint.
  local args=(bench/ -c pyproject.toml --device cuda -q -p no:cacheprovider -rs --report-dir "$WORK/reports"
              --baseline-dir "$WORK/baselines" --update-baselines --junitxml "$WORK/junit-$name.xml" "$@")
  # shellcheck disable=SC2206  # word splitting wanted: a list of options
  [ -n "${GPU_CHECK_PYTEST_ARGS:-}" ] && args+=($GPU_CHECK_PYTEST_ARGS)
  log "pytest ${args[*]}"
  if [ -z "$RUN_PY" ]; then record "$name" FAIL 0 "no Python environment with the project"; return; fi
  if [ "$DRY" = 1 ]; then
    local out
    out=$("$RUN_PY" -m pytest "${args[@]}" --collect-only 2>&1); rc=$?
    printf '%s\n' "$out" | tail -n 5
    local err
    err=$(printf '%s\n' "$out" | grep -m1 '^ERROR: ' || true)
    if [ "$rc" = 4 ] && [[ "$err" == *"no CUDA GPU"* ]]; then
      record "$name" dry-run $(( $(date +%s) - t )) "options parse; this host answers as it must: ${err#ERROR: }"
    elif [ "$rc" = 0 ]; then
      record "$name" dry-run $(( $(date +%s) - t )) "collected: $(printf '%s\n' "$out" | tail -n 1)"
    else
      record "$name" FAIL $(( $(date +%s) - t )) "pytest --collect-only exited $rc: ${err:-$(printf '%s\n' "$out" | tail -n 1)}"
    fi
    return
  fi
  if [ "$HAVE_GPU" != 1 ]; then record "$name" skip 0 "no CUDA GPU visible to torch"; return; fi
  left=$(( BUDGET - RESERVE - $(elapsed) ))
  if [ "$left" -lt 60 ]; then record "$name" FAIL 0 "the ${BUDGET}s budget is spent (${left}s left)"; return; fi
  timeout --signal=INT --kill-after=20 "$left" "$RUN_PY" -m pytest "${args[@]}"; rc=$?
  cp "$WORK"/reports/*-cuda.json "$OUT"/ 2>/dev/null
  local counts
  counts=$("$RUN_PY" - "$WORK/junit-$name.xml" <<'PYEOF' 2>/dev/null
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
s = root if root.tag == "testsuite" else root.find("testsuite")
n, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(f"{n - f - e - k} passed, {f} failed, {e} errors, {k} skipped")
PYEOF
  )
  case "$rc" in
    0) record "$name" ok $(( $(date +%s) - t )) "${counts:-pytest exited 0}" ;;
    124|137) record "$name" FAIL $(( $(date +%s) - t )) "timed out after ${left}s (budget); ${counts:-no items finished}" ;;
    *) record "$name" FAIL $(( $(date +%s) - t )) "pytest exited $rc; ${counts:-see the log}" ;;
  esac
}

run_bench digits
if [ -f "$CIFAR_CKPT" ] && [ -d "$CIFAR_DATA" ]; then
  run_bench cifar10 --dataset imagefolder --data-root "$CIFAR_DATA" --checkpoint "$CIFAR_CKPT"
else
  record cifar10 skip 0 "$SHARED holds no CIFAR-10 reference (models/resnet18-cifar10-32px.pt, data/cifar10-jpeg)"
fi

# ---------------------------------------------------------------- 4. reports
t=$(date +%s)
log "render the reports"
RESULTS=()
if [ "$DRY" = 1 ]; then
  # A committed results file stands in for this run's: the render, merge and table code all run.
  for canned in reports/digits-x86.json tests/data/report/results-x86.json; do
    [ -f "$canned" ] && { RESULTS=("$canned"); break; }
  done
else
  for f in "$WORK"/reports/*-cuda.json; do [ -f "$f" ] && RESULTS+=("$f"); done
fi
merged=$OUT/RESULTS-cuda.md
[ "$DRY" = 1 ] && merged=$WORK/RESULTS-dry-run.md
if [ -z "$RUN_PY" ]; then
  record render FAIL 0 "no Python environment with the project"
elif [ "${#RESULTS[@]}" = 0 ]; then
  record render skip 0 "no results to render"
else
  ok=1
  for f in "${RESULTS[@]}"; do
    "$RUN_PY" -m bench report render "$f" -o "$WORK/reports" || ok=0
  done
  "$RUN_PY" -m bench report merge "${RESULTS[@]}" -o "$merged" --allow-mixed || ok=0
  if [ "$ok" = 1 ]; then
    record render "$([ "$DRY" = 1 ] && echo dry-run || echo ok)" $(( $(date +%s) - t )) \
      "${#RESULTS[@]} results file(s) rendered and merged into $(basename "$merged")$([ "$DRY" = 1 ] && echo " (canned: ${RESULTS[0]})")"
  else
    record render FAIL $(( $(date +%s) - t )) "python -m bench report failed (see the log)"
  fi
fi

# ---------------------------------------------------------------- 5. table and bundle
log "summary"
[ -n "$RUN_PY" ] || RUN_PY=$PY
"$RUN_PY" - "$STAGES" "$OUT/summary.md" "$DRY" "$(elapsed)" "${RESULTS[@]}" <<'PYEOF' || FAILED=1
import json, sys
stages_file, out_file, dry, seconds, *results = sys.argv[1:]

def cell(s, width=110):
    s = str(s).replace("|", "/").replace("\n", " ")
    return s if len(s) <= width else s[:width - 1] + "…"

lines = [f"# gpu-check{' (dry run)' if dry == '1' else ''}: {seconds}s", "",
         "| stage | status | s | detail |", "|---|---|---:|---|"]
for row in open(stages_file, encoding="utf-8"):
    name, status, secs, detail = (row.rstrip("\n").split("\t") + [""] * 4)[:4]
    lines.append(f"| {name} | {status} | {secs} | {cell(detail, 300)} |")

for path in results:
    doc = json.load(open(path, encoding="utf-8"))
    shapes = sorted({tuple(e["input_size"]) for it in doc["items"] for e in it.get("latency") or []},
                    key=lambda s: s[0] * s[1])
    lines += ["", f"## {doc['dataset']['id']} on {doc['device']}: {doc['fingerprint']}"
              + (" (canned results: the dry run's stand-in)" if dry == "1" else ""), ""]
    head = ["variant", "runtime", "status", "top-1 %"] + [f"p50 ms {h}x{w}" for h, w in shapes] + ["img/s", "note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for it in doc["items"]:
        acc = it.get("accuracy") or {}
        lat = {tuple(e["input_size"]): e for e in it.get("latency") or [] if e.get("batch_size", 1) == 1}
        tp = max(it.get("throughput") or [{}], key=lambda e: e.get("batch_size", 0))
        eq = it.get("equivalence") or {}
        note = it.get("reason") or ("" if eq.get("passed", True) else f"equivalence failed: {eq.get('rule', '')}")
        row = [it["variant"], it["runtime"], it["status"],
               f"{acc['top1'] * 100:.2f}" if "top1" in acc else "—"]
        row += [f"{lat[s]['p50_ms']:.3f}" if s in lat else "—" for s in shapes]
        row += [f"{tp['img_s']:.0f} (b{tp['batch_size']})" if tp.get("img_s") else "—", cell(note, 80)]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    for sk in doc.get("skipped") or []:
        lines.append(f"| {sk['variant']} | {sk['runtime']} | skipped | — | " + "— | " * len(shapes)
                     + f"— | {cell(sk['reason'], 80)} |")
text = "\n".join(lines) + "\n"
open(out_file, "w", encoding="utf-8").write(text)
print(text)
PYEOF

if [ "$DRY" = 0 ]; then
  (cd "$WORK" && tar -czf "$OUT/gpu-check.tar.gz" reports baselines $(ls junit-*.xml 2>/dev/null)) \
    || { echo "gpu-check: packing $OUT/gpu-check.tar.gz failed"; FAILED=1; }
fi
rm -rf "$WORK"
echo "gpu-check: $([ $FAILED = 0 ] && echo passed || echo FAILED) in $(elapsed)s; everything is in $OUT:"
ls -la "$OUT" | tail -n +2
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null  # the log is complete before the caller reads it
exit $FAILED
