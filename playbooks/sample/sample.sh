#!/bin/sh
# Append a few lines to the data volume and print them, so status/logs/the volume all show the run.
set -eu
out="${1:-/data/sample.log}"
n="${SAMPLE_LINES:-3}"
i=1
while [ "$i" -le "$n" ]; do
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) ${SAMPLE_HOST:-$(hostname)} ${GREETING} gpus=${NVIDIA_VISIBLE_DEVICES:-none} line=$i"
    echo "$line" | tee -a "$out"
    i=$((i + 1))
    sleep 1
done
echo "done: wrote $n lines to $out"
