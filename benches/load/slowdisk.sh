#!/usr/bin/env bash
# Issue 20, goal 5: ingestd with its data dir on a real disk that is slower than the streams
# sent to it. A file image on the machine's own disk is attached as a loop device, formatted
# ext4 and mounted; the root blkio cgroup caps that device's writes at DISK_MBPS (the kernel's
# block throttle: it holds every write to the device, the page cache's writeback included,
# and nothing else on the machine). Then loadtest.py runs N devices of the 720p25 2.7 Mbit/s
# stream into ingestd with --fsync on and off, its work dir (data dir included) on that disk,
# and records what an operator would see: frames lost (must be 0), how far the devices fell
# behind real time (TCP backpressure), publish p99, the media workers' busy and CPU seconds
# (ingestd_media_worker_{busy,cpu}_seconds_total) and the number of "the disk is the
# bottleneck" log lines.
#
# Usage (root): benches/load/slowdisk.sh [OUT_DIR]           (default target/slowdisk)
#   Env: DISK_MBPS=20 SLOW_N="30 100" FSYNC="on off" DURATION=60 REPS=1
#        DIRTY_SHARE=1 (percent of the machine's dirty page cache this disk may hold with
#        --fsync off: /sys/class/bdi/<dev>/max_ratio. With the default 100 a 24 GiB machine
#        buffers ~4.8 GB before writes block, minutes at these rates; a real server reaches
#        the same state, only later.)
#        SLOWDISK_IMG=target/slowdisk.img (8 GiB, sparse) SLOWDISK_MNT=/mnt/fleet-slowdisk
# Writes OUT_DIR/machine.txt and OUT_DIR/results.jsonl (one JSON object per run).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "slowdisk.sh needs root (losetup, mount, blkio throttle)" >&2; exit 2; }
OUT=${1:-target/slowdisk}
DISK_MBPS=${DISK_MBPS:-20}
SLOW_N=${SLOW_N:-"30 100"}
FSYNC=${FSYNC:-"on off"}
DURATION=${DURATION:-60}
REPS=${REPS:-1}
DIRTY_SHARE=${DIRTY_SHARE:-1}
IMG=${SLOWDISK_IMG:-target/slowdisk.img}
MNT=${SLOWDISK_MNT:-/mnt/fleet-slowdisk}
THROTTLE=/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device
[ -w "$THROTTLE" ] || { echo "no cgroup v1 blkio throttle at $THROTTLE" >&2; exit 2; }
mkdir -p "$OUT" "$(dirname "$IMG")" "$MNT"
. benches/load/inputs.sh

rm -f "$IMG"
truncate -s 8G "$IMG"
LOOP=$(losetup -f --show "$IMG")
MM=$(lsblk -dno MAJ:MIN "$LOOP" | tr -d ' ')
cleanup() {
  echo "$MM 0" > "$THROTTLE" 2>/dev/null || true
  umount "$MNT" 2>/dev/null || true
  losetup -d "$LOOP" 2>/dev/null || true
  rm -f "$IMG"
}
trap cleanup EXIT
mkfs.ext4 -q "$LOOP"
mount "$LOOP" "$MNT"
echo "$MM $((DISK_MBPS * 1000 * 1000))" > "$THROTTLE"
echo "$DIRTY_SHARE" > "/sys/class/bdi/$MM/max_ratio"
# The cap as dd sees it: 200 MB written and fsynced.
dd_line=$(dd if=/dev/zero of="$MNT/dd.probe" bs=1M count=200 conv=fsync 2>&1 | tail -1)
rm -f "$MNT/dd.probe"

RES=$(fresh_results "$OUT")
{
  machine_lines
  echo "disk: $LOOP ($MM) ext4 on $IMG ($(stat -f -c %T "$(dirname "$IMG")") on $(df --output=source "$(dirname "$IMG")" | tail -1)), writes capped at $DISK_MBPS MB/s, bdi max_ratio $DIRTY_SHARE %"
  echo "dd 200 MB + fsync on it: $dd_line"
  echo "matrix: SLOW_N=\"$SLOW_N\" FSYNC=\"$FSYNC\" DURATION=$DURATION REPS=$REPS"
} | tee "$OUT/machine.txt"

failed=0
for rep in $(seq 1 "$REPS"); do
  for N in $SLOW_N; do
    for f in $FSYNC; do
      echo "$(date +%T) rep $rep/$REPS: fsync $f, $N streams"
      rm -rf "$MNT/work"
      # Segments are kept (no cleaner deletes): a deleted segment whose pages were
      # never written back would never cost the disk anything.
      "$PY" benches/load/loadtest.py --approach ingestd --streams "$N" --input "$IN" \
        --duration "$DURATION" --work "$MNT/work" --keep-segments-s 100000 \
        --ingestd-arg=--fsync="$f" --label "disk${DISK_MBPS}-fsync-$f" --out "$RES" > /dev/null \
        || { echo "  FAILED: fsync $f, $N streams" >&2; failed=$((failed + 1)); }
      sync
    done
  done
done
"$PY" - "$RES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| streams | fsync | sent MB/s | written MB/s | lost frames | devices' max lag | publish p99 | worker busy / CPU | 'disk is the bottleneck' lines |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    fs = r["label"].rsplit("-", 1)[1]
    sent = r["bytes_sent"] / r["wall_s"] / 1e6
    written = r["segment_bytes"] / r["wall_s"] / 1e6
    busy = f'{r.get("worker_busy_s", 0):.0f} s / {r.get("worker_cpu_s", 0):.0f} s'
    print(f'| {r["streams"]} | {fs} | {sent:.1f} | {written:.1f} | {r["lost_frames"]} | {r["max_lag_ms"] / 1000:.1f} s '
          f'| {r["publish_p99_ms"]:.0f} ms | {busy} | {r.get("log_disk_bottleneck")} |')
PY
[ "$failed" = 0 ] || { echo "$failed run(s) failed" >&2; exit 1; }
