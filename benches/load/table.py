#!/usr/bin/env python3
"""Prints a load-test results file (JSON lines from loadtest.py) as the
Markdown tables of BENCHMARKS.md.

usage: table.py RESULTS.jsonl
"""

import json
import sys

NAMES = {
    "ingestd": "ingestd",
    "ffmpeg-hls": "ffmpeg -c copy -f hls, one per stream",
    "ffmpeg-chunks": "old design: ffmpeg per 150 kB chunk",
    "floor": "floor: receive + write only (recvfloor)",
}


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def main():
    rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
    print("| approach | streams | server CPU (% of a core) | per stream | streams per core | "
          "sender CPU | machine busy | RSS per stream (MB) | frames sent / muxed | "
          "sender late | p50 / p99 publish (ms) | p50 / p99 external (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|")
    order = {k: i for i, k in enumerate(NAMES)}
    for r in sorted(rows, key=lambda r: (order.get(r["approach"], 9), r["streams"])):
        a = r["approach"]
        if a == "ffmpeg-hls":
            mem = f"{fmt(r['rss_per_stream_mb'], 1)} RSS, {fmt(r.get('pss_per_stream_mb'), 1)} PSS"
        else:
            mem = fmt(r["rss_per_stream_mb"], 3)
        if a == "ffmpeg-chunks":
            frames = f"{fmt(r['frames_sent'])} / backlog {fmt(r['backlog_chunks_at_end'])} chunks"
            publish = (f"ffmpeg run {fmt(r['chunk_wall_p50_ms'])} / {fmt(r['chunk_wall_p99_ms'])}")
            external = "-"
        elif a == "floor":
            frames = f"bytes {fmt(r['bytes_sent'])} / {fmt(r['bytes_received'])}"
            publish = external = "-"
        else:
            frames = f"{fmt(r['frames_sent'])} / {fmt(r.get('frames_muxed'))}"
            publish = (f"{fmt(r.get('publish_p50_ms'), 2)} / {fmt(r.get('publish_p99_ms'), 2)}"
                       if a == "ingestd" else "-")
            external = f"{fmt(r.get('external_p50_ms'))} / {fmt(r.get('external_p99_ms'))}"
        print(f"| {NAMES.get(a, a)} | {fmt(r['streams'])} | {fmt(r['server_cpu_pct'])} | "
              f"{fmt(r['cpu_pct_per_stream'], 3)} | {fmt(r['streams_per_core'])} | "
              f"{fmt(r['sender_cpu_pct'])} | {fmt(r['machine_busy_pct'])} | {mem} | {frames} | "
              f"{fmt(r['late_sends'])} | {publish} | {external} |")


if __name__ == "__main__":
    main()
