#!/usr/bin/env bash
# Issue 16 load A/B: N simulated devices sending the 720p25 2.7 Mbit/s stream of run.sh at
# real time into ingestd, without and with G.711A audio (devsim --audio: one 320-byte
# payload every 40 ms, interleaved with the video), alternated in one run so slow drifts of
# a shared machine hit both sides alike (the order flips every repetition).
#
# Usage: benches/load/audio-ab.sh [OUT.jsonl]     (default target/load/audio-ab.jsonl)
#   AB_N="100 200" REPS=3 DURATION=60 AUDIO=fixtures/audio/tone1k_g711a.raw AUDIO_PT=6
#   AUDIO_PACKET_BYTES=320 override. ARMS="video audio" by default; add audio-off for a third
#   arm that sends the same audio to an ingestd started with --audio=off (audio packets
#   received, reassembled and handed to the media workers, then counted and dropped: the
#   cost of carrying audio without transcoding it), audio-8k / audio-32k for ingestd
#   --audio-sample-rate=8000 / 32000 (the AAC output rate; "audio" leaves ingestd's
#   default). Appends one JSON object per run (loadtest.py); summarise with
#   benches/load/abtable.py OUT.jsonl.
# Needs what run.sh needs (ffmpeg, python3-venv); run.sh's set-up is repeated here.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/load/audio-ab.jsonl}
AB_N=${AB_N:-"100 200"}
ARMS=${ARMS:-"video audio"}
REPS=${REPS:-3}
DURATION=${DURATION:-60}
AUDIO=${AUDIO:-fixtures/audio/tone1k_g711a.raw}
AUDIO_PT=${AUDIO_PT:-6}
AUDIO_PACKET_BYTES=${AUDIO_PACKET_BYTES:-320}
mkdir -p "$(dirname "$OUT")"
. benches/load/inputs.sh
[ -s "$AUDIO" ] || { echo "no audio input $AUDIO" >&2; exit 1; }
run() { "$PY" benches/load/loadtest.py --approach ingestd --input "$IN" --duration "$DURATION" --out "$OUT" "$@"; }
arm() { # arm NAME N
  local a=(--audio "$AUDIO" --audio-pt "$AUDIO_PT" --audio-packet-bytes "$AUDIO_PACKET_BYTES")
  case $1 in
    video) run --streams "$2" --label video ;;
    audio) run --streams "$2" --label "video+audio" "${a[@]}" ;;
    audio-off) run --streams "$2" --label "video+audio, ingestd --audio=off" "${a[@]}" --ingestd-arg=--audio=off ;;
    audio-8k | audio-32k)
      local hz=${1#audio-}
      hz=${hz%k}000
      run --streams "$2" --label "video+audio, AAC ${1#audio-}Hz" "${a[@]}" --ingestd-arg=--audio-sample-rate=$hz ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}
for rep in $(seq "$REPS"); do
  for N in $AB_N; do
    # Odd repetitions in the order of ARMS, even ones reversed.
    order=$ARMS
    [ $((rep % 2)) = 1 ] || order=$(echo $ARMS | tr ' ' '\n' | tac | xargs)
    for a in $order; do arm "$a" "$N"; done
  done
done
echo "results: $OUT"
