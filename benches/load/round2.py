#!/usr/bin/env python3
"""Plots and tabulates a performance-round-2 results file (JSON lines from
loadtest.py, written by round2.sh): arms `floor` (recvfloor), `steady` and
`burst` (ingestd, devsim at a steady pace / with --burst), several reps each.

usage: round2.py RESULTS.jsonl OUT.svg [OUT.md]

Runs are grouped by (label, streams) and the median over reps is taken.
Three panels against streams: (a) server CPU per stream (% of one core),
ingestd arms solid, the floor dashed grey, the goal (1.25 x the floor's
median) dotted; (b) p99 segment-publish latency (ingestd's internal
histogram, publish_p99_ms) with the 50 ms goal; (c) server RSS per stream
(MB), floor included, with the 0.1 MB goal. Each rep is a light point, the
median a line. Runs where the sender fell behind real time (late_sends > 0:
the box was saturated) are drawn hollow.

The Markdown table (OUT.md, or stdout without it) has one row per
(streams, label): every rep's CPU per stream and the median, the median's
ratio to the floor's median at the same N, p50 / p99 publish medians, the
worst p99 over reps, RSS per stream, frames lost (floor: bytes lost) and
late sends, summed over reps. Numbers to 3 significant digits.
"""

import json
import math
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

