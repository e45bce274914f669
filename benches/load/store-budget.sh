#!/usr/bin/env bash
# Issue 18: what the object store costs, measured (not a test). moto's S3 server on 127.0.0.1
# (scripts/install-moto.sh), the release ingestd uploading to it (--storage-url) and the release
# hlsd reading from it with its cache; devsim streams STREAMS dashcams over JT/T 1078 at real
# time, stamped with the wall clock; benches/load/store_viewers.py runs VIEWERS players per
# stream for SECS seconds and reads both daemons' /metrics around the window.
# Prints one JSON line: store PUTs/s and GETs/s (per stream, per 1,000 streams, per viewer
# request) and the publish-to-playable latency through the store (p50, p99, max).
#
# Usage: benches/load/store-budget.sh [STREAMS=20] [VIEWERS=10] [SECS=60] [RELOAD=2]
# UPLOAD_WORKERS=N sets ingestd's --storage-upload-workers (16). KEEP=DIR keeps the raw run (first sightings) and devsim's keyframe log there.
set -euo pipefail
cd "$(dirname "$0")/../.."
STREAMS=${1:-20}
VIEWERS=${2:-10}
SECS=${3:-60}
RELOAD=${4:-2}
MOTO=$(scripts/install-moto.sh)
MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/" && break; sleep 0.2; done
curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/fleet-budget" >/dev/null
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=fleet-bench AWS_SECRET_ACCESS_KEY=fleet-bench-secret
INGESTD_ARGS=(--storage-url s3://fleet-budget/site-a --device-auth off --storage-upload-workers "${UPLOAD_WORKERS:-16}")
HLSD_ARGS=(--storage-url s3://fleet-budget/site-a --max-connections 20000)
. benches/load/daemons.sh
pids+=("$MOTO_PID")
"$BIN"/devsim --jt1078 127.0.0.1:16809 --devices "$STREAMS" --input fixtures/baseline.h264 --loop \
  --wall-clock --ramp 4 --duration $((SECS + 30)) --keyframe-log "$DIR/keyframes.log" \
  >"$DIR/devsim.log" 2>&1 &
DEVSIM=$!
pids+=("$DEVSIM")
LIST=$(python3 -c "print(','.join(f'{13800000000 + i:012d}_1' for i in range($STREAMS)))")
LAST=$(python3 -c "print(f'{13800000000 + $STREAMS - 1:012d}_1')")
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:18080/live/$LAST/index.m3u8" | grep -q '\.ts' && break
  sleep 0.2
done
sleep 10
python3 benches/load/store_viewers.py 127.0.0.1:18080 127.0.0.1:16811 "$LIST" "$VIEWERS" "$RELOAD" "$SECS" \
  >"$DIR/run.json"
wait "$DEVSIM" || { echo "devsim failed:" >&2; tail "$DIR/devsim.log" >&2; exit 1; }
[ -z "${KEEP:-}" ] || cp "$DIR/run.json" "$DIR/keyframes.log" "$KEEP"
python3 benches/load/store_viewers.py report "$DIR/run.json" "$DIR/keyframes.log"
