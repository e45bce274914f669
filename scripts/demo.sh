#!/usr/bin/env bash
# The demo: builds everything, starts ingestd and hlsd on an embedded
# SQLite catalog in ./data, and a simulated dashcam (JT/T 808 signalling +
# JT/T 1078 video: the project's own fixture with B-frames, cut into
# sub-packages as a dashcam sends it, looped; positions along a route), then
# prints the URL to open. Ctrl-C stops it all.
#   DATA_DIR=./data HTTP_PORT=8080 DEVICES=1 scripts/demo.sh
# INPUT=<file> replays another Annex-B H.264 file or a JT/T 1078 capture.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/npm-deps.sh
cargo build --release -p ingestd -p hlsd -p benches --bins

DATA_DIR=${DATA_DIR:-./data}
HTTP_PORT=${HTTP_PORT:-8080}
DEVICES=${DEVICES:-1}
INPUT=${INPUT:-fixtures/high_b2.h264}
# Where cargo put the binaries (CARGO_TARGET_DIR when set).
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$DATA_DIR"
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# Alarms open incidents on channels 1 and 2: channel 1 streams live (its
# incident video is the live recording), channel 2 does not (its video is
# fetched from the simulated SD card with 0x9201).
"$BIN"/ingestd --data-dir "$DATA_DIR" \
  --jt808-listen 127.0.0.1:6808 --jt1078-listen 127.0.0.1:6809 \
  --incident-channels 1,2 &
pids+=($!)
# The demo opens viewing and the API to anyone who reaches the port (no login);
# a deployment makes accounts instead (README, "Accounts and access").
"$BIN"/hlsd --data-dir "$DATA_DIR" --listen "0.0.0.0:$HTTP_PORT" \
  --ingestd-url http://127.0.0.1:6811 --allow-anonymous &
pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/6809) 2>/dev/null && break
  sleep 0.2
done
# Each simulated dashcam also has an SD card (recordings on channels 1 and
# 2, listed on 0x9205, played back on 0x9201) and raises an overspeed alarm
# 20 s in. Frames carry the wall clock (a dashcam whose clock is right), so
# the page's latency figure is the real one.
"$BIN"/devsim --jt808 127.0.0.1:6808 --jt1078 127.0.0.1:6809 \
  --devices "$DEVICES" --input "$INPUT" --loop --position-interval 2 \
  --sd-channels 1,2 --alarm-at 20 --wall-clock &
pids+=($!)

stream="013800000000_1"
for _ in $(seq 1 100); do
  [ -f "$DATA_DIR/live/$stream/index.m3u8" ] && break
  sleep 0.2
done
cat <<MSG

  Demo running (data in $DATA_DIR, catalog $DATA_DIR/catalog.sqlite).
  Anonymous access is ON (hlsd --allow-anonymous): no login, anyone who
  reaches port $HTTP_PORT can watch and start/stop video. Not for deployment.
  Web page:       http://127.0.0.1:$HTTP_PORT/
  Live playlist:  http://127.0.0.1:$HTTP_PORT/live/$stream/index.m3u8
  Low latency:    http://127.0.0.1:$HTTP_PORT/live/$stream/ll.m3u8 (the page plays it)
  API:            http://127.0.0.1:$HTTP_PORT/api/streams
  SD card:        http://127.0.0.1:$HTTP_PORT/api/devices/013800000000/recordings?channel=0
  Metrics:        http://127.0.0.1:6811/metrics
  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
