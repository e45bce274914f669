#!/usr/bin/env python3
"""Viewers of live streams served by hlsd out of an object store, and what they cost the store.

Started by benches/load/store-budget.sh (not a test). For each stream, VIEWERS simulated
players reload the playlist every RELOAD seconds and GET every segment they have not read yet,
as hls.js does; one prober per stream reloads every PROBE seconds (environment, default 0.1) and
records when each segment first appears in hlsd's playlist (the sighting is up to PROBE late, and
later when this one Python process is short of CPU: read the latency as an upper bound). hlsd's and ingestd's /metrics are read at the start and the end of
the window, so the store's requests are the daemons' own counters over exactly that window.

Publish-to-playable latency: devsim stamps media with the wall clock (--wall-clock) and logs
every keyframe it finished sending (--keyframe-log: `<stream> <media ms> <unix ns>`). A segment
can be published once the keyframe that starts the next one has arrived, so its latency is
`first seen in hlsd's playlist - that keyframe's send time`, the keyframe being the one whose
media time (its send time, with --wall-clock) is the segment's PROGRAM-DATE-TIME plus its
duration.

Usage: store_viewers.py HLSD INGESTD STREAMS VIEWERS RELOAD SECS > run.json  (measures), then,
once devsim has exited and written its keyframe log: store_viewers.py report run.json LOG.
"""

import asyncio
import json
import re
import sys
import os
import time

PROBE = float(os.environ.get("PROBE", "0.1"))


async def get(host, port, path):
    """One GET over a fresh connection: (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body


def parse(text):
    """(media sequence, [(uri, pdt ms, duration s)]) of a media playlist."""
    seq, out, pdt, dur = 0, [], None, None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            stamp = line.split(":", 1)[1]
            pdt = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            ms = re.search(r"\.(\d+)", stamp)
            pdt = pdt * 1000 + (int(ms.group(1)[:3].ljust(3, "0")) if ms else 0)
        elif line.startswith("#EXTINF:"):
            dur = float(line.split(":", 1)[1].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((line, pdt, dur))
            pdt = pdt + dur * 1000 if pdt is not None and dur else None
    return seq, out


def metrics(text):
    """{name{labels}: value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


async def viewer(host, port, stream, reload_s, stop, counts):
    seen = set()
    while time.time() < stop:
        status, body = await get(host, port, f"/live/{stream}/index.m3u8")
        counts["playlist"] += 1
        if status == 200:
            _, segments = parse(body.decode())
            # A player starts three segments from the live edge, then reads each new one.
            fresh = [s[0] for s in segments if s[0] not in seen]
            if not seen:
                fresh = fresh[-3:]
                seen.update(s[0] for s in segments)
            for uri in fresh:
                s, data = await get(host, port, f"/live/{stream}/{uri}")
                counts["segment"] += 1
                counts["bytes"] += len(data)
                counts["errors"] += s != 200
                seen.add(uri)
        await asyncio.sleep(reload_s)


async def prober(host, port, stream, stop, first_seen):
    while time.time() < stop:
        status, body = await get(host, port, f"/live/{stream}/index.m3u8")
        if status == 200:
            now = time.time()
            for uri, pdt, dur in parse(body.decode())[1]:
                if pdt is not None and dur:
                    first_seen.setdefault((stream, uri), (now, pdt + dur * 1000))
        await asyncio.sleep(PROBE)


async def main():
    hlsd, ingestd, streams, viewers, reload_s, secs = sys.argv[1:7]
    host, port = hlsd.split(":")
    ihost, iport = ingestd.split(":")
    streams = streams.split(",")
    viewers, reload_s, secs = int(viewers), float(reload_s), float(secs)
    before_h = metrics((await get(host, port, "/metrics"))[1].decode())
    before_i = metrics((await get(ihost, iport, "/metrics"))[1].decode())
    start = time.time()
    stop = start + secs
    counts = {"playlist": 0, "segment": 0, "bytes": 0, "errors": 0}
    first_seen = {}
    tasks = [prober(host, port, s, stop, first_seen) for s in streams]
    tasks += [viewer(host, port, s, reload_s, stop, counts) for s in streams for _ in range(viewers)]
    await asyncio.gather(*tasks)
    window = time.time() - start
    after_h = metrics((await get(host, port, "/metrics"))[1].decode())
    after_i = metrics((await get(ihost, iport, "/metrics"))[1].decode())
    delta = lambda a, b, k: a.get(k, 0) - b.get(k, 0)

    n = len(streams)
    h_pl = delta(after_h, before_h, 'hlsd_store_gets_total{kind="playlist"}')
    h_seg = delta(after_h, before_h, 'hlsd_store_gets_total{kind="segment"}')
    puts = delta(after_i, before_i, "ingestd_storage_uploads_total")
    print(json.dumps({
        "streams": n,
        "viewers_per_stream": viewers,
        "window_s": round(window, 1),
        "viewer_requests_per_s": round((counts["playlist"] + counts["segment"]) / window, 1),
        "viewer_segment_mb_per_s": round(counts["bytes"] / window / 1e6, 2),
        "viewer_errors": counts["errors"],
        "store_puts_per_s": round(puts / window, 2),
        "store_puts_per_s_per_1000_streams": round(puts / window / n * 1000, 1),
        "store_gets_per_s": round((h_pl + h_seg) / window, 2),
        "store_playlist_gets_per_s_per_stream": round(h_pl / window / n, 3),
        "store_segment_gets_per_s_per_stream": round(h_seg / window / n, 3),
        "store_gets_per_viewer_request": round((h_pl + h_seg) / max(1, counts["playlist"] + counts["segment"]), 4),
        "cache_hits": int(delta(after_h, before_h, "hlsd_store_cache_hits_total")),
        "upload_backlog_at_end": after_i.get("ingestd_storage_backlog_operations"),
        "first_seen": [[st, uri, at, end_ms] for (st, uri), (at, end_ms) in first_seen.items()],
        "start": start,
    }))


def report(run_file, keyframe_log):
    run = json.load(open(run_file))
    # Keyframe send times by stream.
    sent = {}
    for line in open(keyframe_log):
        parts = line.split()
        if len(parts) == 3:
            sent.setdefault(parts[0], []).append((int(parts[1]), int(parts[2]) / 1e9))
    latencies = []
    for stream, _, seen_at, end_ms in run.pop("first_seen"):
        if seen_at < run["start"] + 15:  # Segments already listed when probing began say nothing.
            continue
        # With --wall-clock a frame's media time is its send time, and devsim logs media times
        # from the stream's start: the closing keyframe is the one sent at the segment's end.
        near = [(abs(t * 1000 - end_ms), t) for _, t in sent.get(stream, [])]
        if near:
            gap, t = min(near)
            if gap <= 300:
                latencies.append(seen_at - t)
    latencies.sort()
    q = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 3) if latencies else None
    run.pop("start")
    run["publish_to_playable_s"] = {"segments": len(latencies), "p50": q(0.5), "p99": q(0.99),
                                    "max": q(1.0)}
    print(json.dumps(run))


if sys.argv[1] == "report":
    report(sys.argv[2], sys.argv[3])
else:
    asyncio.run(main())
