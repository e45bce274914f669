#!/usr/bin/env python3
"""Plots a load-test results file (JSON lines from loadtest.py).

usage: plot.py RESULTS.jsonl OUT.svg

Four panels, one line per approach: server CPU (% of one core) against
streams, CPU per stream against streams (with the issue's 10x goal: the
best ffmpeg-per-stream figure divided by ten), p99 segment-publish latency
against streams, and server memory per stream against streams. Runs the sender could not keep at real time
(late sends), or where the old design's chunk queue grew, are drawn
hollow: beyond them the machine is saturated.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "ingestd": ("ingestd (this project)", "tab:blue", "o"),
    "ffmpeg-hls": ("one ffmpeg -c copy -f hls per stream", "tab:orange", "s"),
    "ffmpeg-chunks": ("old design: ffmpeg per 150 kB chunk", "tab:red", "^"),
    "floor": ("floor: receive + write the bytes, nothing else", "tab:grey", "x"),
}


def latency(r):
    if r["approach"] == "ingestd":
        return r.get("publish_p99_ms")
    if r["approach"] == "ffmpeg-hls":
        return r.get("external_p99_ms")
    if r["approach"] == "floor":
        return None  # publishes nothing
    return r.get("chunk_wall_p99_ms")


def main():
    src, out = sys.argv[1], sys.argv[2]
    rows = [json.loads(x) for x in open(src) if x.strip()]
    fig, axes = plt.subplots(1, 4, figsize=(21, 5))
    for approach, (label, color, marker) in STYLE.items():
        rs = sorted((r for r in rows if r["approach"] == approach), key=lambda r: r["streams"])
        if not rs:
            continue
        n = [r["streams"] for r in rs]
        ok = [r.get("late_sends", 0) == 0 and r.get("lost_frames", 0) == 0
              and r.get("lost_bytes", 0) == 0
              and r.get("backlog_chunks_at_end", 0) <= r["streams"] for r in rs]
        panels = [
            [r["server_cpu_pct"] for r in rs],
            [r["cpu_pct_per_stream"] for r in rs],
            [latency(r) for r in rs],
            # The old design's memory is mostly in short-lived ffmpeg
            # children, which the sampler does not see: left out.
            [None if approach == "ffmpeg-chunks" else
             (r.get("pss_per_stream_mb") or r["rss_per_stream_mb"]) for r in rs],
        ]
        for ax, ys in zip(axes, panels):
            pts = [(x, y, k) for x, y, k in zip(n, ys, ok) if y is not None]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, label=label)
            for x, y, k in pts:
                ax.plot([x], [y], marker=marker, color=color,
                        markerfacecolor=color if k else "white")
    titles = [
        ("server CPU, % of one core (2-core machine: 200% max)", "% of one core"),
        ("server CPU per stream", "% of one core per stream (log)"),
        ("p99 segment publish latency", "ms (log)"),
        ("server memory per stream (ffmpeg: PSS)", "MB per stream (log)"),
    ]
    for ax, (t, yl) in zip(axes, titles):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("concurrent 720p25 2.7 Mbit/s streams (log)")
        ax.set_ylabel(yl)
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].axhline(200, color="grey", lw=0.8, ls="--")
    axes[1].set_yscale("log")
    ffmpeg = [r["cpu_pct_per_stream"] for r in rows if r["approach"] == "ffmpeg-hls"]
    if ffmpeg:
        axes[1].axhline(min(ffmpeg) / 10, color="grey", lw=0.8, ls="--")
        axes[1].annotate("10x goal: best ffmpeg per stream / 10", (0.02, min(ffmpeg) / 10),
                         xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
    axes[2].set_yscale("log")
    axes[2].axhline(50, color="grey", lw=0.8, ls="--")
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("hollow marker: the sender fell behind real time, frames were lost, or chunks "
                 "queued up (old design); the box runs the sender too", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
