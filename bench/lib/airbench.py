#!/usr/bin/env python3
"""airbench: the measuring client of bench/run.sh (python3 stdlib, drives wrk and ab).

Runs the same figures against several registries on loopback, interleaved figure by figure
(order A,B then B,A then A,B ... across repetitions, so drift and background load hit every
registry alike), and writes one JSON file that bench/lib/report.py turns into BENCHMARKS.md.

    airbench.py --target airdock=http://127.0.0.1:PORT@PID --target distribution=...@PID \
                --out run.json [--quick] [options]

Figures (per repetition unless noted):
  push_mono      1 blob (--blob-mib) pushed as POST + one PUT ?digest= (sendfile body)
  push_chunked   the same size as POST, PATCHes of --chunk-mib, PUT ?digest=
  pull           GET of the blob pushed by push_mono in the same repetition
  manifest_get   wrk, --conns connections, --dur seconds, GET by tag (req/s, p99)
  manifest_head  ab -k -i, same connections and duration (wrk cannot do HEAD)
  manifest_put   wrk + Lua, --put-conns connections: every request a new manifest, new tag
  layers         an image of --layers layers of --layer-kib, pushed by --workers processes
                 (HEAD, POST, PUT per layer; then config and manifest); wall seconds
Once per registry after the repetitions (populations are bounded by --populate-seconds):
  tags over --tags-small and --tags-big tags of one repository (plain PUT by tag, --workers
  processes), _catalog over --repos repositories (one cross-repository mount each); then
  --list-reps interleaved repetitions of: first page n=100, page n=100 after the middle
  entry, whole list (following Link).
Server CPU from /proc/PID/stat (utime+stime), RSS from /proc/PID/status (VmRSS sampled at
20 Hz, VmHWM at the end).  MB = 10^6 bytes, MiB = 2^20 bytes.  Loopback only.
"""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def say(*a):
    print(time.strftime("[airbench %H:%M:%S]"), *a, file=sys.stderr, flush=True)


class Fail(Exception):
    pass


# ------------------------------------------------------------------------------ HTTP/1.1
class Closed(Exception):
    pass


class Resp:
    __slots__ = ("status", "headers", "body", "nbytes")

    def __init__(self, status, headers, body, nbytes):
        self.status, self.headers, self.body, self.nbytes = status, headers, body, nbytes

    def need(self, *codes, what=""):
        if self.status not in codes:
            raise Fail("%s: HTTP %d, wanted %s: %r" % (what, self.status, codes, self.body[:200]))
        return self


