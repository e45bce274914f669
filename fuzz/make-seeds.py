#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the third-party
captures (the folder named by FLEET_CAPTURES_DIR, see docs/captures.md;
read-only, never copied whole) and the project's own fixtures. Seeds are small cuts: the first packets or kilobytes, plus
the parameter sets and first slices of each stream. Re-run after changing
an input convention (see fuzz_targets/common.rs)."""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.environ.get("FLEET_CAPTURES_DIR")
if not DATA:
    sys.exit("set FLEET_CAPTURES_DIR to the captures folder (see docs/captures.md)")
FIX = os.path.join(ROOT, "fixtures")
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def nals(data):
    """Annex-B NAL units (payload without start code)."""
    out, i, start = [], 0, None
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            if start is not None:
                out.append(data[start:].rstrip(b"\x00"))
            return out
        if start is not None:
            out.append(data[start:j].rstrip(b"\x00"))
        start, i = j + 3, j + 3


def annexb(ns):
    return b"".join(b"\x00\x00\x00\x01" + n for n in ns)


h264 = {}
for name in sorted(os.listdir(os.path.join(DATA, "h264"))):
    if name.endswith((".264", ".h264")):
        h264["cf_" + name.split(".")[0]] = open(os.path.join(DATA, "h264", name), "rb").read()
for name in sorted(os.listdir(FIX)):
    if name.endswith(".h264"):
        h264["fx_" + name.split(".")[0]] = open(os.path.join(FIX, name), "rb").read()

for key, data in h264.items():
    ns = nals(data)
    params = [n for n in ns if n and n[0] & 0x1F in (7, 8)]
    # The framer and the stream see a cut of the byte stream, prefixed with
    # the "no cuts" byte of common::chunked.
    head = data[:4096]
    put("annexb_framer", key, b"\x00" + head)
    put("live_stream_bytes", key, b"\x00" + data[:6144])
    for i, n in enumerate(params[:4]):
        if n[0] & 0x1F == 7:
            put("h264_sps", f"{key}_{i}", n)
    first_slices = [n for n in ns[:64] if n and 1 <= n[0] & 0x1F <= 5][:6]
    # Slice headers are in the first bytes of a slice: cut each NAL to
    # 96 bytes so the corpus (and libFuzzer's max_len) stays small.
    put("h264_slice_header", key, annexb(params[:4] + [n[:96] for n in first_slices]))
    put("access_unit", key, annexb([n[:96] for n in ns[:24]]))

# live_stream_frames: one record per NAL unit, 40 ms apart, from a fixture
# and a conformance stream (op 1: capture time advances by the next byte).
for key in ("fx_baseline", "fx_high_b2", "cf_MR1_BT_A"):
    rec = b""
    for n in nals(h264[key])[:40]:
        n = b"\x00\x00\x00\x01" + n
        if len(n) > 1500:
            n = n[:1500]
        rec += bytes([1]) + struct.pack(">H", len(n)) + bytes([40]) + n
    put("live_stream_frames", key, rec)

# JT/T 1078: packets from the MIT-licensed CSV captures (one hex packet a
# line). The 24 s capture has no licence; run the targets on it locally
# with `cargo fuzz run jt1078 "$FLEET_CAPTURES_DIR/jt1078_capture_24s.bin"`.
for csv in ("jt1078_1.txt", "JT1078_2.txt"):
    pkts = []
    for line in open(os.path.join(DATA, csv), encoding="utf-8-sig"):
        hexpkt = line.strip().split(",")[-1]
        try:
            pkts.append(bytes.fromhex(hexpkt))
        except ValueError:
            continue
    base = csv.split(".")[0].lower()
    put("jt1078", base + "_first8", b"\x00" + b"".join(pkts[:8]))
    put("jt1078", base + "_garbage", b"\x03\x00\x10\x02\x00\x10\x00" + pkts[0] + b"junk01c" + b"".join(pkts[1:4]))
    put("jt1078", base + "_last4", b"\x00" + b"".join(pkts[-4:]))

# JT/T 808: a conversation built with the protocol's own framing rules.
def frame808(msg_id, body, serial, phone=b"\x01\x38\x00\x00\x00\x01", v2019=False, sub=None):
    attrs = len(body) | (1 << 14 if v2019 else 0) | (1 << 13 if sub else 0)
    raw = struct.pack(">HH", msg_id, attrs)
    if v2019:
        raw += b"\x01" + b"\x00" * 4 + phone
    else:
        raw += phone
    raw += struct.pack(">H", serial)
    if sub:
        raw += struct.pack(">HH", *sub)
    raw += body
    c = 0
    for b in raw:
        c ^= b
    raw += bytes([c])
    esc = raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")
    return b"\x7e" + esc + b"\x7e"

loc = struct.pack(">IIIIHHH", 0, 3, 31_230_000, 121_470_000, 10, 600, 90) + bytes.fromhex("240229080000") + b"\x01\x04\x00\x00\x7e\x7d"
reg = struct.pack(">HH", 31, 100) + b"MAKER" + b"MODEL".ljust(20, b"\x00") + b"TERM001" + b"\x01" + b"ABC123"
conv = (frame808(0x0100, reg, 0) + frame808(0x0102, b"0123456789abcdef", 1) + frame808(0x0002, b"", 2)
        + frame808(0x0200, loc, 3) + frame808(0x0704, struct.pack(">HB", 2, 0) + struct.pack(">H", len(loc)) + loc + struct.pack(">H", len(loc)) + loc, 4)
        + frame808(0x0f0f, b"\x01\x02", 5))
put("jt808", "conversation_2013", b"\x00" + conv)
put("jt808", "conversation_2019", b"\x00" + frame808(0x0100, reg + b"\x00" * 40, 0, v2019=True, phone=b"\x00" * 4 + b"\x01\x38\x00\x00\x00\x01") + frame808(0x0200, loc, 1, v2019=True, phone=b"\x00" * 4 + b"\x01\x38\x00\x00\x00\x01"))
put("jt808", "subpackages", b"\x02\x00\x05\x00\x30" + frame808(0x0801, b"part-one", 7, sub=(2, 1)) + frame808(0x0801, b"part-two", 8, sub=(2, 2)) + b"\x7e\x7e\x7d\x03\x7e")

# Playlist ops (see fuzz_targets/playlist.rs): target 4 s, live window,
# then pushes of 4 s, 3.8 s with a discontinuity, an overlong one, an end.
def push(op, ticks):
    return bytes([op]) + struct.pack(">I", ticks)

put("playlist", "live", bytes([3, 0, 0]) + push(0x20, 360000) + push(0x30, 342000) + push(0x00, 500000) + b"".join(push(0x20, 360000) for _ in range(5)) + push(0x30, 355000) + b"\x07")
put("playlist", "event", bytes([5, 1]) + push(0x20, 540540) + push(0x10, 3003) + push(0x46, 1000) + b"\x09" + push(0x60, 3600) + bytes([0, 0, 0, 0]) + b"\x07")
put("playlist", "vod", bytes([1, 2]) + push(0x00, 90000) + push(0x10, 135000) + b"\x07")
print("seeds written to", OUT, file=sys.stderr)
