#!/usr/bin/env bash
# Issue 19: glass-to-glass latency in a real browser. The real daemons (release builds) on
# 127.0.0.1; devsim as a dashcam streaming the capture-like fixture at real time over JT/T 1078,
# every frame stamped with the wall clock when it is sent (`--wall-clock`, a device with a
# synchronised clock), so PROGRAM-DATE-TIME is capture time. Headless Chromium opens the hlsd
# page twice at the same time: hls.js in low-latency mode on ll.m3u8, and the classic
# index.m3u8 (`&ll=0`); each reports `now - playingDate` once a second for SECS seconds.
# Prints per playlist: median, p95 and max latency, stalls, fatal errors.
#
# Usage: benches/load/latency.sh        SECS=60 (default) overrides the measuring time.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${SECS:-60}
HLSD_ARGS=()
. benches/load/daemons.sh
"$BIN"/devsim --jt1078 127.0.0.1:16809 --input fixtures/baseline.h264 --loop --wall-clock \
  >"$DIR/devsim.log" 2>&1 &
pids+=($!)
STREAM=013800000000_1
BASE=http://127.0.0.1:18080
for _ in $(seq 1 100); do
  curl -sf "$BASE/live/$STREAM/ll.m3u8" | grep -q EXT-X-PART && break
  sleep 0.2
done
# Let the classic playlist fill its three-segment hold-back too.
sleep 12
node hlsd/tests/it/browser/latency.mjs "$SECS" "$BASE/?stream=$STREAM" "$BASE/?stream=$STREAM&ll=0" \
  >"$DIR/latency.json"
python3 - "$DIR/latency.json" <<'PY'
import json, statistics, sys
runs = json.load(open(sys.argv[1]))
print(f"{'playlist':<12} {'samples':>7} {'median s':>9} {'p95 s':>7} {'max s':>7} {'played s':>9} {'stalls':>6} {'fatal':>5}")
for r in runs:
    lat = sorted(r['latency_ms'])
    name = 'll.m3u8' if r['playing_ll'] else 'index.m3u8'
    if not lat:
        print(f"{name:<12} no samples: {r}")
        continue
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    print(f"{name:<12} {len(lat):>7} {statistics.median(lat) / 1000:>9.3f} {p95 / 1000:>7.3f} "
          f"{lat[-1] / 1000:>7.3f} {r['played_s']:>9.1f} {r['stalls']:>6} {len(r['fatal']):>5}")
PY
