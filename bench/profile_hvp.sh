#!/usr/bin/env bash
# Where a dhess dense run spends its time: perf (software clock; no hardware counters in this VM).
# usage: profile_hvp.sh DHESS MODEL OUT.txt  (1 rank, 1 thread, --eigen none)
set -euo pipefail
dhess=$1 model=$2 out=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OPENBLAS_NUM_THREADS=1 perf record -F 2000 -g -o "$tmp/perf.data" -- \
  "$dhess" --model "$model" --eigen none --threads 1 --out "$tmp/o" -q 2> /dev/null
{
  echo "## perf: $dhess --model $model --eigen none --threads 1"
  python3 -c "import json; t=json.load(open('$tmp/o/summary.json'))['timings_seconds']; print('timings_seconds', {k: round(v, 3) for k, v in t.items() if k != 'hvp_per_rank'})"
  echo "### by library"
  perf report -i "$tmp/perf.data" --no-children --sort dso -g none 2> /dev/null | grep '%' | head -12
  echo "### by symbol"
  perf report -i "$tmp/perf.data" --no-children --sort dso,symbol -g none 2> /dev/null | grep '%' | head -30 |
    sed 's/  */ /g' | cut -c1-160
} > "$out"
