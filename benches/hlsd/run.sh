#!/usr/bin/env bash
# Load benchmark of hlsd (not a test): playlist requests/s and segment bytes/s with wrk.
# Makes a 720p 2.7 Mbit/s stream with 4 s segments (ffmpeg CLI), starts the release hlsd on
# 127.0.0.1, and runs wrk against a live playlist (plain and gzip) and a ~1.4 MB segment.
# Usage: benches/hlsd/run.sh [seconds-per-run] [connections]
# Needs: Debian packages wrk and ffmpeg; `npm ci --prefix hlsd/web` done before the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10}
CONN=${2:-64}
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -q -p hlsd
DATA=$(mktemp -d)
trap 'kill ${PID:-} 2>/dev/null || true; rm -rf "$DATA"' EXIT
S="$DATA/live/132570034500_1"
mkdir -p "$S"
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1280x720:rate=25 -t 24 -c:v libx264 -preset veryfast \
  -b:v 2700k -maxrate 2700k -bufsize 5400k -g 100 -keyint_min 100 -sc_threshold 0 -pix_fmt yuv420p \
  -f hls -hls_time 4 -hls_list_size 0 -start_number 0 -hls_segment_filename "$S/%d.ts" "$S/ffmpeg.m3u8"
{ echo "#EXTM3U"; echo "#EXT-X-VERSION:3"; echo "#EXT-X-TARGETDURATION:4"; echo "#EXT-X-MEDIA-SEQUENCE:0"
  for i in 0 1 2 3 4 5; do echo "#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:0${i}.000Z"; echo "#EXTINF:4.000000,"; echo "$i.ts"; done
} > "$S/index.m3u8"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Anonymous: this run measures delivery; logins are checked by the tests.
RUST_LOG=warn target/release/hlsd --data-dir "$DATA" --listen "127.0.0.1:$PORT" --max-connections 10000 --allow-anonymous &
PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/api/streams" >/dev/null && break; sleep 0.1; done
SEG=$(stat -c %s "$S/3.ts")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); segment 3.ts = $SEG bytes"
echo "## playlist (identity)"
wrk -t2 -c"$CONN" -d"${DUR}s" "http://127.0.0.1:$PORT/live/132570034500_1/index.m3u8"
echo "## playlist (gzip)"
wrk -t2 -c"$CONN" -d"${DUR}s" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PORT/live/132570034500_1/index.m3u8"
echo "## segment"
wrk -t2 -c"$CONN" -d"${DUR}s" "http://127.0.0.1:$PORT/live/132570034500_1/3.ts"
echo "## hlsd RSS after the runs: $(ps -o rss= -p $PID) kB"
