#!/usr/bin/env python3
"""ceilings.py --dir DIR --mib N --out FILE: what this machine allows a registry at best.

Measured in DIR (the filesystem the registries' data dirs live on), each RUNS times:
  sha256_MBps             hashlib (OpenSSL) over an in-memory buffer, one core
  write_pagecache_MBps    N MiB written through the page cache, no fsync (+ _cpu_s_per_GiB)
  write_pagecache_reused_MBps  the same into pages just freed by deleting the previous file
  write_fsync_MBps        N MiB written, then fsync, timed to the end of the fsync (+ CPU)
  write_odirect_MBps      N MiB written with O_DIRECT (4 MiB aligned writes), then fsync (+ CPU)
  (every write and sink run makes a new file, kept until the figure's runs are done, so each
  run needs page-cache pages it did not just free, like a registry storing new blobs)
  fdatasync_4k_per_s      append 4 KiB + fdatasync, sequentially (one journal commit)
  commit_4k_per_s         new file: write 4 KiB, fsync, rename, fsync dir (one durable object)
  loopback_sendfile_MBps  N MiB over one 127.0.0.1 TCP stream: sendfile -> recv_into (discard)
  sink_sha256_MBps        the same stream received, hashed with sha256 and discarded
  sink_sha256_write_MBps  received, hashed and written to a file (page cache)
  sink_sha256_write_fsync_MBps  the same plus fsync before the clock stops
MB = 10^6 bytes. python3 stdlib only; nothing listens beyond 127.0.0.1.
"""
import argparse
import hashlib
import json
import mmap
import os
import shutil
import socket
import statistics
import sys
import threading
import time

MiB = 1 << 20


def rate(nbytes, secs):
    return nbytes / secs / 1e6


