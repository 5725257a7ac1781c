#!/usr/bin/env python3
"""GC over a large store, and what a running GC costs pushes and pulls (driven by bench/gc.sh).

    gcbench.py --url http://127.0.0.1:PORT --pid PID --token ADMIN_TOKEN --out RESULTS.md
               [--manifests 10000] [--blobs-per-manifest 10] [--repos 100] [--workers 8]

1. Population: --manifests image manifests spread over --repos repositories, each with its own
   config and (--blobs-per-manifest - 1) layers of 1 KiB random bytes, so manifests x
   blobs-per-manifest distinct blobs (default 100,000), pushed by --workers processes.
2. GC with nothing to free (grace 0), timed, with the server's peak RSS while it runs.
3. Half the manifests deleted by digest (their tags go with them), then GC again (grace 0),
   which unlinks and deletes their blobs: timed, RSS, what it freed.
4. Push (--workers processes, new 256 KiB blobs, monolithic POST) and pull (GET of stored
   1 KiB layers) throughput for --window seconds each, without GC and then while GC runs back
   to back (`POST /admin/v1/gc`, grace 0, nothing left to free), as a ratio; 3 repetitions,
   alternating the order.
Server CPU and RSS from /proc/PID. Loopback only.
"""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from airbench import Http, proc_cpu_s, proc_status_kib, loadavg  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def call(c, method, path, body=b"", headers=None):
    """(status, body) of one request on keep-alive connection `c`."""
    r = c.request(method, path, body=body, headers=headers)
    return r.status, r.body


def push_blob(c, repo, data):
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    st, b = call(c, "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, dg), data,
                     {"Content-Type": "application/octet-stream"})
    if st != 201:
        raise RuntimeError("blob POST %d %s" % (st, b[:200]))
    return dg


def populate_worker(port, wid, nworkers, a, q):
    c = Http(port)
    out = []
    for i in range(wid, a.manifests, nworkers):
        repo = "gc/r%03d" % (i % a.repos)
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
        cd = push_blob(c, repo, cfg)
        layers = []
        for _ in range(a.blobs_per_manifest - 1):
            data = os.urandom(1024)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": push_blob(c, repo, data), "size": len(data)})
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                   "size": len(cfg)}, "layers": layers}).encode()
        st, b = call(c, "PUT", "/v2/%s/manifests/m%05d" % (repo, i), m, {"Content-Type": OCI_MANIFEST})
        if st != 201:
            raise RuntimeError("manifest PUT %d %s" % (st, b[:200]))
        out.append((repo, "sha256:" + hashlib.sha256(m).hexdigest(), layers[0]["digest"]))
    q.put(out)


def delete_worker(port, items, q):
    c = Http(port)
    n = 0
    for repo, dg in items:
        st, b = call(c, "DELETE", "/v2/%s/manifests/%s" % (repo, dg))
        if st != 202:
            raise RuntimeError("manifest DELETE %d %s" % (st, b[:200]))
        n += 1
    q.put(n)


def push_load(port, wid, stop_at, q):
    c = Http(port)
    n = 0
    while time.time() < stop_at:
        push_blob(c, "gc/load", os.urandom(256 << 10))
        n += 1
    q.put(n * (256 << 10))


def pull_load(port, wid, items, stop_at, q):
    c = Http(port)
    n = 0
    k = wid
    while time.time() < stop_at:
        repo, dg = items[k % len(items)]
        st, b = call(c, "GET", "/v2/%s/blobs/%s" % (repo, dg))
        if st != 200:
            raise RuntimeError("blob GET %d" % st)
        n += 1
        k += 7
    q.put(n)


def run_procs(target, argsets):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=target, args=args + (q,)) for args in argsets]
    for p in ps:
        p.start()
    got = [q.get() for _ in ps]
    for p in ps:
        p.join()
        if p.exitcode:
            raise SystemExit("a worker failed (exit %d)" % p.exitcode)
    return got


class RssPeak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, proc_status_kib(self.pid, "VmRSS") or 0)
            time.sleep(0.05)


