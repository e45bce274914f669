#!/usr/bin/env bash
# Issue 17: what an operator waits for when working with a dashcam's SD card, through the real
# daemons (release builds) and devsim as the device (on 127.0.0.1, so the figures are our
# side's cost plus devsim's, without a cellular link):
#   - list: GET /api/devices/<sim>/recordings for a whole day (devsim's 24 h card, 576 entries
#     on two channels, sent as sub-packaged 0x1205), REPS times;
#   - first picture: POST .../playback of a 60 s recording, until hlsd answers with a playlist
#     that holds a segment (`waited_ms`), at 1x and at 16x fast forward;
#   - complete: until that playlist ends with ENDLIST.
# Prints one line per measurement and the medians.
#
# Usage: benches/load/recordings.sh        REPS=5 override.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-5}
HLSD_ARGS=()
. benches/load/daemons.sh
# Signalling only: the card answers queries and uploads on request.
"$BIN"/devsim --jt808 127.0.0.1:16808 --input fixtures/baseline.h264 --sd-channels 1,2 \
  >"$DIR/devsim.log" 2>&1 &
pids+=($!)
SIM=013800000000
API=http://127.0.0.1:18080/api/devices/$SIM
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:18080/api/devices" | grep -q "\"$SIM\"" && break
  sleep 0.2
done
python3 - "$API" "$REPS" <<'PY'
import json, statistics, sys, time, urllib.request
api, reps = sys.argv[1], int(sys.argv[2])
base = api.split('/api/')[0]

def call(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={'content-type': 'application/json'})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())

now = int(time.time() * 1000)
lists, entries = [], None
for _ in range(reps):
    t = time.perf_counter()
    v = call('GET', f'{api}/recordings?channel=0&from={now - 86_400_000}&to={now}')
    lists.append((time.perf_counter() - t) * 1000)
    entries = len(v)
    print(f'list: {entries} recordings in {lists[-1]:.1f} ms')
rec = [r for r in v if r['channel'] == 1 and r['end_ms'] - r['start_ms'] >= 60_000]
first, done = {1: [], 16: []}, {1: [], 16: []}
for i in range(reps):
    for speed in (16, 1) if i % 2 else (1, 16):
        r = rec[-1 - (2 * i + (speed == 16))]
        body = {'start_ms': r['start_ms'], 'end_ms': r['start_ms'] + 60_000, 'replace': True}
        if speed > 1:
            body.update(mode=1, speed=speed)
        t = time.perf_counter()
        a = call('POST', f'{api}/channels/1/playback', body)
        first[speed].append((time.perf_counter() - t) * 1000)
        while True:
            with urllib.request.urlopen(base + a['playlist'], timeout=10) as p:
                if b'#EXT-X-ENDLIST' in p.read():
                    break
            time.sleep(0.05)
        done[speed].append((time.perf_counter() - t) * 1000)
        print(f'playback 60 s at {speed}x: first playable segment {first[speed][-1]:.0f} ms, complete {done[speed][-1]:.0f} ms')
print(f'median list of {entries}: {statistics.median(lists):.1f} ms')
for s in (1, 16):
    print(f'median 60 s playback at {s}x: first picture {statistics.median(first[s]):.0f} ms, complete {statistics.median(done[s]):.0f} ms')
PY
