#!/usr/bin/env bash
# Load benchmark of hlsd (not a test): playlist requests/s and segment bytes/s with wrk.
# Makes a 720p 2.7 Mbit/s stream with 4 s segments (ffmpeg CLI), starts the release hlsd on
# 127.0.0.1, and runs wrk against a live playlist (plain and gzip) and a ~1.4 MB segment.
# Usage: benches/hlsd/run.sh [seconds-per-run] [connections] [auth [reps]]
# With `auth`, instead: the cost of access control, side by side on one server: the live
# playlist and the segment fetched anonymously, with a session cookie, with an API key and with
# a player token (`?token=` and the `/t/<token>/` path form), the five arms interleaved `reps`
# times (default 3), medians printed last.
# Needs: Debian packages wrk and ffmpeg; `npm ci --prefix hlsd/web` done before the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10}
CONN=${2:-64}
MODE=${3:-}
REPS=${4:-3}
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
# Anonymous allowed, so the plain runs measure delivery alone (logins are checked by the tests);
# a request with credentials is still checked in full, which the `auth` mode measures.
RUST_LOG=warn target/release/hlsd --data-dir "$DATA" --listen "127.0.0.1:$PORT" --max-connections 10000 --allow-anonymous &
PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 50); do curl -sf "$BASE/api/streams" >/dev/null && break; sleep 0.1; done
SEG=$(stat -c %s "$S/3.ts")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); segment 3.ts = $SEG bytes"
if [ "$MODE" = auth ]; then
  # A viewer granted only this device: the narrowest account, so the grant check runs too.
  target/release/hlsd --data-dir "$DATA" user add bench --role viewer --password bench-password --grant 132570034500 >/dev/null
  KEY=$(target/release/hlsd --data-dir "$DATA" user key bench --label bench | grep -o 'fk_[A-Za-z0-9_-]*' | head -1)
  COOKIE=$(curl -sf -o /dev/null -D - -H 'content-type: application/json' -d '{"name":"bench","password":"bench-password"}' \
    "$BASE/api/login" | sed -n 's/^[Ss]et-[Cc]ookie: \(fleet_session=[^;]*\).*/\1/p')
  TOKEN=$(curl -sf -H "Cookie: $COOKIE" -H 'content-type: application/json' -d '{"stream":"132570034500_1"}' \
    "$BASE/api/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  [ -n "$KEY" ] && [ -n "$COOKIE" ] && [ -n "$TOKEN" ] || { echo "could not get a key, cookie or token" >&2; exit 1; }
  L="$BASE/live/132570034500_1"
  declare -A RES
  arm() { # arm <name> <object> <url> [header]
    local out; out=$(wrk -t2 -c"$CONN" -d"${DUR}s" ${4:+-H "$4"} "$3")
    local code; code=$(curl -s -o /dev/null -w '%{http_code}' ${4:+-H "$4"} "$3")
    [ "$code" = 200 ] || { echo "$1 $2: HTTP $code" >&2; exit 1; }
    local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    echo "$1 $2: $rps req/s ($(awk '/Latency/ {print $2}' <<<"$out") mean)"
    RES["$1 $2"]+="$rps "
  }
  ARMS=(anonymous cookie api-key token-query token-path)
  run_arm() { # run_arm <arm> <object> <file>
    case $1 in
      anonymous) arm "$1" "$2" "$L/$3" ;;
      cookie) arm "$1" "$2" "$L/$3" "Cookie: $COOKIE" ;;
      api-key) arm "$1" "$2" "$L/$3" "Authorization: Bearer $KEY" ;;
      token-query) arm "$1" "$2" "$L/$3?token=$TOKEN" ;;
      token-path) arm "$1" "$2" "$L/t/$TOKEN/$3" ;;
    esac
  }
  for r in $(seq "$REPS"); do
    echo "## rep $r"
    for obj in playlist segment; do
      f=index.m3u8; [ $obj = segment ] && f=3.ts
      # Each rep starts with another arm, so no arm always runs first (or last) on a noisy machine.
      for i in "${!ARMS[@]}"; do
        run_arm "${ARMS[$(((i + r) % ${#ARMS[@]}))]}" $obj $f
      done
    done
  done
  echo "## medians of $REPS (req/s; ratio to anonymous)"
  for obj in playlist segment; do
    base=$(tr ' ' '\n' <<<"${RES[anonymous $obj]}" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    for a in "${ARMS[@]}"; do
      m=$(tr ' ' '\n' <<<"${RES[$a $obj]}" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
      echo "$obj $a: $m ($(awk -v m="$m" -v b="$base" 'BEGIN {printf "%.2f", m / b}'))"
    done
  done
  echo "## hlsd RSS after the runs: $(ps -o rss= -p $PID) kB"
  exit 0
fi
echo "## playlist (identity)"
wrk -t2 -c"$CONN" -d"${DUR}s" "$BASE/live/132570034500_1/index.m3u8"
echo "## playlist (gzip)"
wrk -t2 -c"$CONN" -d"${DUR}s" -H 'Accept-Encoding: gzip' "$BASE/live/132570034500_1/index.m3u8"
echo "## segment"
wrk -t2 -c"$CONN" -d"${DUR}s" "$BASE/live/132570034500_1/3.ts"
echo "## hlsd RSS after the runs: $(ps -o rss= -p $PID) kB"
