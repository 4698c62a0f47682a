#!/usr/bin/env bash
# The trend gate on real runs (docs/PERFORMANCE.md, "History and the trend gate on real runs"):
# UNCHANGED runs of a subset of the CPU gate, then SLOWED runs with SLOW_ARGS (a real slowdown,
# e.g. --ort-opt-level extended), all into one history store; `python -m bench history --gate`
# after every run from the sixth prints what it finds.
#
#   SLOW_ARGS="--ort-opt-level extended" bash scripts/trend-check.sh STORE [UNCHANGED [SLOWED]]
#
# STORE is emptied first. Run it on an otherwise idle machine: it is a timing experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:?usage: SLOW_ARGS=... bash scripts/trend-check.sh STORE [UNCHANGED [SLOWED]]}
unchanged=${2:-10}
slowed=${3:-3}
rm -rf "$store"
mkdir -p "$store"
for i in $(seq 1 $((unchanged + slowed))); do
  extra=""
  [ "$i" -gt "$unchanged" ] && extra="${SLOW_ARGS:-}"
  rc=0
  .venv/bin/python -m pytest bench/ --device cpu -q -p no:cacheprovider --input-size 224 --no-gate \
    --variant fp32,int8-static,prune-struct-0.5+int8 --runtime eager,onnxruntime,openvino -k latency $extra \
    --report-dir "$store" > "$store/run-$i.log" 2>&1 || rc=$?
  echo "run $i (${extra:-unchanged}) rc=$rc"
  if [ "$i" -ge 6 ]; then
    rc=0
    .venv/bin/python -m bench history --store "$store/results" --gate > "$store/history-$i.txt" 2>&1 || rc=$?
    echo "  history --gate rc=$rc"
    sed 's/^/    /' "$store/history-$i.txt"
  fi
done
