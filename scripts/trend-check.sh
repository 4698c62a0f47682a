#!/usr/bin/env bash
# The trend gate and the single-run confirmation on real runs (docs/PERFORMANCE.md, "History and
# the trend gate on real runs"): UNCHANGED gated runs of a subset of the CPU gate, then SLOWED
# runs with a real slowdown, all into one history store (which --latency-confirm reads too);
# `python -m bench history --gate` after every run from the sixth prints what it finds.
#
#   SLOWDOWN=0.12 bash scripts/trend-check.sh STORE [UNCHANGED [SLOWED]]        # scripts/slowdown.py
#   SLOW_ARGS="--ort-opt-level extended" bash scripts/trend-check.sh STORE ...   # any harness option
#
# Each run is gated against the committed baselines (single-run false alarms show as rc=1 or as
# "slower" findings). STORE is emptied first. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:?usage: SLOWDOWN=0.12 bash scripts/trend-check.sh STORE [UNCHANGED [SLOWED]]}
unchanged=${2:-10}
slowed=${3:-3}
rm -rf "$store"
mkdir -p "$store"
for i in $(seq 1 $((unchanged + slowed))); do
  extra=()
  what=unchanged
  if [ "$i" -gt "$unchanged" ]; then
    if [ -n "${SLOWDOWN:-}" ]; then
      extra=(-p slowdown)
      what="slowed: ONNX Runtime calls +${SLOWDOWN}"
    else
      read -r -a extra <<< "${SLOW_ARGS:?set SLOWDOWN or SLOW_ARGS}"
      what="slowed: ${SLOW_ARGS}"
    fi
  fi
  rc=0
  PYTHONPATH=scripts RESNET18_SLOWDOWN=${SLOWDOWN:-0} .venv/bin/python -m pytest bench/ --device cpu -q \
    -p no:cacheprovider --input-size 224 --variant fp32,int8-static,prune-struct-0.5+int8 \
    --runtime eager,onnxruntime,openvino -k latency "${extra[@]}" \
    --report-dir "$store" > "$store/run-$i.log" 2>&1 || rc=$?
  echo "run $i ($what) rc=$rc"
  grep -E "^(no regressions|[0-9]+ regressions?) |confirmed slower|measured again with|regressed \(" "$store/run-$i.log" \
    | sed 's/^/    /' || true
  if [ "$i" -ge 6 ]; then
    rc=0
    .venv/bin/python -m bench history --store "$store/results" --gate > "$store/history-$i.txt" 2>&1 || rc=$?
    echo "  history --gate rc=$rc"
    sed 's/^/    /' "$store/history-$i.txt"
  fi
done
