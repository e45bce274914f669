#!/usr/bin/env python3
"""Summarises an A/B results file (JSON lines from loadtest.py, e.g. written by
audio-ab.sh) as a Markdown table: per (streams, label), every run's server CPU
per stream and the median of each measure, with the ratio to the `video` arm
of the same stream count.

usage: abtable.py RESULTS.jsonl [BASE_LABEL]      (BASE_LABEL default: video)
"""

import json
import statistics
import sys


def med(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(v) if v else None


def main():
    base_label = sys.argv[2] if len(sys.argv) > 2 else "video"
    rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
    groups = {}
    for r in rows:
        groups.setdefault((r["streams"], r.get("label") or ""), []).append(r)
    print("| streams | arm | runs | CPU per stream, each run (% of a core) | median | vs video | "
          "added per stream | sender CPU | machine busy | RSS per stream (MB) | "
          "p50 / p99 publish (ms), medians | p99 external (ms) | lost | sender late |")
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for (n, label), rs in sorted(groups.items()):
        base = groups.get((n, base_label))
        m = med(rs, "cpu_pct_per_stream")
        b = med(base, "cpu_pct_per_stream") if base else None
        ratio = f"{m / b:.2f}x" if b else "-"
        added = f"+{m - b:.3f}" if b and label != base_label else "-"
        each = " / ".join(f"{r['cpu_pct_per_stream']:.3f}" for r in rs)
        print(f"| {n} | {label} | {len(rs)} | {each} | **{m:.3f}** | {ratio} | {added} | "
              f"{med(rs, 'sender_cpu_pct'):.1f} | {med(rs, 'machine_busy_pct'):.1f} | "
              f"{med(rs, 'rss_per_stream_mb'):.3f} | "
              f"{med(rs, 'publish_p50_ms'):.2f} / {med(rs, 'publish_p99_ms'):.2f} | "
              f"{med(rs, 'external_p99_ms')} | {sum(r.get('lost_frames', 0) for r in rs)} | "
              f"{sum(r['late_sends'] for r in rs)} |")


if __name__ == "__main__":
    main()
