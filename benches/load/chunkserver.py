#!/usr/bin/env python3
"""The design we replace, rebuilt for side-by-side measurement.

Accepts the raw-port protocol (`STREAM <name>\\n`, then Annex-B H.264),
collects each stream's bytes, and once a chunk holds ~150 kB (cut at the
next 4-byte start code, so ffmpeg sees whole NAL units) writes it to a file
and runs `ffmpeg -f h264 -i chunk -c copy -f mpegts seg.ts` on it, one
process per chunk, waiting for each (chunks of a stream queue behind the
running one). Every chunk's wall time and exit code goes to
`<out>/chunks.jsonl`; on SIGTERM the number of chunks still queued goes to
`<out>/backlog.json` (a backlog that grows means the design cannot keep up).
"""

import argparse
import asyncio
import json
import os
import signal
import time

CHUNK = 150_000
START = b"\x00\x00\x00\x01"


class Server:
    def __init__(self, out, fps):
        self.out = out
        self.fps = fps
        self.log = open(os.path.join(out, "chunks.jsonl"), "w")
        self.queues = {}
        self.bytes = 0

    async def worker(self, name, q):
        d = os.path.join(self.out, name)
        os.makedirs(d, exist_ok=True)
        k = 0
        while True:
            chunk = await q.get()
            if chunk is None:
                return
            src = os.path.join(d, f"chunk{k}.h264")
            dst = os.path.join(d, f"seg{k}.ts")
            with open(src, "wb") as f:
                f.write(chunk)
            t0 = time.monotonic()
            p = await asyncio.create_subprocess_exec(
                "ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "h264",
                "-framerate", str(self.fps), "-i", src, "-c", "copy", "-f", "mpegts", dst,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            rc = await p.wait()
            wall = (time.monotonic() - t0) * 1000
            self.log.write(json.dumps({"stream": name, "chunk": k, "bytes": len(chunk),
                                       "wall_ms": round(wall, 1), "rc": rc}) + "\n")
            # Keep the scratch space small: the segment is the product.
            os.unlink(src)
            os.unlink(dst) if os.path.exists(dst) else None
            k += 1

    async def handle(self, reader, writer):
        line = await reader.readline()
        if not line.startswith(b"STREAM "):
            writer.close()
            return
        name = line[7:].strip().decode()
        q = asyncio.Queue()
        self.queues[name] = q
        task = asyncio.create_task(self.worker(name, q))
        buf = bytearray()
        while True:
            data = await reader.read(65536)
            if not data:
                break
            self.bytes += len(data)
            buf += data
            if len(buf) >= CHUNK:
                cut = buf.find(START, CHUNK)
                if cut > 0:
                    q.put_nowait(bytes(buf[:cut]))
                    del buf[:cut]
        if buf:
            q.put_nowait(bytes(buf))
        q.put_nowait(None)
        writer.close()
        await task


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fps", type=int, default=25)
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    s = Server(a.out, a.fps)
    srv = await asyncio.start_server(s.handle, host, int(port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    # Chunks still queued: the backlog this design built up. Report and
    # leave at once (the running ffmpeg children finish on their own).
    pending = sum(max(0, q.qsize() - 1) for q in s.queues.values())
    s.log.flush()
    with open(os.path.join(a.out, "backlog.json"), "w") as f:
        json.dump({"pending": pending, "bytes": s.bytes}, f)
    srv.close()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