def sha256_speed(mib):
    buf = os.urandom(64 * MiB)
    n = max(1, mib // 64)
    t = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(n):
        h.update(buf)
    return rate(n * len(buf), time.perf_counter() - t)


def write_file(path, mib, fsync, direct=False):
    """Write a new file of mib MiB; the file is kept until the end of the figure, so that each
    run needs page-cache pages it did not just free (as a registry storing blobs does; on a VM
    whose free memory goes back to the host, fresh pages cost far more than re-used ones)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if direct:
        flags |= os.O_DIRECT
    buf = mmap.mmap(-1, 4 * MiB)          # page-aligned, as O_DIRECT wants
    buf.write(os.urandom(4 * MiB))
    fd = os.open(path, flags, 0o644)
    try:
        c0 = os.times()
        t = time.perf_counter()
        for _ in range(mib // 4):
            os.write(fd, buf)
        if fsync:
            os.fsync(fd)
        dt = time.perf_counter() - t
        c1 = os.times()
    finally:
        os.close(fd)
    cpu = (c1.user + c1.system - c0.user - c0.system) / (mib / 1024)
    return rate(mib * MiB, dt), cpu


def write_reused(path, mib):
    """The same as write_file without fsync, into pages just freed: the previous run's file
    (or the previous figure's) is deleted first. The difference from write_pagecache is what
    fresh page-cache pages cost on this machine."""
    d = os.path.dirname(path)
    for f in os.listdir(d):
        if f.endswith(".bin") and f != "src.bin":
            os.unlink(os.path.join(d, f))
    return write_file(path, mib, False)


def fdatasync_rate(d, n=300):
    p = os.path.join(d, "journal")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    blk = os.urandom(4096)
    t = time.perf_counter()
    for _ in range(n):
        os.write(fd, blk)
        os.fdatasync(fd)
    dt = time.perf_counter() - t
    os.close(fd)
    os.unlink(p)
    return n / dt


def commit_rate(d, n=200):
    sub = os.path.join(d, "objs")
    os.makedirs(sub, exist_ok=True)
    dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
    blk = os.urandom(4096)
    t = time.perf_counter()
    for i in range(n):
        tmp = os.path.join(sub, "tmp-%d" % i)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, blk)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, os.path.join(sub, "obj-%d" % i))
        os.fsync(dfd)
    dt = time.perf_counter() - t
    os.close(dfd)
    shutil.rmtree(sub)
    return n / dt


def stream(src_path, size, mode, out_dir):
    """One TCP stream on loopback: a thread sendfile()s src_path, this thread receives."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]

    def sender():
        c = socket.create_connection(("127.0.0.1", port))
        with open(src_path, "rb") as f:
            c.sendfile(f, 0, size)
        c.close()
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    conn, _ = ls.accept()
    buf = memoryview(bytearray(4 * MiB))
    h = hashlib.sha256() if mode != "discard" else None
    fd = None
    if mode.startswith("write"):   # a new file each run, kept until the figure ends (see write_file)
        fd = os.open(os.path.join(out_dir, "sink-%s.bin" % os.urandom(4).hex()),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t = time.perf_counter()
    got = 0
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        got += k
        if h is not None:
            h.update(buf[:k])
        if fd is not None:
            os.write(fd, buf[:k])
    if fd is not None and mode == "write_fsync":
        os.fsync(fd)
    dt = time.perf_counter() - t
    if fd is not None:
        os.close(fd)
    conn.close()
    ls.close()
    th.join()
    if got != size:
        raise RuntimeError("stream got %d of %d bytes" % (got, size))
    return rate(size, dt)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "src.bin")
    with open(src, "wb") as f:
        for _ in range(a.mib):
            f.write(os.urandom(MiB))
    size = a.mib * MiB
    seq = iter(range(1 << 30))

    def fresh(name):
        return os.path.join(a.dir, "%s-%d.bin" % (name, next(seq)))
    tests = [
        ("sha256_MBps", lambda: sha256_speed(a.mib)),
        ("write_pagecache", lambda: write_file(fresh("pc"), a.mib, False)),
        ("write_pagecache_reused", lambda: write_reused(fresh("pr"), a.mib)),
        ("write_fsync", lambda: write_file(fresh("fs"), a.mib, True)),
        ("write_odirect", lambda: write_file(fresh("od"), a.mib, True, True)),
        ("fdatasync_4k_per_s", lambda: fdatasync_rate(a.dir)),
        ("commit_4k_per_s", lambda: commit_rate(a.dir)),
        ("loopback_sendfile_MBps", lambda: stream(src, size, "discard", a.dir)),
        ("sink_sha256_MBps", lambda: stream(src, size, "hash", a.dir)),
        ("sink_sha256_write_MBps", lambda: stream(src, size, "write", a.dir)),
        ("sink_sha256_write_fsync_MBps", lambda: stream(src, size, "write_fsync", a.dir)),
    ]
    res = {}

    def put(name, vals):
        res[name] = {"runs": vals, "min": min(vals), "median": statistics.median(vals), "max": max(vals)}
        print("  %-34s median %10.1f  (min %.1f, max %.1f)" % (name, res[name]["median"], min(vals), max(vals)),
              file=sys.stderr)
    for name, fn in tests:
        vals = []
        for _ in range(a.runs):
            os.sync()
            try:
                vals.append(fn())
            except OSError as e:   # e.g. O_DIRECT unsupported on this filesystem
                print("ceilings: %s: %s" % (name, e), file=sys.stderr)
                break
        for f in os.listdir(a.dir):   # files kept by the runs of this figure
            if f.endswith(".bin") and f != "src.bin":
                os.unlink(os.path.join(a.dir, f))
        if not vals:
            continue
        if isinstance(vals[0], tuple):
            put(name + "_MBps", [round(v[0], 1) for v in vals])
            put(name + "_cpu_s_per_GiB", [round(v[1], 2) for v in vals])
        else:
            put(name, [round(v, 1) for v in vals])
    os.unlink(src)
    with open(a.out, "w") as f:
        json.dump({"mib": a.mib, "runs": a.runs, "figures": res}, f, indent=1)


if __name__ == "__main__":
    main()
