#!/usr/bin/env bash
# Performance round 2 in one command: N simulated devices sending the 720p25 2.7 Mbit/s stream
# at real time into the floor (recvfloor: receive + write the bytes, nothing else), into
# ingestd at a steady pace, and into ingestd with bursty devices (devsim --burst=10
# --burst-hold=2000: every 10 s each device holds its media for 2 s, then sends it at once),
# interleaved floor, steady, burst for every N of every repetition so slow drifts of a shared
# machine hit all arms alike; then the round-2 plot and table (round2.py).
#
# Usage: benches/load/round2.sh [OUT_DIR]        (default target/round2)
#   Env overrides: ROUND2_N="500 1000 3000" REPS=3 DURATION=40 ARMS="floor steady burst";
#   INGESTD_BIN=path (loadtest.py --ingestd-bin; default target/release/ingestd);
#   WORK=dir (loadtest.py --work, its scratch dir; default /dev/shm/streamload, a tmpfs: point
#   it at a real disk to measure one); EXTRA_INGESTD_ARGS="--a=1 --b" (each word becomes
#   --ingestd-arg=WORD, ingestd arms only); RAMP, WARMUP (loadtest.py --ramp/--warmup; by
#   default loadtest.py's 4 s / 8 s, or 1 s / 2 s when DURATION < 20 so that a short smoke
#   run still has a steady window).
# Writes OUT_DIR/machine.txt, OUT_DIR/results.jsonl (one JSON object per run; an earlier
# non-empty one is kept as results.jsonl.<time>), OUT_DIR/round2.svg and OUT_DIR/round2.md.
# A failed run is reported and skipped; the script then exits 1 after the plot.
# Needs what run.sh needs (ffmpeg, python3-venv) and ~4 GB in WORK per 1000 ingestd streams.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/round2}
ROUND2_N=${ROUND2_N:-"500 1000 3000"}
REPS=${REPS:-3}
DURATION=${DURATION:-40}
ARMS=${ARMS:-"floor steady burst"}
mkdir -p "$OUT"
. benches/load/inputs.sh
cargo build --release -q -p benches --bin recvfloor

common=(--input "$IN" --duration "$DURATION")
if [ "${DURATION%.*}" -lt 20 ]; then ramp=1 warmup=2; else ramp=4 warmup=8; fi
common+=(--ramp "${RAMP:-$ramp}" --warmup "${WARMUP:-$warmup}")
work_dir=/dev/shm/streamload  # loadtest.py's default
if [ -n "${WORK:-}" ]; then
  work_dir=$WORK
  common+=(--work "$WORK")
fi
mkdir -p "$work_dir"
ingestd_args=()
[ -z "${INGESTD_BIN:-}" ] || ingestd_args+=(--ingestd-bin "$INGESTD_BIN")
read -ra extra <<< "${EXTRA_INGESTD_ARGS:-}"
for w in "${extra[@]}"; do ingestd_args+=("--ingestd-arg=$w"); done

RES=$(fresh_results "$OUT")
{
  machine_lines
  echo "work dir: $work_dir ($(stat -f -c %T "$work_dir"))"
  echo "ingestd: ${INGESTD_BIN:-target/release/ingestd} ${EXTRA_INGESTD_ARGS:-}"
  echo "matrix: ROUND2_N=\"$ROUND2_N\" REPS=$REPS DURATION=$DURATION ARMS=\"$ARMS\" ${common[*]:4:4}"
} | tee "$OUT/machine.txt"

failed=0
run() { # run LABEL N ARGS...
  local label=$1 n=$2
  shift 2
  echo "$(date +%T) rep $rep/$REPS: $label, $n streams"
  "$PY" benches/load/loadtest.py --streams "$n" "${common[@]}" --out "$RES" --label "$label" "$@" \
    > /dev/null || { echo "  FAILED: $label, $n streams (rep $rep)" >&2; failed=$((failed + 1)); }
}
for rep in $(seq 1 "$REPS"); do
  for N in $ROUND2_N; do
    for a in $ARMS; do
      case $a in
        floor) run floor "$N" --approach floor ;;
        steady) run steady "$N" --approach ingestd "${ingestd_args[@]}" ;;
        burst) run burst "$N" --approach ingestd "${ingestd_args[@]}" \
          --devsim-arg=--burst=10 --devsim-arg=--burst-hold=2000 ;;
        *) echo "unknown arm $a (floor, steady, burst)" >&2; exit 2 ;;
      esac
    done
  done
done
"$PY" benches/load/round2.py "$RES" "$OUT/round2.svg" "$OUT/round2.md"
cat "$OUT/round2.md"
echo "results: $RES; plot: $OUT/round2.svg; table: $OUT/round2.md; machine: $OUT/machine.txt"
[ "$failed" = 0 ] || { echo "$failed run(s) failed" >&2; exit 1; }