def gc(a, extra=""):
    c = Http(a.port)
    rss = RssPeak(a.pid)
    rss.start()
    c0 = proc_cpu_s(a.pid)
    t0 = time.perf_counter()
    st, b = call(c, "POST", "/admin/v1/gc?grace=0s" + extra, b"",
                     {"Authorization": "Bearer " + a.token})
    dt = time.perf_counter() - t0
    cpu = proc_cpu_s(a.pid) - c0
    rss.stop.set()
    rss.join()
    if st != 200:
        raise SystemExit("GC gave %d %s" % (st, b[:300]))
    return json.loads(b), dt, cpu, rss.peak / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--header", default="")
    ap.add_argument("--manifests", type=int, default=10000)
    ap.add_argument("--blobs-per-manifest", type=int, default=10)
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--window", type=float, default=10)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    a.port = urllib.parse.urlsplit(a.url).port
    say = lambda *m: print(time.strftime("[gcbench %H:%M:%S]"), *m, file=sys.stderr, flush=True)  # noqa: E731
    load0 = loadavg()
    rows = []

    say("populating %d manifests x %d blobs" % (a.manifests, a.blobs_per_manifest))
    t0 = time.perf_counter()
    got = run_procs(populate_worker, [(a.port, w, a.workers, a) for w in range(a.workers)])
    items = [x for part in got for x in part]
    pop_s = time.perf_counter() - t0
    nblobs = a.manifests * a.blobs_per_manifest
    rss_pop = (proc_status_kib(a.pid, "VmRSS") or 0) / 1024
    rows.append(("population: {:,} manifests with {:,} config and layer blobs, in {:,} repositories ({} client processes)"
                 .format(a.manifests, nblobs, a.repos, a.workers),
                 "%.1f s (%.0f blobs/s, client-bound); server RSS after it %.1f MiB" % (pop_s, nblobs / pop_s, rss_pop)))

    say("GC 1: nothing to free")
    rep, dt, cpu, peak = gc(a)
    rows.append(("GC, nothing to free",
                 "%.2f s wall (the server's report: %d ms), %.2f CPU-s, peak RSS %.1f MiB; {:,} blobs kept (manifests count as blobs)".format(rep["blobs_kept"])
                 % (dt, rep["elapsed_ms"], cpu, peak)))

    say("deleting half the manifests")
    doomed = items[::2]
    keep = items[1::2]
    t0 = time.perf_counter()
    run_procs(delete_worker, [(a.port, [(r, d) for r, d, _ in doomed[w::a.workers]]) for w in range(a.workers)])
    del_s = time.perf_counter() - t0
    rows.append(("manifest DELETE by digest, {:,} of them (half)".format(len(doomed)), "%.1f s (%.0f/s)" % (del_s, len(doomed) / del_s)))

    say("GC 2: frees the deleted manifests' blobs")
    rep, dt, cpu, peak = gc(a)
    rows.append(("GC that frees the deleted manifests' blobs",
                 "%.2f s wall (the server's report: %d ms), %.2f CPU-s, peak RSS %.1f MiB; {:,} blobs deleted ({:,} bytes), {:,} repository links dropped, {:,} blobs kept".format(
                     rep["blobs_deleted"], rep["bytes_freed"], rep["links_dropped"], rep["blobs_kept"])
                 % (dt, rep["elapsed_ms"], cpu, peak)))

    pulls = [(r, l) for r, _, l in keep]
    res = {"push": {"off": [], "on": []}, "pull": {"off": [], "on": []}}
    peaks = {"push": {"off": 0.0, "on": 0.0}, "pull": {"off": 0.0, "on": 0.0}}
    gcs = []

    def window(kind, with_gc):
        stop = threading.Event()
        runs = []

        def loop():
            while not stop.is_set():
                _, dt, _, _ = gc(a)
                runs.append(dt)
        th = threading.Thread(target=loop, daemon=True)
        rss = RssPeak(a.pid)
        rss.start()
        if with_gc:
            th.start()
            time.sleep(0.5)
        stop_at = time.time() + a.window
        t0 = time.perf_counter()
        if kind == "push":
            got = run_procs(push_load, [(a.port, w, stop_at) for w in range(a.workers)])
            rate = sum(got) / (time.perf_counter() - t0) / 1e6
        else:
            got = run_procs(pull_load, [(a.port, w, pulls, stop_at) for w in range(a.workers)])
            rate = sum(got) / (time.perf_counter() - t0)
        stop.set()
        if with_gc:
            th.join()
            gcs.extend(runs)
        rss.stop.set()
        rss.join()
        key = "on" if with_gc else "off"
        res[kind][key].append(rate)
        peaks[kind][key] = max(peaks[kind][key], rss.peak / 1024)

    for r in range(a.reps):
        for kind in ("push", "pull"):
            order = (False, True) if r % 2 == 0 else (True, False)
            for with_gc in order:
                say("rep %d %s %s GC" % (r + 1, kind, "with" if with_gc else "without"))
                window(kind, with_gc)
    for kind, unit in (("push", "MB/s (256 KiB blobs)"), ("pull", "blob GETs/s (1 KiB layers)")):
        off, on = statistics.median(res[kind]["off"]), statistics.median(res[kind]["on"])
        rows.append(("%s, %d workers, %g s windows: without GC / while GC runs back to back" % (kind, a.workers, a.window),
                     "{:,.0f} / {:,.0f} {}: **{:.2f}×**; server peak RSS {:.1f} / {:.1f} MiB".format(
                         off, on, unit, on / off, peaks[kind]["off"], peaks[kind]["on"])))
    rows.append(("GC runs during those windows", "{:,}, median {:.2f} s each".format(len(gcs), statistics.median(gcs) if gcs else 0)))
    rows.append(("server peak RSS over the whole run (VmHWM)", "%.1f MiB" % ((proc_status_kib(a.pid, "VmHWM") or 0) / 1024)))

    with open(a.out, "w") as f:
        f.write(a.header)
        f.write("\nLoad average %.2f at the start, %.2f at the end. Medians of %d repetitions where repeated.\n\n"
                % (load0, loadavg(), a.reps))
        f.write("| what | measured |\n|---|---|\n")
        for k, v in rows:
            f.write("| %s | %s |\n" % (k, v))
    print(open(a.out).read())


if __name__ == "__main__":
    main()
