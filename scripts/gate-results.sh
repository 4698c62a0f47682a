#!/usr/bin/env bash
# Gate every results file under a folder of downloaded CI artifacts (one sub-folder per job), with
# `python -m bench gate` against the committed baselines: the checks and exit codes of the pytest
# items, on the joined shards. Exit 1 if any file fails its gate, 2 on bad input.
#
#   bash scripts/gate-results.sh all-reports [more python -m bench gate options]
set -uo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: gate-results.sh FOLDER [gate options]}
shift
shopt -s nullglob
files=("$root"/*/*.json)
[ "${#files[@]}" -gt 0 ] || { echo "gate-results: no results files under $root/*/" >&2; exit 2; }
status=0
for f in "${files[@]}"; do
  echo "== $f"
  .venv/bin/python -m bench gate "$f" --baseline-dir baselines "$@"
  rc=$?
  [ "$rc" -gt "$status" ] && status=$rc
done
exit "$status"
