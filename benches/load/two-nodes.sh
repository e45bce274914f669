#!/usr/bin/env bash
# Issue 18: does spreading the streams over two ingestd cost throughput? The load harness's
# ingestd approach at N streams on one node and on two nodes of this machine (local storage:
# the object store's server would be the bottleneck here), both on one shared PostgreSQL
# catalog as a cluster has, interleaved REPS times so the shared machine's drift hits both;
# then a table of streams per core, CPU per stream, RSS per stream and publish latency.
#
# Usage: benches/load/two-nodes.sh [OUT_DIR]        (default target/load-two-nodes)
#   N="250 500" REPS=2 DURATION=40 override; CATALOG=sqlite uses each node's own SQLite file.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/load-two-nodes}
N=${N:-"250 500"}
REPS=${REPS:-2}
DURATION=${DURATION:-40}
mkdir -p "$OUT"
scripts/install-deps.sh
. benches/load/inputs.sh
catalog_args=()
if [ "${CATALOG:-postgres}" = postgres ]; then
  scripts/start-test-databases.sh >/dev/null
  psql -q -h 127.0.0.1 -U root -d test -c 'DROP DATABASE IF EXISTS fleet_load' \
    -c 'CREATE DATABASE fleet_load'
  catalog_args=(--ingestd-arg=--database-url=postgres://root@127.0.0.1:5432/fleet_load)
fi
RES="$OUT/results.jsonl"
: > "$RES"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "commit: $(git rev-parse --short HEAD)"
  echo "catalog: ${CATALOG:-postgres}"
} | tee "$OUT/machine.txt"
for rep in $(seq 1 "$REPS"); do
  for n in $N; do
    for nodes in 1 2; do
      "$PY" benches/load/loadtest.py --approach ingestd --streams "$n" --nodes "$nodes" \
        --input "$IN" --duration "$DURATION" --label "nodes=$nodes rep=$rep" \
        "${catalog_args[@]}" --out "$RES" > /dev/null
    done
  done
done
"$PY" - "$RES" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| streams | nodes | runs | streams/core (median) | CPU %/stream | RSS MB/stream | publish p99 ms | lost frames |")
print("|---|---|---|---|---|---|---|---|")
for n in sorted({r["streams"] for r in rows}):
    for k in (1, 2):
        rs = [r for r in rows if r["streams"] == n and r.get("nodes", 1) == k]
        if not rs:
            continue
        med = lambda key: statistics.median(r[key] for r in rs)
        print(f"| {n} | {k} | {len(rs)} | {med('streams_per_core'):.0f} | {med('cpu_pct_per_stream'):.3f} "
              f"| {med('rss_per_stream_mb'):.3f} | {med('publish_p99_ms'):.0f} | {sum(r['lost_frames'] for r in rs)} |")
PY
echo "results: $RES"