ORDER = ["floor", "steady", "burst"]
COLORS = {"floor": "tab:grey", "steady": "tab:blue", "burst": "tab:orange"}
OTHER_COLORS = ["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
GOAL_RATIO = 1.25
GOAL_P99_MS = 50
GOAL_RSS_MB = 0.1


def sig3(v):
    """A number to 3 significant digits, never in exponent notation."""
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf"
    if isinstance(v, int) or v == 0 or abs(v) >= 100:
        return f"{round(v):,}"
    decimals = 2 - math.floor(math.log10(abs(v)))
    return f"{v:.{decimals}f}"


def med(rs, key):
    v = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(v) if v else None


def label_of(r):
    return r.get("label") or r["approach"]


def saturated(r):
    return (r.get("late_sends") or 0) > 0


def load(path):
    rows = [json.loads(x) for x in open(path) if x.strip()]
    groups = {}  # (label, streams) -> runs, in file order
    for r in rows:
        groups.setdefault((label_of(r), r["streams"]), []).append(r)
    labels = sorted({lab for lab, _ in groups},
                    key=lambda lab: (ORDER.index(lab) if lab in ORDER else len(ORDER), lab))
    is_floor = {lab: all(r["approach"] == "floor" for (l2, _), rs in groups.items() if l2 == lab for r in rs)
                for lab in labels}
    return groups, labels, is_floor


def floor_median(groups, is_floor, n, key):
    rs = [r for (lab, m), g in groups.items() if m == n and is_floor[lab] for r in g]
    return med(rs, key)


def plot(groups, labels, is_floor, out):
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    panels = [
        ("cpu_pct_per_stream", "(a) server CPU per stream", "% of one core per stream", True),
        ("publish_p99_ms", "(b) p99 segment publish latency (ingestd internal)", "ms", False),
        ("rss_per_stream_mb", "(c) server RSS per stream", "MB per stream", True),
    ]
    others = iter(OTHER_COLORS)
    colors = {lab: COLORS.get(lab) or (COLORS["floor"] if is_floor[lab] else next(others, "black"))
              for lab in labels}
    for ax, (key, title, ylabel, with_floor) in zip(axes, panels):
        for lab in labels:
            if is_floor[lab] and not with_floor:
                continue
            ns = sorted(n for l2, n in groups if l2 == lab)
            color = colors[lab]
            line_style = "--" if is_floor[lab] else "-"
            marker = "x" if is_floor[lab] else "o"
            xs, ys, sat = [], [], []
            for n in ns:
                rs = groups[(lab, n)]
                for r in rs:
                    if r.get(key) is None:
                        continue
                    hollow = saturated(r)
                    ax.plot([n], [r[key]], marker=marker, ms=5, alpha=0.35, color=color, ls="none",
                            markerfacecolor="white" if hollow else color)
                m = med(rs, key)
                if m is not None:
                    xs.append(n)
                    ys.append(m)
                    sat.append(any(saturated(r) for r in rs))
            if not xs:
                continue
            ax.plot(xs, ys, ls=line_style, color=color, lw=1.6, label=f"{lab} (median)")
            for x, y, s in zip(xs, ys, sat):
                ax.plot([x], [y], marker=marker, ms=7, color=color, ls="none",
                        markerfacecolor="white" if s else color)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("concurrent 720p25 2.7 Mbit/s streams")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    # (a) goal: 1.25 x the floor's median at each N.
    ns = sorted({n for lab, n in groups if is_floor[lab]})
    goal = [(n, floor_median(groups, is_floor, n, "cpu_pct_per_stream")) for n in ns]
    goal = [(n, GOAL_RATIO * f) for n, f in goal if f is not None]
    if goal:
        xs, ys = zip(*goal)
        axes[0].plot(xs, ys, ls=":", color="black", lw=1.2, marker="_" if len(xs) == 1 else None,
                     ms=14, label=f"goal: {GOAL_RATIO}x floor")
    axes[1].axhline(GOAL_P99_MS, color="black", lw=1.0, ls=":", label=f"goal ({GOAL_P99_MS} ms)")
    axes[2].axhline(GOAL_RSS_MB, color="black", lw=1.0, ls=":", label=f"goal ({GOAL_RSS_MB} MB)")
    # A burst arm's p99 can be far above the goal: log scale when the range is wide.
    p99 = [r["publish_p99_ms"] for g in groups.values() for r in g
           if r.get("publish_p99_ms") and not math.isinf(r["publish_p99_ms"])]
    log_p99 = p99 and max(p99 + [GOAL_P99_MS]) / min(p99 + [GOAL_P99_MS]) > 20
    if log_p99:
        axes[1].set_yscale("log")
        axes[1].set_ylabel("ms (log)")
        axes[1].yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axes[1].yaxis.set_minor_formatter(ticker.NullFormatter())
    for ax in axes:
        ax.set_xlim(left=0)
        if not (ax is axes[1] and log_p99):
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("performance round 2: light points = each rep, line = median over reps; hollow: the "
                 "sender fell behind real time (late sends), the box was saturated", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)


def table(groups, labels, is_floor):
    lines = [
        "| streams | arm | reps | CPU per stream, each rep (% of a core) | median | vs floor | "
        "publish p50 / p99, medians (ms) | worst p99 (ms) | RSS per stream (MB) | "
        "lost frames (floor: bytes) | late sends |",
        "|---:|---|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    rank = {lab: i for i, lab in enumerate(labels)}
    for (lab, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], rank[kv[0][0]])):
        cpu = med(rs, "cpu_pct_per_stream")
        each = " / ".join(sig3(r.get("cpu_pct_per_stream")) for r in rs)
        base = floor_median(groups, is_floor, n, "cpu_pct_per_stream")
        ratio = f"{sig3(cpu / base)}x" if not is_floor[lab] and base and cpu is not None else "-"
        if is_floor[lab]:
            publish = worst = "-"
            lost = sum(r.get("lost_bytes") or 0 for r in rs)
        else:
            publish = f"{sig3(med(rs, 'publish_p50_ms'))} / {sig3(med(rs, 'publish_p99_ms'))}"
            p99s = [r["publish_p99_ms"] for r in rs if r.get("publish_p99_ms") is not None]
            worst = sig3(max(p99s)) if p99s else "-"
            lost = sum(r.get("lost_frames") or 0 for r in rs)
        late = sum(r.get("late_sends") or 0 for r in rs)
        lines.append(f"| {n:,} | {lab} | {len(rs)} | {each} | **{sig3(cpu)}** | {ratio} | {publish} | "
                     f"{worst} | {sig3(med(rs, 'rss_per_stream_mb'))} | {lost:,} | {late:,} |")
    lines.append("")
    lines.append(f"Goals: CPU per stream <= {GOAL_RATIO}x floor, p99 publish <= {GOAL_P99_MS} ms, "
                 f"RSS per stream <= {GOAL_RSS_MB} MB. Late sends > 0: the sender fell behind real "
                 "time (saturated box).")
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    groups, labels, is_floor = load(sys.argv[1])
    if not groups:
        sys.exit(f"no runs in {sys.argv[1]}")
    plot(groups, labels, is_floor, sys.argv[2])
    md = table(groups, labels, is_floor)
    if len(sys.argv) == 4:
        with open(sys.argv[3], "w") as f:
            f.write(md)
    else:
        sys.stdout.write(md)


if __name__ == "__main__":
    main()
