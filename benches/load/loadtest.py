#!/usr/bin/env python3
"""One load-test run: N simulated devices at real-time pace into one approach.

Approaches (the same input stream, the same sender, over loopback TCP):
  ingestd        target/release/ingestd; devsim sends JT/T 1078 packets.
  ffmpeg-hls     one `ffmpeg -f h264 -i tcp://...?listen=1 -c copy -f hls`
                 per stream; devsim sends bare Annex-B to port base + i.
  ffmpeg-chunks  the design we replace: chunkserver.py collects each
                 stream's bytes and runs one ffmpeg per ~150 kB chunk;
                 devsim sends to its raw-port-style listener.
  floor          target/release/recvfloor: the JT/T 1078 bytes received
                 and written unchanged to segment-sized files, nothing
                 else. The least CPU any receive-and-store design needs.

Measured over the steady window (after the ramp and a warm-up): CPU of
the server processes (and of the sender and the whole machine, to show
whether the box was saturated), RSS (and PSS for many processes), frames
sent vs frames muxed, segments and bytes written, and publish latency:
  - internal (ingestd only): its histogram from the arrival of the access
    unit that closes a segment to the playlist listing it;
  - external (both HLS approaches): inotify sees the playlist replaced,
    matched to the wall time devsim finished writing the keyframe that
    closed the segment. An upper bound: it adds this watcher's own wake-up.

Prints one JSON object per run and appends it to --out.
"""

import argparse
import atexit
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

from inotify_simple import INotify, flags

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))

INGESTD_PORTS = {"jt808": 17808, "jt1078": 17809, "raw": 17810, "http": 17811}
FFMPEG_BASE_PORT = 20000
CHUNKSERVER_PORT = 17900
FLOOR_PORT = 17950
SIM_BASE = 13_800_000_000
FPS = 25


