#!/usr/bin/env bash
# Issue 19: what viewers blocked on one low-latency stream cost. The real daemons (release
# builds) on 127.0.0.1 and one devsim dashcam; N clients (asyncio, one TCP connection each)
# ask at once for a part 10 parts (2 s) ahead of the preload hint, which is held until it
# exists: first straight at ingestd, then through hlsd. Prints the RSS of ingestd and hlsd
# before and while the N requests are held, per request, and how many were answered 200 with
# the part's bytes.
#
# Usage: benches/load/ll-viewers.sh        N=1000 overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-1000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
HLSD_ARGS=(--max-connections 20000)
. benches/load/daemons.sh
"$BIN"/devsim --jt1078 127.0.0.1:16809 --input fixtures/baseline.h264 --loop --wall-clock \
  >"$DIR/devsim.log" 2>&1 &
pids+=($!)
STREAM=013800000000_1
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:16811/ll/$STREAM/ll.m3u8" | grep -q EXT-X-PART && break
  sleep 0.2
done
python3 - "$N" "$INGESTD" "$HLSD" "$STREAM" <<'PY'
import asyncio, re, sys, time, urllib.request
n, ingestd_pid, hlsd_pid, stream = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def hint(base):
    text = urllib.request.urlopen(f"{base}/ll.m3u8", timeout=30).read().decode()
    m = re.search(r'PRELOAD-HINT:TYPE=PART,URI="ll-(\d+)\.(\d+)\.m4s"', text)
    return int(m.group(1)), int(m.group(2))

async def one(port, path):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), len(body)

async def run(name, port, base_path, watch):
    base = f"http://127.0.0.1:{port}{base_path}"
    msn, part = hint(base)
    # Ten parts (2 s) ahead, in the same segment if it has room, else the next one's first.
    target = f"{base_path}/ll-{msn}.{part + 10}.m4s"
    before = {p: rss_kib(p) for p in watch}
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(port, target)) for _ in range(n)]
    await asyncio.sleep(1.0)
    held = {p: rss_kib(p) for p in watch}
    res = await asyncio.gather(*tasks, return_exceptions=True)
    took = time.perf_counter() - t0
    ok = sum(1 for x in res if not isinstance(x, Exception) and x[0] == 200 and x[1] > 0)
    codes = {}
    for x in res:
        k = "error" if isinstance(x, Exception) else x[0]
        codes[k] = codes.get(k, 0) + 1
    for p, label in watch.items():
        d = held[p] - before[p]
        print(f"{name:<16} {label:<8} RSS before {before[p] / 1024:7.1f} MB, with {n} held {held[p] / 1024:7.1f} MB: "
              f"+{d / 1024:.1f} MB, {d * 1024 / n:,.0f} bytes a request")
    print(f"{name:<16} answered 200 with the part: {ok}/{n} ({codes}) in {took:.2f} s")

async def main():
    await run("ingestd direct", 16811, f"/ll/{stream}", {ingestd_pid: "ingestd"})
    await asyncio.sleep(2)
    await run("through hlsd", 18080, f"/live/{stream}", {ingestd_pid: "ingestd", hlsd_pid: "hlsd"})

asyncio.run(main())
PY
