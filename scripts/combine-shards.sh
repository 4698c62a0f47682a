#!/usr/bin/env bash
# CI: join the shards of each sharded run under DIR (files *-shardKofN.json from
# `pytest bench/ --shard K/N`) into one results file per run, DIR/combined/<name>.json, and remove
# the shard files, so `python -m bench report merge DIR/*/*.json` sees each run once.
set -euo pipefail
dir=${1:?usage: combine-shards.sh DIR}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$dir/combined"
for first in "$dir"/*/*-shard1of*.json; do
  [ -e "$first" ] || continue
  base=$(basename "$first"); stem=${base%-shard1of*}; n=${base##*-shard1of}; n=${n%.json}
  [ "$n" = 1 ] && continue  # a run in one shard is already whole
  shards=$(ls "$dir"/*/"$stem"-shard*of"$n".json)
  "$py" -m bench report combine $shards -o "$dir/combined/$stem.json"
  rm $shards
done