def proc_cpu_ticks(pid, children=False):
    """utime + stime (+ cutime + cstime of reaped children) in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3); utime is field 14.
    t = int(fields[11]) + int(fields[12])
    if children:
        t += int(fields[13]) + int(fields[14])
    return t


def proc_rss(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def proc_pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


class Sampler(threading.Thread):
    """Once a second: CPU ticks and RSS of the server pids, the sender, the box."""

    def __init__(self, server_pids, sender_pid_fn, children=False):
        super().__init__(daemon=True)
        self.server_pids = server_pids  # callable -> list of pids
        self.sender_pid_fn = sender_pid_fn
        self.children = children
        self.samples = []  # (t, server_ticks, server_rss, sender_ticks, busy, total)
        self.stop = threading.Event()
        self.last_ticks = {}

    def sample(self):
        ticks = 0
        rss = 0
        for pid in self.server_pids():
            t = proc_cpu_ticks(pid, self.children)
            if t is not None:
                self.last_ticks[pid] = t
            rss += proc_rss(pid)
        # Processes that exited keep their last reading.
        ticks = sum(self.last_ticks.values())
        sp = self.sender_pid_fn()
        st = proc_cpu_ticks(sp) if sp else None
        busy, total = machine_ticks()
        self.samples.append((time.monotonic(), ticks, rss, st or 0, busy, total))

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(1.0)

    def window(self, t0, t1):
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if len(s) < 2:
            raise SystemExit(f"steady window too short ({len(s)} samples)")
        a, b = s[0], s[-1]
        dt = b[0] - a[0]
        return {
            "seconds": round(dt, 1),
            "server_cpu_pct": round(100 * (b[1] - a[1]) / CLK_TCK / dt, 2),
            "sender_cpu_pct": round(100 * (b[3] - a[3]) / CLK_TCK / dt, 2),
            "machine_busy_pct": round(100 * (b[4] - a[4]) / max(1, b[5] - a[5]), 1),
            "server_rss_max": max(x[2] for x in s),
            "server_rss_end": b[2],
        }


class PlaylistWatcher(threading.Thread):
    """Records when each new segment is first listed, with its end media time."""

    def __init__(self, dirs):
        super().__init__(daemon=True)
        self.ino = INotify()
        self.wd = {}
        for name, d in dirs.items():
            os.makedirs(d, exist_ok=True)
            wd = self.ino.add_watch(d, flags.MOVED_TO | flags.CLOSE_WRITE)
            self.wd[wd] = (name, d)
        self.state = {name: {"seq": -1, "cum": 0.0, "aligned": None} for name in dirs}
        self.listed = []  # (stream, end media ms, unix ns)
        self.stop = threading.Event()

    def update(self, name, path):
        t = time.time_ns()
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return
        st = self.state[name]
        m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
        seq = int(m.group(1)) if m else 0
        if st["aligned"] is None:
            # Cumulative media time is known only from the first segment on.
            st["aligned"] = seq == 0
        dur = None
        for line in text.splitlines():
            if line.startswith("#EXTINF:"):
                dur = float(line[8:].split(",")[0])
            elif line and not line.startswith("#"):
                if seq > st["seq"] and dur is not None:
                    st["cum"] += dur
                    st["seq"] = seq
                    if st["aligned"]:
                        self.listed.append((name, round(st["cum"] * 1000), t))
                seq += 1
                dur = None

    def run(self):
        while not self.stop.is_set():
            for ev in self.ino.read(timeout=200):
                if ev.name != "index.m3u8" or ev.wd not in self.wd:
                    continue
                name, d = self.wd[ev.wd]
                self.update(name, os.path.join(d, ev.name))


class SegmentCleaner(threading.Thread):
    """Deletes segment files older than `age` s: retention, compressed so
    that a long run at thousands of streams fits in a tmpfs."""

    def __init__(self, dirs, age):
        super().__init__(daemon=True)
        self.dirs = dirs
        self.age = age
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(2.0):
            cut = time.time() - self.age
            for d in self.dirs:
                try:
                    for e in os.scandir(d):
                        if e.name.endswith(".ts") and e.stat().st_mtime < cut:
                            os.unlink(e.path)
                except OSError:
                    pass


def percentile(values, q):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))
    return v[k]


def histogram_quantile(buckets, q):
    """Prometheus-style: upper bound of the bucket holding the q quantile."""
    total = buckets[-1][1]
    if total == 0:
        return None
    rank = q * total
    for le, c in buckets:
        if c >= rank:
            return le
    return None


def scrape(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def ingestd_totals(text):
    """Per-stream counters summed, and the buckets of ingestd's histograms
    (publish latency; media queue wait, when the build has it) by name."""
    tot = {}
    hists = {"publish": [], "wait": []}
    names = {"ingestd_segment_publish_seconds": "publish", "ingestd_media_queue_wait_seconds": "wait"}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"ingestd_stream_(\w+)_total\{[^}]*\} (\d+)", line)
        if m:
            tot[m.group(1)] = tot.get(m.group(1), 0) + int(m.group(2))
            continue
        m = re.match(r"ingestd_media_worker_(busy|cpu)_seconds_total\{[^}]*\} ([0-9.eE+-]+)", line)
        if m:
            # Floats, summed over the workers: time blocked or computing.
            key = f"worker_{m.group(1)}_s"
            tot[key] = tot.get(key, 0.0) + float(m.group(2))
            tot["workers"] = tot.get("workers", 0) + (m.group(1) == "busy")
            continue
        m = re.match(r'(\w+)_bucket\{le="([^"]+)"\} (\d+)', line)
        if m and m.group(1) in names:
            le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
            hists[names[m.group(1)]].append((le, int(m.group(3))))
    return tot, hists


def merged_totals(per_node):
    """Counters summed over nodes; histogram buckets summed per bound."""
    tot, hists = {}, {}
    for t, h in per_node:
        for k, v in t.items():
            tot[k] = tot.get(k, 0) + v
        for name, b in h.items():
            merged = hists.setdefault(name, {})
            for le, count in b:
                merged[le] = merged.get(le, 0) + count
    return tot, {name: sorted(b.items()) for name, b in hists.items()}


def parse_devsim(out):
    m = re.search(
        r"total: (\d+) devices, frames (\d+) packets (\d+) bytes (\d+) .* late sends (\d+) max lag (\d+) ms",
        out,
    )
    if not m:
        raise SystemExit("devsim printed no total line:\n" + out[-2000:])
    errors = out.count(" ERROR ")
    return {
        "devices": int(m.group(1)),
        "frames_sent": int(m.group(2)),
        "bytes_sent": int(m.group(4)),
        "late_sends": int(m.group(5)),
        "max_lag_ms": int(m.group(6)),
        "device_errors": errors,
    }


def external_latency(keyframe_log, listed):
    sent = {}
    with open(keyframe_log) as f:
        for line in f:
            name, media_ms, ns = line.split()
            sent[(name, int(media_ms))] = int(ns)
    lat = []
    for name, end_ms, t in listed:
        # EXTINF has millisecond precision; allow one ms either way.
        for d in (0, -1, 1):
            s = sent.get((name, end_ms + d))
            if s is not None:
                lat.append((t - s) / 1e6)
                break
    return lat


def wait_http(url, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            scrape(url)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def wait_listening(ports, secs):
    """Until every port in `ports` has a LISTEN socket on 127.0.0.1."""
    want = set(ports)
    end = time.time() + secs
    while time.time() < end:
        have = set()
        for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(tab) as f:
                    next(f)
                    for line in f:
                        p = line.split()
                        if p[3] == "0A":
                            have.add(int(p[1].rsplit(":", 1)[1], 16))
            except OSError:
                pass
        if want <= have:
            return
        time.sleep(0.5)
    raise SystemExit(f"only {len(want & have)} of {len(want)} listeners came up")


def run(args):
    work = os.path.join(args.work, f"{args.approach}-{args.streams}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    n = args.streams
    devsim = [os.path.join(ROOT, "target/release/devsim"), "--devices", str(n),
              "--input", args.input, "--loop", "--duration", str(args.duration),
              "--ramp", str(args.ramp), "--fps", str(args.fps),
              "--keyframe-log", os.path.join(work, "keyframes.log")] + args.devsim_arg
    if args.audio:
        # JT/T 1078 approaches only: devsim interleaves the audio packets
        # with the video (one every 40 ms; ADTS frames for AAC).
        if args.approach not in ("ingestd", "floor"):
            raise SystemExit("--audio needs a JT/T 1078 approach (ingestd, floor)")
        devsim += ["--audio", args.audio, "--audio-pt", str(args.audio_pt),
                   "--audio-packet-bytes", str(args.audio_packet_bytes)]
    servers = []  # Popen objects of the system under test
    # A run that fails half-way (e.g. a window too short to measure) must not leave its
    # servers holding the ports and the work dir for the next run.
    atexit.register(lambda: [s.kill() for s in servers if s.poll() is None])
    sample_every = max(1, n // args.latency_sample)
    watch_dirs = {}
    children = False
    result = {"approach": args.approach, "streams": n, "duration_s": args.duration, "label": args.label,
              "fps": args.fps,
              "input": os.path.basename(args.input), "cores": os.cpu_count(),
              "audio": os.path.basename(args.audio) if args.audio else None}
    if args.ingestd_arg:
        result["ingestd_args"] = args.ingestd_arg
    if args.devsim_arg:
        result["devsim_args"] = args.devsim_arg

    if args.approach == "ingestd":
        # --nodes K: K ingestd (ports offset by 100 per node), each with its own data dir;
        # devsim sends device i to node i mod K.
        k_nodes = max(1, args.nodes)
        result["nodes"] = k_nodes
        datas, metrics_urls, media = [], [], []
        for k in range(k_nodes):
            data = os.path.join(work, "data" if k == 0 else f"data{k}")
            os.makedirs(os.path.join(data, "live"))
            log = open(os.path.join(work, "ingestd.log" if k == 0 else f"ingestd{k}.log"), "w")
            p = lambda name, k=k: f"127.0.0.1:{INGESTD_PORTS[name] + 100 * k}"
            servers.append(subprocess.Popen(
                [args.ingestd_bin, "--data-dir", data,
                 "--jt808-listen", p("jt808"), "--jt1078-listen", p("jt1078"),
                 "--raw-listen", p("raw"), "--http-listen", p("http"),
                 "--instance-id", f"load-node-{k}",
                 # The load devices send JT/T 1078 media without a JT/T 808 login.
                 "--device-auth", "off",
                 "--max-connections", str(n + 1000)] + args.ingestd_arg,
                stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"}))
            datas.append(data)
            metrics_urls.append(f"http://{p('http')}/metrics")
            media.append(p("jt1078"))
        for url in metrics_urls:
            wait_http(url)
        node_data = lambda i: datas[i % k_nodes]
        for i in range(0, n, sample_every):
            name = f"{SIM_BASE + i:012d}_1"
            watch_dirs[name] = os.path.join(node_data(i), "live", name)
        devsim += ["--jt1078", media[0]] + [x for m in media[1:] for x in ("--jt1078-node", m)]
        stream_dirs = [os.path.join(node_data(i), "live", f"{SIM_BASE + i:012d}_1") for i in range(n)]
    elif args.approach == "ffmpeg-hls":
        if FFMPEG_BASE_PORT + n > 65535:
            raise SystemExit("too many streams for the port range")
        for i in range(n):
            d = os.path.join(work, f"s{i}")
            os.makedirs(d)
            servers.append(subprocess.Popen(
                ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                 "-f", "h264", "-framerate", str(FPS),
                 "-i", f"tcp://127.0.0.1:{FFMPEG_BASE_PORT + i}?listen=1",
                 "-c", "copy", "-f", "hls", "-hls_time", "4", "-hls_list_size", "6",
                 "-hls_flags", "delete_segments+temp_file",
                 "-progress", os.path.join(d, "progress.txt"), "-stats_period", "10",
                 os.path.join(d, "index.m3u8")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(d, "ffmpeg.log"), "w")))
            if i % sample_every == 0:
                watch_dirs[f"devsim-{i}"] = d
        wait_listening(range(FFMPEG_BASE_PORT, FFMPEG_BASE_PORT + n), 60 + n / 10)
        devsim += ["--h264-tcp-base", f"127.0.0.1:{FFMPEG_BASE_PORT}"]
        stream_dirs = []
    elif args.approach == "ffmpeg-chunks":
        servers.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "chunkserver.py"),
             "--listen", f"127.0.0.1:{CHUNKSERVER_PORT}", "--out", work, "--fps", str(FPS)],
            stdout=open(os.path.join(work, "chunkserver.log"), "w"), stderr=subprocess.STDOUT))
        wait_listening([CHUNKSERVER_PORT], 30)
        devsim += ["--raw", f"127.0.0.1:{CHUNKSERVER_PORT}"]
        children = True
        stream_dirs = []
    elif args.approach == "floor":
        servers.append(subprocess.Popen(
            [os.path.join(ROOT, "target/release/recvfloor"),
             "--listen", f"127.0.0.1:{FLOOR_PORT}", "--out", work],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "recvfloor.log"), "w"), text=True))
        wait_listening([FLOOR_PORT], 30)
        devsim += ["--jt1078", f"127.0.0.1:{FLOOR_PORT}"]
        stream_dirs = [os.path.join(work, f"c{i}") for i in range(n)]
    else:
        raise SystemExit(f"unknown approach {args.approach}")

    # Base memory of the servers before any stream (one ffmpeg alone is the
    # per-stream cost of that approach, so its base is 0).
    time.sleep(1)
    base_rss = 0 if args.approach == "ffmpeg-hls" else sum(proc_rss(s.pid) for s in servers)
    watcher = PlaylistWatcher(watch_dirs) if watch_dirs else None
    if watcher:
        watcher.start()
    cleaner = SegmentCleaner(stream_dirs, args.keep_segments_s) if stream_dirs else None
    if cleaner:
        cleaner.start()
    sender = {}
    sampler = Sampler(lambda: [s.pid for s in servers], lambda: sender.get("pid"), children)
    sampler.start()
    t_start = time.monotonic()
    dev = subprocess.Popen(devsim, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender["pid"] = dev.pid
    pss = None
    if args.approach == "ffmpeg-hls":
        # PSS is costly to read for many processes: once, mid-window.
        time.sleep(args.ramp + args.warmup + (args.duration - args.ramp - args.warmup) / 2)
        pss = sum(proc_pss(s.pid) for s in servers)
    out, err = dev.communicate()
    t_end = time.monotonic()
    sent = parse_devsim(out)
    if sent["device_errors"]:
        print(err[-2000:], file=sys.stderr)
    win = sampler.window(t_start + args.ramp + args.warmup, t_start + args.duration - 1)

    if args.approach == "ingestd":
        # Wait for the workers to drain (the last segments publish on disconnect).
        prev = None
        for _ in range(120):
            tot, hists = merged_totals([ingestd_totals(scrape(u)) for u in metrics_urls])
            buckets = hists["publish"]
            cur = (tot.get("frames_muxed"), tot.get("segments"))
            if cur == prev:
                break
            prev = cur
            time.sleep(0.5)
        ios = [proc_io(s.pid) for s in servers]
        io = {"wchar": sum(x.get("wchar") or 0 for x in ios)}
        for s in servers:
            s.send_signal(signal.SIGTERM)
        for s in servers:
            s.wait(60)
        # The operator's signal when a worker cannot keep up (media.rs LoadWatch).
        logs = "".join(open(os.path.join(work, f)).read()
                       for f in os.listdir(work) if f.startswith("ingestd") and f.endswith(".log"))
        result["log_disk_bottleneck"] = logs.count("the disk is the bottleneck")
        result["log_cpu_bottleneck"] = logs.count("media worker busy on CPU")
        result.update({
            "frames_muxed": tot.get("frames_muxed", 0),
            "dropped_before_keyframe": tot.get("dropped_before_keyframe", 0),
            "dropped_frames": tot.get("dropped_frames", 0),
            "rejected_frames": tot.get("rejected_frames", 0),
            "segments": tot.get("segments", 0),
            "segment_bytes": tot.get("segment_bytes", 0),
            "wchar": io.get("wchar"),
            "publish_p50_ms": round(histogram_quantile(buckets, 0.5) * 1000, 2),
            "publish_p99_ms": round(histogram_quantile(buckets, 0.99) * 1000, 2),
            "publish_samples": buckets[-1][1],
        })
        if "worker_busy_s" in tot:
            result.update({"workers": tot["workers"], "worker_busy_s": round(tot["worker_busy_s"], 2),
                           "worker_cpu_s": round(tot.get("worker_cpu_s", 0.0), 2)})
        wait = hists.get("wait") or []
        if wait and wait[-1][1]:
            # Read to a worker taking the frame up: the queueing part of the publish latency.
            result.update({
                "media_wait_p50_ms": round(histogram_quantile(wait, 0.5) * 1000, 2),
                "media_wait_p99_ms": round(histogram_quantile(wait, 0.99) * 1000, 2),
            })
        # Audio counters (audio_packets, audio_payloads, audio_frames_muxed,
        # audio_rejected, ...), when the build has them.
        result.update({k: v for k, v in tot.items() if k.startswith("audio")})
    elif args.approach == "ffmpeg-hls":
        frames = 0
        failed = 0
        for i, s in enumerate(servers):
            try:
                s.wait(30)
            except subprocess.TimeoutExpired:
                s.kill()
            d = os.path.join(work, f"s{i}")
            if s.returncode != 0:
                failed += 1
            try:
                with open(os.path.join(d, "progress.txt")) as f:
                    vals = re.findall(r"^frame=(\d+)", f.read(), re.M)
                frames += int(vals[-1]) if vals else 0
            except OSError:
                pass
        seg_bytes = 0
        result.update({"frames_muxed": frames, "failed_processes": failed,
                       "rss_note": "RSS sums shared library pages once per process; PSS shares them",
                       "server_pss_mid": pss})
        errs = [open(os.path.join(work, f"s{i}", "ffmpeg.log")).read().strip() for i in range(min(n, 3))]
        result["ffmpeg_errors_first"] = [e[:300] for e in errs if e]
    elif args.approach == "floor":
        # Drain: until the bytes read stop growing (a saturated run has a backlog).
        prev = None
        for _ in range(120):
            io = proc_io(servers[0].pid)
            if io.get("rchar") == prev:
                break
            prev = io.get("rchar")
            time.sleep(1)
        servers[0].send_signal(signal.SIGTERM)
        out_floor, _ = servers[0].communicate(timeout=60)
        m = re.search(r"total: connections (\d+) bytes (\d+) files (\d+)", out_floor)
        if not m:
            raise SystemExit("recvfloor printed no total line: " + out_floor[-500:])
        result.update({"connections": int(m.group(1)), "bytes_received": int(m.group(2)),
                       "segments": int(m.group(3)), "wchar": io.get("wchar")})
        result["lost_bytes"] = sent["bytes_sent"] - result["bytes_received"]
    else:
        servers[0].send_signal(signal.SIGTERM)
        servers[0].wait(120)
        with open(os.path.join(work, "chunks.jsonl")) as f:
            chunks = [json.loads(x) for x in f]
        with open(os.path.join(work, "backlog.json")) as f:
            backlog = json.load(f)
        walls = [c["wall_ms"] for c in chunks]
        result.update({
            "chunks": len(chunks),
            "chunks_failed": sum(1 for c in chunks if c["rc"] != 0),
            "chunk_wall_p50_ms": percentile(walls, 0.5),
            "chunk_wall_p99_ms": percentile(walls, 0.99),
            "backlog_chunks_at_end": backlog["pending"],
            "bytes_received": backlog["bytes"],
        })
    for s in servers:
        if s.poll() is None:
            s.kill()
    if watcher:
        watcher.stop.set()
        watcher.join()
        with open(os.path.join(work, "listed.log"), "w") as f:
            for name, end_ms, t in watcher.listed:
                f.write(f"{name} {end_ms} {t}\n")
        lat = external_latency(os.path.join(work, "keyframes.log"), watcher.listed)
        result.update({
            "external_p50_ms": percentile(lat, 0.5) and round(percentile(lat, 0.5), 1),
            "external_p99_ms": percentile(lat, 0.99) and round(percentile(lat, 0.99), 1),
            "external_samples": len(lat),
        })
    if cleaner:
        cleaner.stop.set()
    result.update(sent)
    result.update(win)
    result["server_rss_base"] = base_rss
    result["rss_per_stream_mb"] = round((win["server_rss_max"] - base_rss) / n / 1e6, 3)
    if pss is not None:
        result["pss_per_stream_mb"] = round(pss / n / 1e6, 3)
    result["cpu_pct_per_stream"] = round(win["server_cpu_pct"] / n, 4)
    result["streams_per_core"] = round(100 / result["cpu_pct_per_stream"]) if result["cpu_pct_per_stream"] else None
    if "frames_muxed" in result:
        # devsim counts the audio payloads it sends among its frames.
        taken = result["frames_muxed"] + (result.get("audio_payloads", 0) if args.audio else 0)
        result["lost_frames"] = sent["frames_sent"] - taken
    result["wall_s"] = round(t_end - t_start, 1)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--approach", required=True, choices=["ingestd", "ffmpeg-hls", "ffmpeg-chunks", "floor"])
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=1,
                    help="ingestd only: spread the devices over this many ingestd on this machine")
    ap.add_argument("--input", required=True, help="Annex-B H.264 (the 720p25 2.7 Mbit/s stream)")
    ap.add_argument("--duration", type=float, default=40, help="seconds devsim sends")
    ap.add_argument("--fps", type=int, default=FPS,
                    help="frames per second devsim sends (JT/T 1078 approaches; the ffmpeg ones assume 25)")
    ap.add_argument("--ramp", type=float, default=4, help="seconds over which the devices start")
    ap.add_argument("--warmup", type=float, default=8, help="seconds after the ramp before measuring")
    ap.add_argument("--work", default="/dev/shm/streamload", help="scratch dir (a tmpfs by default)")
    ap.add_argument("--keep-segments-s", type=float, default=10,
                    help="delete ingestd segments older than this (retention, compressed)")
    ap.add_argument("--latency-sample", type=int, default=500,
                    help="watch at most about this many playlists for the external latency")
    ap.add_argument("--ingestd-bin", default=os.path.join(ROOT, "target/release/ingestd"),
                    help="the ingestd binary (to compare builds side by side)")
    ap.add_argument("--audio", help="audio payloads for devsim --audio (e.g. fixtures/audio/tone1k_g711a.raw), "
                    "interleaved with the video; JT/T 1078 approaches only")
    ap.add_argument("--audio-pt", type=int, default=6,
                    help="JT/T 1078 payload type of --audio (6 G.711A, 7 G.711U, 8 G.726, 19 AAC, 26 ADPCM)")
    ap.add_argument("--audio-packet-bytes", type=int, default=320,
                    help="bytes of one 40 ms --audio payload (ignored for AAC)")
    ap.add_argument("--ingestd-arg", action="append", default=[],
                    help="one more argument for ingestd (repeat; e.g. --ingestd-arg=--audio=off)")
    ap.add_argument("--devsim-arg", action="append", default=[],
                    help="one more argument for devsim (repeat; e.g. --devsim-arg=--burst=10 for "
                         "the bursty sender)")
    ap.add_argument("--label", help="recorded in the result (e.g. which build)")
    ap.add_argument("--out", help="append the JSON result to this file")
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    r = run(args)
    line = json.dumps(r, sort_keys=True)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
