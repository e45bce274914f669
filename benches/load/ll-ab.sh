#!/usr/bin/env bash
# Issue 19 load A/B: N simulated devices sending the 720p25 2.7 Mbit/s stream of run.sh at
# real time into ingestd with --low-latency off, on (the default: parts only for streams
# someone asks for; nobody asks here, so this is what an unwatched fleet costs) and always
# (every stream makes fragmented-MP4 parts and holds three target durations of them: the
# worst case, every stream watched). Alternated in one run so slow drifts of a shared machine
# hit every arm alike (the order flips every repetition).
#
# Usage: benches/load/ll-ab.sh [OUT.jsonl]     (default target/load/ll-ab.jsonl)
#   AB_N="200 1000" REPS=3 DURATION=40 ARMS="off on always" override.
# Summarise with: python3 benches/load/abtable.py OUT.jsonl ll-off
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/load/ll-ab.jsonl}
AB_N=${AB_N:-"200 1000"}
ARMS=${ARMS:-"off on always"}
REPS=${REPS:-3}
DURATION=${DURATION:-40}
mkdir -p "$(dirname "$OUT")"
. benches/load/inputs.sh
for rep in $(seq "$REPS"); do
  for N in $AB_N; do
    order=$ARMS
    [ $((rep % 2)) = 1 ] || order=$(echo $ARMS | tr ' ' '\n' | tac | xargs)
    for a in $order; do
      "$PY" benches/load/loadtest.py --approach ingestd --input "$IN" --duration "$DURATION" \
        --out "$OUT" --streams "$N" --label "ll-$a" --ingestd-arg=--low-latency=$a
    done
  done
done
echo "results: $OUT"