class Http:
    """A lean keep-alive HTTP/1.1 client on one socket (cheaper per request than
    http.client, which matters when client and servers share two cores)."""

    def __init__(self, port, host="127.0.0.1", timeout=600):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.buf = bytearray()
        self.scratch = None
        self.fresh = False

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.buf.clear()

    def _connect(self):
        if self.sock is None:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
            self.fresh = True

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise Closed("connection closed by server")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _discard(self, n):
        """Read and drop n body bytes with recv_into on a 4 MiB buffer."""
        take = min(n, len(self.buf))
        del self.buf[:take]
        left = n - take
        if left and self.scratch is None:
            self.scratch = memoryview(bytearray(4 * MiB))
        while left:
            k = self.sock.recv_into(self.scratch, min(left, len(self.scratch)))
            if not k:
                raise Closed("connection closed mid-body")
            left -= k
        return n

    def request(self, method, path, body=b"", headers=None, file=None, sink=False):
        """file = (fileobject, offset, count, tail_bytes) is sent with sendfile + tail.
        sink=True drops the body (counted in .nbytes) instead of keeping it."""
        for attempt in (0, 1):
            self._connect()
            reused = not self.fresh
            self.fresh = False
            try:
                return self._once(method, path, body, headers, file, sink)
            except (Closed, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if attempt or not reused:
                    raise Fail("%s %s: %s" % (method, path, e))
        raise Fail("unreachable")

    def _once(self, method, path, body, headers, file, sink):
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (self.host, self.port)]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        if file is not None:
            length = file[2] + len(file[3])
        else:
            length = len(body)
        if length or method in ("PUT", "POST", "PATCH"):
            lines.append("Content-Length: %d" % length)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if file is not None:
            f, off, cnt, tail = file
            self.sock.sendall(head)
            if cnt:
                self.sock.sendfile(f, off, cnt)
            if tail:
                self.sock.sendall(tail)
        else:
            self.sock.sendall(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                self.sock.sendall(body)
        # status line + headers
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        raw = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        status = int(raw[0].split(" ", 2)[1])
        hdrs = {}
        for line in raw[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        out, n = b"", 0
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "content-length" in hdrs:
            n = int(hdrs["content-length"])
            if sink:
                self._discard(n)
            else:
                out = self._exact(n)
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                if sink:
                    self._discard(size)
                else:
                    parts.append(self._exact(size))
                self._exact(2)
                n += size
            out = b"".join(parts)
        else:  # body until close
            while True:
                try:
                    self._fill()
                except Closed:
                    break
            out = bytes(self.buf)
            n = len(out)
            self.buf.clear()
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return Resp(status, hdrs, out, n)


def local_path(loc):
    """A Location header (absolute on loopback, or a path) as a request path."""
    if loc.startswith("http://") or loc.startswith("https://"):
        u = urllib.parse.urlsplit(loc)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise Fail("registry sent a non-loopback Location %r" % loc)
        return u.path + ("?" + u.query if u.query else "")
    return loc


def with_query(loc, q):
    return loc + ("&" if "?" in loc else "?") + q


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def begin_upload(h, repo):
    r = h.request("POST", "/v2/%s/blobs/uploads/" % repo).need(202, what="POST upload")
    loc = r.headers.get("location")
    if not loc:
        raise Fail("POST upload: no Location")
    return local_path(loc)


def push_small_blob(h, repo, data, digest=None, head_first=True):
    dg = digest or sha256_digest(data)
    if head_first and h.request("HEAD", "/v2/%s/blobs/%s" % (repo, dg)).status == 200:
        return dg
    loc = begin_upload(h, repo)
    h.request("PUT", with_query(loc, "digest=" + dg), body=data,
              headers={"Content-Type": "application/octet-stream"}).need(201, what="PUT blob")
    return dg


def image_manifest(cfg, layers, annotations=None):
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": OCI_CONFIG, "digest": cfg[0], "size": cfg[1]},
         "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers]}
    if annotations:
        m["annotations"] = annotations
    return json.dumps(m, separators=(",", ":")).encode()


def put_manifest(h, repo, ref, body):
    return h.request("PUT", "/v2/%s/manifests/%s" % (repo, ref), body=body,
                     headers={"Content-Type": OCI_MANIFEST}).need(201, what="PUT manifest %s:%s" % (repo, ref))


def seed_image(h, repo, salt):
    """Config + one 1 KiB layer in repo; returns the pieces of a manifest."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "salt": salt}).encode()
    layer = hashlib.sha256(salt.encode()).digest() * 32
    cd = push_small_blob(h, repo, cfg)
    ld = push_small_blob(h, repo, layer)
    return (cd, len(cfg)), [(ld, len(layer))]


# ------------------------------------------------------------------------------ /proc
def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError):
        return None


def proc_tree_cpu_s(pid):
    """CPU seconds of pid, of its children that still run and of those it reaped (a
    helper that forks a process per client, such as PostgreSQL's backends)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        total = sum(int(x) for x in fields[11:15])
    except (OSError, ValueError):
        return None
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == pid:
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            if int(fields[1]) == pid:
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            continue   # gone meanwhile
    return total / CLK_TCK


def proc_status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v), v[3] + v[4]


# Processes the servers depend on (--helper NAME=PID, e.g. the S3 server of bench/s3.sh): their
# CPU is recorded per figure and counted with the servers', not as other processes'.
HELPERS = {}


def others_snapshot(targets):
    """(wall, busy CPU s of the whole machine, CPU s of the servers and helpers, CPU s of this
    client and its waited-for children: wrk, ab, worker processes)."""
    tot, idle = cpu_ticks()
    ct = os.times()
    pids = [t.pid for t in targets] + list(HELPERS.values())
    return (time.time(), (tot - idle) / CLK_TCK, sum(proc_cpu_s(p) or 0 for p in pids),
            ct.user + ct.system + ct.children_user + ct.children_system)


def others_pct(s0, s1):
    wall = s1[0] - s0[0]
    if wall <= 0.5:
        return None
    other = (s1[1] - s0[1]) - (s1[2] - s0[2]) - (s1[3] - s0[3])
    return max(0.0, 100.0 * other / (wall * os.cpu_count()))


class RssSampler(threading.Thread):
    def __init__(self, targets):
        super().__init__(daemon=True)
        self.targets = targets
        self.peak = {t.name: 0 for t in targets}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for t in self.targets:
                v = proc_status_kib(t.pid, "VmRSS")
                if v and v > self.peak[t.name]:
                    self.peak[t.name] = v
            self.stop.wait(0.05)

    def window(self):
        """Peak VmRSS (KiB) per target since the last call."""
        out = dict(self.peak)
        for k in self.peak:
            self.peak[k] = 0
        return out


# ------------------------------------------------------------------------------ blobs
class BigBlob:
    """Blobs of SIZE bytes that are all different but cheap to make: the first SIZE-32 bytes
    of a cached random file (sent with sendfile) + a unique 32-byte tail. The sha256 state
    after the common prefix is computed once and copied for each new tail."""
    TAIL = 32

    def __init__(self, cache_dir, mib):
        self.size = mib * MiB
        os.makedirs(cache_dir, exist_ok=True)
        self.path = os.path.join(cache_dir, "random-%dMiB.bin" % mib)
        if not os.path.isfile(self.path) or os.path.getsize(self.path) != self.size:
            say("writing %s (%d MiB of random bytes, kept for later runs)" % (self.path, mib))
            tmp = "%s.%d.tmp" % (self.path, os.getpid())
            with open(tmp, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MiB))
            os.replace(tmp, self.path)
        self.f = open(self.path, "rb")
        h = hashlib.sha256()
        with open(self.path, "rb", buffering=0) as f:
            left = self.size - self.TAIL
            while left:
                chunk = f.read(min(8 * MiB, left))
                if not chunk:
                    raise Fail("short read of " + self.path)
                h.update(chunk)
                left -= len(chunk)
        self.state = h

    def new(self, label):
        tail = ("%s/%s" % (label, os.urandom(12).hex())).encode()[:self.TAIL].ljust(self.TAIL, b"#")
        h = self.state.copy()
        h.update(tail)
        return "sha256:" + h.hexdigest(), tail

    def part(self, tail, off, n):
        """(file, offset, count, tail-bytes) for blob bytes [off, off+n)."""
        flen = self.size - self.TAIL
        fcount = max(0, min(off + n, flen) - off)
        t0 = max(off, flen) - flen
        t1 = off + n - flen
        return (self.f, off, fcount, tail[t0:t1] if t1 > 0 else b"")


# ------------------------------------------------------------------------------ targets
class Target:
    def __init__(self, spec):
        name, _, rest = spec.partition("=")
        url, _, pid = rest.rpartition("@") if "@" in rest else (rest, "", "")
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit("only http://127.0.0.1 targets: %r" % spec)
        if not name or not pid:
            raise SystemExit("--target NAME=http://127.0.0.1:PORT@PID, got %r" % spec)
        self.name, self.url, self.port, self.pid = name, url.rstrip("/"), u.port, int(pid)
        self.samples = {}   # figure -> [values]
        self.info = {}
        self.errors = []

    def add(self, fig, value):
        self.samples.setdefault(fig, []).append(value)

    def http(self):
        return Http(self.port)

    def cpu(self):
        return proc_cpu_s(self.pid)


def measure(t, fn):
    """Run fn(); return (result, wall seconds, server CPU seconds)."""
    c0 = t.cpu()
    w0 = time.perf_counter()
    r = fn()
    dt = time.perf_counter() - w0
    c1 = t.cpu()
    return r, dt, (c1 - c0 if c0 is not None and c1 is not None else None)


def sync_disk():
    subprocess.run(["sync"], check=False, timeout=300)


# ------------------------------------------------------------------------------ blob figures
def fig_push_mono(t, rep, a, big, state):
    repo = "bench/big"
    dg, tail = big.new("%s-mono-%d" % (t.name, rep))
    sync_disk()
    h = t.http()

    def go():
        loc = begin_upload(h, repo)
        h.request("PUT", with_query(loc, "digest=" + dg), file=big.part(tail, 0, big.size),
                  headers={"Content-Type": "application/octet-stream"}).need(201, what="monolithic PUT")
    _, dt, cpu = measure(t, go)
    h.close()
    state.setdefault(t.name, {})["pull"] = dg
    t.add("push_mono_MBps", big.size / dt / 1e6)
    if cpu is not None:
        t.add("push_mono_cpu_s_per_GiB", cpu / (big.size / GiB))


def fig_push_chunked(t, rep, a, big, state):
    repo = "bench/big"
    dg, tail = big.new("%s-chunk-%d" % (t.name, rep))
    step = a.chunk_mib * MiB
    sync_disk()
    h = t.http()

    def go():
        loc = begin_upload(h, repo)
        off = 0
        while off < big.size:
            n = min(step, big.size - off)
            r = h.request("PATCH", loc, file=big.part(tail, off, n),
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Range": "%d-%d" % (off, off + n - 1)})
            r.need(202, what="PATCH at %d" % off)
            loc = local_path(r.headers.get("location", loc))
            off += n
        h.request("PUT", with_query(loc, "digest=" + dg)).need(201, what="chunked final PUT")
    _, dt, cpu = measure(t, go)
    h.close()
    t.add("push_chunked_MBps", big.size / dt / 1e6)
    if cpu is not None:
        t.add("push_chunked_cpu_s_per_GiB", cpu / (big.size / GiB))


def fig_pull(t, rep, a, big, state):
    dg = state.get(t.name, {}).get("pull")
    if not dg:
        raise Fail("no blob from push_mono to pull")
    h = t.http()

    def go():
        r = h.request("GET", "/v2/bench/big/blobs/" + dg, sink=True).need(200, what="blob GET")
        if r.nbytes != big.size:
            raise Fail("blob GET gave %d bytes, want %d" % (r.nbytes, big.size))
        if r.headers.get("docker-content-digest", dg) != dg:
            raise Fail("blob GET digest header mismatch")
        return r.nbytes
    n, dt, cpu = measure(t, go)
    h.close()
    t.add("pull_MBps", n / dt / 1e6)
    if cpu is not None:
        t.add("pull_cpu_s_per_GiB", cpu / (n / GiB))


# ------------------------------------------------------------------------------ wrk / ab
UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def wrk_time_us(s):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", s.strip())
    if not m:
        raise Fail("cannot read wrk time %r" % s)
    return float(m.group(1)) * UNIT_US[m.group(2)]


def parse_wrk(out):
    d = {}
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    if not m:
        raise Fail("wrk output not understood: %s" % out[-400:])
    d["requests"] = int(m.group(1))
    d["seconds"] = wrk_time_us(m.group(2)) / 1e6
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    d["p99_ms"] = wrk_time_us(m.group(1)) / 1e3 if m else None
    m = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    d["p50_ms"] = wrk_time_us(m.group(1)) / 1e3 if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    d["bad_status"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    d["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return d


def run_wrk(t, a, url, threads, conns, lua=None, extra=()):
    cmd = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % a.dur, "--latency", "--timeout", "10s"]
    cmd += list(extra)
    if lua:
        cmd += ["-s", lua]
    cmd.append(url)
    c0 = t.cpu()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.dur + 60)
    c1 = t.cpu()
    if p.returncode:
        raise Fail("wrk exit %d: %s" % (p.returncode, p.stderr[-300:]))
    d = parse_wrk(p.stdout)
    d["server_cpu_s"] = c1 - c0 if c0 is not None and c1 is not None else None
    return d


def run_ab_head(t, a, url):
    tmp = tempfile.mkdtemp(prefix="airbench-ab-")
    try:
        csv = os.path.join(tmp, "pct.csv")
        cmd = ["ab", "-i", "-k", "-q", "-c", str(a.conns), "-t", str(a.dur), "-n", "20000000",
               "-s", "10", "-H", "Accept: " + OCI_MANIFEST, "-e", csv, url]
        c0 = t.cpu()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.dur + 60)
        c1 = t.cpu()
        out = p.stdout

        def num(label):
            m = re.search(r"^%s:\s+([\d.]+)" % re.escape(label), out, re.M)
            return float(m.group(1)) if m else 0.0
        if p.returncode or "Complete requests" not in out:
            raise Fail("ab exit %d: %s %s" % (p.returncode, out[-300:], p.stderr[-300:]))
        pct = {}
        with open(csv) as f:
            next(f)
            for line in f:
                k, _, v = line.strip().partition(",")
                pct[int(float(k))] = float(v)
        return {"requests": int(num("Complete requests")), "seconds": num("Time taken for tests"),
                "p99_ms": pct.get(99), "p50_ms": pct.get(50),
                "bad_status": int(num("Non-2xx responses")), "socket_errors": int(num("Failed requests")),
                "keepalive": int(num("Keep-Alive requests")),
                "server_cpu_s": c1 - c0 if c0 is not None and c1 is not None else None}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def record_load(t, key, d, what):
    errs = d["bad_status"] + d["socket_errors"]
    t.info.setdefault(key + "_runs", []).append(d)
    if not d["requests"] or errs > 0.001 * d["requests"]:
        raise Fail("%s: %d errors in %d requests: %s" % (what, errs, d["requests"], d))
    t.add(key + "_rps", d["requests"] / d["seconds"])
    t.add(key + "_p99_ms", d["p99_ms"])
    if d["server_cpu_s"] is not None:
        t.add(key + "_cpu_us_per_req", d["server_cpu_s"] / d["requests"] * 1e6)


def fig_manifest_get(t, rep, a, big, state):
    url = "%s/v2/bench/small/manifests/latest" % t.url
    d = run_wrk(t, a, url, a.wrk_threads, a.conns, extra=["-H", "Accept: " + OCI_MANIFEST])
    record_load(t, "manifest_get", d, "manifest GET")


def fig_manifest_get_1(t, rep, a, big, state):
    """One connection, one request at a time: the latency a lone client sees (not in the
    default figures; bench/replica.sh uses it to show what a database round trip adds)."""
    url = "%s/v2/bench/small/manifests/latest" % t.url
    d = run_wrk(t, a, url, 1, 1, extra=["-H", "Accept: " + OCI_MANIFEST])
    record_load(t, "manifest_get_1", d, "manifest GET, one connection")


def fig_manifest_head(t, rep, a, big, state):
    d = run_ab_head(t, a, "%s/v2/bench/small/manifests/latest" % t.url)
    record_load(t, "manifest_head", d, "manifest HEAD")


PUT_LUA = r"""
-- every request: a new manifest (unique annotation) under a new tag
local n = 0
function setup(thread)
  nthreads = (nthreads or 0) + 1
  thread:set("tid", nthreads)
end
function request()
  n = n + 1
  local tag = "@RUN@-" .. tid .. "-" .. n
  local body = '@HEAD@"annotations":{"bench.tag":"' .. tag .. '"}}'
  return wrk.format("PUT", "@PATH@" .. tag, {["Content-Type"] = "@CT@"}, body)
end
"""


def fig_manifest_put(t, rep, a, big, state):
    repo = "bench/put-%d" % rep          # a repository per repetition, seeded outside the clock
    h = t.http()
    cfg, layers = seed_image(h, repo, "small")
    h.close()
    m = json.loads(image_manifest(cfg, layers))
    head = json.dumps(m, separators=(",", ":"))[:-1] + ","
    tmp = tempfile.mkdtemp(prefix="airbench-wrk-")
    try:
        lua = os.path.join(tmp, "put.lua")
        with open(lua, "w") as f:
            f.write(PUT_LUA.replace("@RUN@", "r%d" % rep).replace("@HEAD@", head)
                    .replace("@PATH@", "/v2/%s/manifests/" % repo).replace("@CT@", OCI_MANIFEST))
        d = run_wrk(t, a, "%s/v2/" % t.url, 1, a.put_conns, lua=lua)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record_load(t, "manifest_put", d, "manifest PUT")


# ------------------------------------------------------------------------------ worker pools
def _pool_worker(port, fn, job, wid, nworkers, start_ev, limit_s, q):
    h = Http(port)
    done, err = 0, None
    start_ev.wait()
    deadline = time.time() + limit_s if limit_s > 0 else 0
    try:
        done = fn(h, job, wid, nworkers, deadline)
    except Exception as e:  # reported to the parent
        err = "%s: %s" % (type(e).__name__, e)
    h.close()
    q.put((wid, done, err))


def run_pool(t, nworkers, fn, job, limit_s=0.0):
    """fn(http, job, wid, nworkers, deadline) in nworkers forked processes, released together
    (forked before the clock starts). Returns (total done, wall seconds from release to the
    last finish, server CPU seconds, errors). limit_s > 0 bounds each worker's time."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ev = ctx.Event()
    procs = [ctx.Process(target=_pool_worker, args=(t.port, fn, job, w, nworkers, ev, limit_s, q), daemon=True)
             for w in range(nworkers)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    c0 = t.cpu()
    w0 = time.perf_counter()
    ev.set()
    res = [q.get() for _ in procs]
    dt = time.perf_counter() - w0
    c1 = t.cpu()
    for p in procs:
        p.join(10)
    errs = [e for _, _, e in res if e]
    return sum(d for _, d, _ in res), dt, (c1 - c0 if c0 is not None and c1 is not None else None), errs


def _push_layers(h, job, wid, nw, _):
    repo = job["repo"]
    n = 0
    for i in range(wid, len(job["layers"]), nw):
        push_small_blob(h, repo, job["layers"][i], job["digests"][i], head_first=True)
        n += 1
    return n


def fig_layers(t, rep, a, big, state):
    repo = "bench/layers-%d" % rep
    layers = [os.urandom(a.layer_kib * 1024) for _ in range(a.layers)]
    job = {"repo": repo, "layers": layers, "digests": [sha256_digest(x) for x in layers]}
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "bench": "%s-%d" % (t.name, rep)}).encode()
    # The deadline-free pool starts its processes before the clock; the manifest goes last.
    n, dt, cpu, errs = run_pool(t, a.workers, _push_layers, job)
    if errs:
        raise Fail("layer push: " + "; ".join(errs[:3]))
    h = t.http()
    (_, dt2, cpu2) = measure(t, lambda: put_manifest(
        h, repo, "latest", image_manifest((push_small_blob(h, repo, cfg), len(cfg)),
                                          list(zip(job["digests"], [len(x) for x in layers])))))
    h.close()
    t.add("layers_push_s", dt + dt2)
    if cpu is not None and cpu2 is not None:
        t.add("layers_push_cpu_s", cpu + cpu2)


def _put_tags(h, job, wid, nw, deadline):
    n = 0
    for i in range(wid, job["count"], nw):
        if deadline and time.time() > deadline:
            break
        put_manifest(h, job["repo"], "t%06d" % i, job["body"])
        n += 1
    return n


def _mount_repos(h, job, wid, nw, deadline):
    n = 0
    for i in range(wid, job["count"], nw):
        if deadline and time.time() > deadline:
            break
        r = h.request("POST", "/v2/cat/r%06d/blobs/uploads/?mount=%s&from=%s" % (i, job["digest"], job["from"]))
        r.need(201, what="mount into cat/r%06d" % i)
        n += 1
    return n


def populate_tags(t, a, state, repo, count):
    h = t.http()
    cfg, layers = seed_image(h, repo, "tags-" + repo)
    h.close()
    body = image_manifest(cfg, layers)
    sync_disk()
    n, dt, cpu, errs = run_pool(t, a.workers, _put_tags, {"repo": repo, "count": count, "body": body},
                                limit_s=a.populate_seconds)
    t.info["populate_" + repo] = {"wanted": count, "tagged": n, "seconds": round(dt, 2),
                                  "tags_per_s": round(n / dt, 1), "server_cpu_s": cpu, "errors": errs[:3]}
    say("%s: %d/%d tags in %s in %.1fs (%.0f/s)%s" % (t.name, n, count, repo, dt, n / dt,
                                                      " ERR " + errs[0] if errs else ""))
    return n


def populate_catalog(t, a, state, count):
    h = t.http()
    cfg, _ = seed_image(h, "cat/source", "catalog")
    h.close()
    sync_disk()
    n, dt, cpu, errs = run_pool(t, a.workers, _mount_repos, {"count": count, "digest": cfg[0], "from": "cat/source"},
                                limit_s=a.populate_seconds)
    t.info["populate_catalog"] = {"wanted": count, "repos": n, "seconds": round(dt, 2),
                                  "repos_per_s": round(n / dt, 1), "server_cpu_s": cpu, "errors": errs[:3]}
    say("%s: %d/%d repositories in %.1fs (%.0f/s)%s" % (t.name, n, count, dt, n / dt,
                                                        " ERR " + errs[0] if errs else ""))


# ------------------------------------------------------------------------------ listing
def timed_get(h, path, key):
    w0 = time.perf_counter()
    r = h.request("GET", path).need(200, what="GET " + path)
    dt = (time.perf_counter() - w0) * 1000
    items = json.loads(r.body).get(key) or []
    return dt, items, r.headers.get("link")


def whole_list(h, path, key):
    w0 = time.perf_counter()
    items, pages = [], 0
    while path and pages < 100000:
        _, got, link = timed_get(h, path, key)
        items += got
        pages += 1
        path = None
        if link and 'rel="next"' in link:
            path = local_path(link.split(";")[0].strip().strip("<>"))
    return (time.perf_counter() - w0) * 1000, items, pages


def list_figures(t, a, state, which):
    """One repetition of the listing figures; each value is the median of --list-iters tries."""
    h = t.http()
    for label, base, key, count in which:
        sep = "&" if "?" in base else "?"
        # whole list first (also gives the middle entry to start a page from)
        wl = [whole_list(h, base, key)]
        while len(wl) < max(1, a.list_iters // 2) and wl[0][0] < 1000:   # repeat only if < 1 s
            wl.append(whole_list(h, base, key))
        items, pages = wl[0][1], wl[0][2]
        if count is not None and len(items) < count:
            raise Fail("%s: listed %d entries, populated %d" % (label, len(items), count))
        mid = sorted(items)[len(items) // 2] if items else ""
        first = [timed_get(h, base + sep + "n=100", key)[0] for _ in range(a.list_iters)]
        middle = [timed_get(h, base + sep + "n=100&last=" + urllib.parse.quote(mid, safe=""), key)[0]
                  for _ in range(a.list_iters)]
        t.add(label + "_page_first_ms", statistics.median(first))
        t.add(label + "_page_middle_ms", statistics.median(middle))
        t.add(label + "_whole_ms", statistics.median([x[0] for x in wl]))
        t.info[label + "_entries"] = len(items)
        t.info[label + "_pages_whole"] = pages
        p1 = timed_get(h, base + sep + "n=100", key)[1]
        t.info[label + "_first_page_entries"] = len(p1)
    h.close()


# ------------------------------------------------------------------------------ main
FIGS_REPEATED = [("push_mono", fig_push_mono), ("push_chunked", fig_push_chunked), ("pull", fig_pull),
                 ("manifest_get", fig_manifest_get), ("manifest_head", fig_manifest_head),
                 ("manifest_put", fig_manifest_put), ("layers", fig_layers)]
# Run only when --figures names them.
FIGS_OPTIONAL = [("manifest_get_1", fig_manifest_get_1)]


def setup_small(t, state):
    h = t.http()
    cfg, layers = seed_image(h, "bench/small", "small")
    body = image_manifest(cfg, layers)
    put_manifest(h, "bench/small", "latest", body)
    r = h.request("GET", "/v2/bench/small/manifests/latest", headers={"Accept": OCI_MANIFEST})
    r.need(200, what="manifest GET check")
    if r.body != body:
        raise Fail("manifest GET returned other bytes")
    h.request("HEAD", "/v2/bench/small/manifests/latest", headers={"Accept": OCI_MANIFEST}).need(200, what="HEAD")
    h.close()
    state.setdefault(t.name, {})["small_parts"] = (cfg, layers)


def machine():
    cpu = "?"
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line
    mem = proc_meminfo("MemTotal")
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "sha_ni": " sha_ni" in flags,
            "mem_total_gib": round(mem / 1024 / 1024, 1) if mem else None, "kernel": platform.release(),
            "python": platform.python_version()}


def proc_meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True, help="NAME=http://127.0.0.1:PORT@PID")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--blob-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--dur", type=int, default=10, help="seconds per wrk/ab run")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--put-conns", type=int, default=8)
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--layer-kib", type=int, default=4)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--tags-small", type=int, default=1000)
    ap.add_argument("--tags-big", type=int, default=100000)
    ap.add_argument("--repos", type=int, default=10000)
    ap.add_argument("--populate-seconds", type=float, default=240, help="bound for each population")
    ap.add_argument("--list-reps", type=int, default=4)
    ap.add_argument("--list-iters", type=int, default=5)
    ap.add_argument("--figures", default=",".join(n for n, _ in FIGS_REPEATED) + ",listing")
    ap.add_argument("--cache-dir", default="/var/tmp/airdock-bench-cache")
    ap.add_argument("--helper", action="append", default=[], help="NAME=PID of a process the servers use "
                    "(an S3 server): its CPU per figure goes to info.helper_cpu_s")
    ap.add_argument("--deadline", type=float, default=0, help="seconds; repetitions past it are skipped")
    a = ap.parse_args()
    t_start = time.time()
    targets = [Target(s) for s in a.target]
    for spec in a.helper:
        n, _, p = spec.partition("=")
        HELPERS[n] = int(p)
    want = set(x.strip() for x in a.figures.split(",") if x.strip())
    state = {}
    out = {"tool": "bench/lib/airbench.py", "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "machine": machine(), "args": vars(a), "loadavg": {"start": loadavg()}, "skipped": []}

    for t in targets:
        t.info["rss_idle_start_kib"] = proc_status_kib(t.pid, "VmRSS")
        t.add("rss_idle_start_MiB", t.info["rss_idle_start_kib"] / 1024)
        setup_small(t, state)
    big = BigBlob(a.cache_dir, a.blob_mib) if want & {"push_mono", "push_chunked", "pull"} else None
    sampler = RssSampler(targets)
    sampler.start()
    others = []   # % of all CPUs used by processes other than the servers and this client

    def run_one(t, fname, fn, rep):
        say("rep %d %-13s %s" % (rep + 1, fname, t.name))
        snap0 = others_snapshot(targets)
        h0 = {n: proc_tree_cpu_s(p) for n, p in HELPERS.items()}
        try:
            fn(t, rep, a, big, state)
        except (Fail, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            t.errors.append("rep %d %s: %s: %s" % (rep + 1, fname, type(e).__name__, e))
            say("ERROR %s %s: %s" % (t.name, fname, e))
        t.info.setdefault("rss_trace_kib", []).append((rep + 1, fname, proc_status_kib(t.pid, "VmRSS")))
        for n, p in HELPERS.items():
            c1 = proc_tree_cpu_s(p)
            if c1 is not None and h0[n] is not None:
                t.info.setdefault("helper_cpu_s", {}).setdefault(n, {}).setdefault(fname, []).append(c1 - h0[n])
        o = others_pct(snap0, others_snapshot(targets))
        if o is not None:
            others.append(o)

    for rep in range(a.reps):
        order = targets if rep % 2 == 0 else targets[::-1]
        for fname, fn in FIGS_REPEATED + FIGS_OPTIONAL:
            if fname not in want:
                continue
            for t in order:
                if a.deadline and time.time() - t_start > a.deadline:
                    out["skipped"].append("rep %d %s %s" % (rep + 1, fname, t.name))
                    continue
                run_one(t, fname, fn, rep)
        out["loadavg"]["after_rep_%d" % (rep + 1)] = loadavg()
    peaks = sampler.window()
    for t in targets:
        t.add("rss_peak_ops_MiB", peaks[t.name] / 1024)

    if "listing" in want:
        which = [("tags_small", "/v2/tags/small/tags/list", "tags", None),
                 ("tags_big", "/v2/tags/big/tags/list", "tags", None),
                 ("catalog", "/v2/_catalog", "repositories", None)]
        for t in targets:   # populations: one registry at a time, never both at once
            try:
                t.info["rss_before_populations_kib"] = proc_status_kib(t.pid, "VmRSS")
                n1 = populate_tags(t, a, state, "tags/small", a.tags_small)
                t.info["rss_after_tags_small_kib"] = proc_status_kib(t.pid, "VmRSS")
                n2 = populate_tags(t, a, state, "tags/big", a.tags_big)
                t.info["rss_after_tags_big_kib"] = proc_status_kib(t.pid, "VmRSS")
                populate_catalog(t, a, state, a.repos)
                t.info["rss_after_catalog_kib"] = proc_status_kib(t.pid, "VmRSS")
                t.info["tags_small_populated"], t.info["tags_big_populated"] = n1, n2
            except (Fail, OSError) as e:
                t.errors.append("populate: %s" % e)
                say("ERROR populate %s: %s" % (t.name, e))
        for t in targets:
            t.info["rss_after_populate_kib"] = proc_status_kib(t.pid, "VmRSS")
        for rep in range(a.list_reps):
            order = targets if rep % 2 == 0 else targets[::-1]
            for t in order:
                say("list rep %d %s" % (rep + 1, t.name))
                try:
                    list_figures(t, a, state, which)
                except (Fail, OSError, ValueError) as e:
                    t.errors.append("list rep %d: %s" % (rep + 1, e))
                    say("ERROR list %s: %s" % (t.name, e))
        peaks = sampler.window()
        for t in targets:
            t.add("rss_peak_lists_MiB", peaks[t.name] / 1024)
    sampler.stop.set()
    time.sleep(2)
    for t in targets:
        t.add("rss_idle_end_MiB", (proc_status_kib(t.pid, "VmRSS") or 0) / 1024)
        t.add("rss_peak_MiB", (proc_status_kib(t.pid, "VmHWM") or 0) / 1024)
        t.info["cpu_s_total"] = t.cpu()
    out["loadavg"]["end"] = loadavg()
    out["other_processes_cpu_pct"] = {"min": min(others), "median": statistics.median(others),
                                      "max": max(others)} if others else None
    out["elapsed_s"] = round(time.time() - t_start, 1)
    out["targets"] = {t.name: {"url": t.url, "pid": t.pid, "samples": t.samples, "info": t.info,
                               "errors": t.errors} for t in targets}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    for t in targets:
        for e in t.errors:
            say("ERROR [%s] %s" % (t.name, e))
    say("wrote %s in %.0fs" % (a.out, out["elapsed_s"]))
    return 3 if any(t.errors for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
