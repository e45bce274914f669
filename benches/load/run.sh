#!/usr/bin/env bash
# Issue 6 load benchmark (not a test): N simulated devices at real-time pace over loopback TCP
# into ingestd, into one `ffmpeg -c copy -f hls` per stream, and into the design we replace
# (one ffmpeg per ~150 kB chunk), side by side in one run, with the floor under all of them
# (recvfloor: the bytes received and written, nothing else); then the plot.
#
# Usage: benches/load/run.sh [OUT_DIR]        (default target/load)
#   INGESTD_N="10 100 ..." FFMPEG_N="..." CHUNKS_N="..." FLOOR_N="..." DURATION=40 override
#   the matrix.
# Writes OUT_DIR/results.jsonl (one JSON object per run), OUT_DIR/load.svg and
# OUT_DIR/bframes-ffmpeg.txt. Needs ~4 GB free in /dev/shm per 1000 ingestd streams.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/load}
INGESTD_N=${INGESTD_N:-"10 100 500 1000 2000 3000"}
FFMPEG_N=${FFMPEG_N:-"10 100 200 400"}
CHUNKS_N=${CHUNKS_N:-"5 10 20"}
FLOOR_N=${FLOOR_N:-"100 500 1000 2000"}
DURATION=${DURATION:-40}
mkdir -p "$OUT"
scripts/install-deps.sh
cargo build --release -q -p ingestd --bin ingestd
cargo build --release -q -p benches --bin devsim --bin recvfloor
if [ ! -x target/loadenv/bin/python ]; then
  python3 -m venv target/loadenv
  target/loadenv/bin/pip install -q -r benches/load/requirements.txt
fi
PY=target/loadenv/bin/python
IN=target/bench-inputs
mkdir -p "$IN"
# The stream of the criterion benches: 720p25, 2.7 Mbit/s, 2 s GOP, no B-frames.
enc() { # enc OUT BFRAMES
  [ -s "$1" ] || ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=25:duration=10 \
    -pix_fmt yuv420p -c:v libx264 -preset veryfast -profile:v main -bf "$2" -g 50 -keyint_min 50 \
    -sc_threshold 0 -b:v 2700k -maxrate 2700k -bufsize 5400k -f h264 "$1"
}
enc "$IN/720p25_2700k_10s.h264" 0
enc "$IN/720p25_2700k_bf2_10s.h264" 2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # thousands of sockets
RES="$OUT/results.jsonl"
: > "$RES"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "commit: $(git rev-parse --short HEAD)"
} | tee "$OUT/machine.txt"
run() { "$PY" benches/load/loadtest.py --input "$IN/720p25_2700k_10s.h264" --duration "$DURATION" --out "$RES" "$@"; }
# Interleave the approaches so slow drifts of a shared machine hit all of them.
for N in $CHUNKS_N; do run --approach ffmpeg-chunks --streams "$N"; done
for N in $FFMPEG_N; do run --approach ffmpeg-hls --streams "$N"; done
for N in $INGESTD_N; do run --approach ingestd --streams "$N"; done
for N in $FLOOR_N; do run --approach floor --streams "$N"; done
# FFmpeg 5.1's CLI cannot stream-copy raw H.264 with B-frames into HLS.
ffmpeg -nostdin -hide_banner -f h264 -framerate 25 -i "$IN/720p25_2700k_bf2_10s.h264" -c copy -f hls \
  -hls_time 4 "$(mktemp -d)/index.m3u8" > "$OUT/bframes-ffmpeg.txt" 2>&1 && echo "exit 0" >> "$OUT/bframes-ffmpeg.txt" \
  || echo "exit $?" >> "$OUT/bframes-ffmpeg.txt"
tail -3 "$OUT/bframes-ffmpeg.txt"
"$PY" benches/load/plot.py "$RES" "$OUT/load.svg"
echo "results: $RES; plot: $OUT/load.svg"
