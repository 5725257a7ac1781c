#!/usr/bin/env python3
"""What TLS and authentication cost on the manifest GET path (driven by bench/secure.sh).

    secure.py --target NAME=URL@PID[,basic|bearer|none] ... --cacert CA --user U --password P
              --out RESULTS.md [--reps 4] [--dur 8] [--conns 64]

For each target: one image is pushed (with the target's credentials), then `--reps`
interleaved repetitions (A,B,C... then ...,C,B,A) of wrk GET by tag, `--conns` keep-alive
connections for `--dur` seconds. `basic` sends the user's Basic credentials on every request
(what clients do against an htpasswd registry); `bearer` first gets a token from the
registry's token endpoint (the Docker token flow) and sends it on every request. TLS targets
are https:// URLs verified against --cacert. Server CPU from /proc/PID/stat.
"""
import argparse
import base64
import hashlib
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from airbench import Fail, parse_wrk, proc_cpu_s, loadavg  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Target:
    def __init__(self, spec, a):
        name, _, rest = spec.partition("=")
        rest, _, mode = rest.partition(",")
        url, _, pid = rest.rpartition("@")
        u = urllib.parse.urlsplit(url)
        if u.hostname != "127.0.0.1" or not pid:
            raise SystemExit("--target NAME=http[s]://127.0.0.1:PORT@PID[,mode], got %r" % spec)
        self.name, self.url, self.pid, self.mode = name, url.rstrip("/"), int(pid), mode or "none"
        self.ctx = ssl.create_default_context(cafile=a.cacert) if u.scheme == "https" else None
        self.basic = "Basic " + base64.b64encode(("%s:%s" % (a.user, a.password)).encode()).decode()
        self.auth = None if self.mode == "none" else self.basic
        self.runs = []

    def request(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.auth:
            h["Authorization"] = self.auth
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def login(self):
        """For `bearer`: follow the challenge of /v2/ to the token endpoint, as docker does."""
        if self.mode != "bearer":
            return
        self.auth = None
        st, h, _ = self.request("GET", "/v2/")
        ch = h.get("WWW-Authenticate") or ""
        if st != 401 or not ch.startswith("Bearer "):
            raise Fail("%s: /v2/ gave %d %r, not a Bearer challenge" % (self.name, st, ch))
        params = dict(p.split("=", 1) for p in ch[len("Bearer "):].split(","))
        params = {k.strip(): v.strip().strip('"') for k, v in params.items()}
        q = urllib.parse.urlencode({"service": params.get("service", ""),
                                    "scope": "repository:bench/secure:pull,push"})
        req = urllib.request.Request(params["realm"] + "?" + q, headers={"Authorization": self.basic})
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            tok = json.loads(r.read())
        self.auth = "Bearer " + (tok.get("token") or tok["access_token"])

    def tls_version(self):
        if not self.ctx:
            return "–"
        u = urllib.parse.urlsplit(self.url)
        import socket
        with socket.create_connection((u.hostname, u.port)) as raw:
            with self.ctx.wrap_socket(raw, server_hostname=u.hostname) as tls:
                return "%s %s" % (tls.version(), tls.cipher()[0])

    def seed(self):
        cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        layer = os.urandom(1024)
        descs = []
        for data, mt in ((cfg, "application/vnd.oci.image.config.v1+json"),
                         (layer, "application/vnd.oci.image.layer.v1.tar+gzip")):
            dg = "sha256:" + hashlib.sha256(data).hexdigest()
            st, h, b = self.request("POST", "/v2/bench/secure/blobs/uploads/")
            loc = h.get("Location")
            if st != 202 or not loc:
                raise Fail("%s: upload POST gave %d %s" % (self.name, st, b[:200]))
            u = urllib.parse.urlsplit(loc)
            path = u.path + "?" + (u.query + "&" if u.query else "") + "digest=" + dg
            st, _, b = self.request("PUT", path, data, {"Content-Type": "application/octet-stream"})
            if st != 201:
                raise Fail("%s: blob PUT gave %d %s" % (self.name, st, b[:200]))
            descs.append({"mediaType": mt, "digest": dg, "size": len(data)})
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descs[0],
                        "layers": descs[1:]}).encode()
        st, _, b = self.request("PUT", "/v2/bench/secure/manifests/latest", m, {"Content-Type": OCI_MANIFEST})
        if st != 201:
            raise Fail("%s: manifest PUT gave %d %s" % (self.name, st, b[:200]))
        st, _, got = self.request("GET", "/v2/bench/secure/manifests/latest", None, {"Accept": OCI_MANIFEST})
        if st != 200 or got != m:
            raise Fail("%s: manifest GET check gave %d" % (self.name, st))

    def wrk(self, a):
        cmd = ["wrk", "-t%d" % a.threads, "-c%d" % a.conns, "-d%ds" % a.dur, "--latency", "--timeout", "10s",
               "-H", "Accept: " + OCI_MANIFEST]
        if self.auth:
            cmd += ["-H", "Authorization: " + self.auth]
        cmd.append(self.url + "/v2/bench/secure/manifests/latest")
        c0 = proc_cpu_s(self.pid)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.dur + 60)
        c1 = proc_cpu_s(self.pid)
        if p.returncode:
            raise Fail("%s: wrk exit %d: %s" % (self.name, p.returncode, p.stderr[-300:]))
        d = parse_wrk(p.stdout)
        if d["bad_status"] or d["socket_errors"]:
            raise Fail("%s: wrk saw %d non-2xx and %d socket errors" % (self.name, d["bad_status"], d["socket_errors"]))
        d["rps"] = d["requests"] / d["seconds"]
        d["cpu_us_per_req"] = (c1 - c0) / d["requests"] * 1e6 if d["requests"] else None
        self.runs.append(d)


def fmt(v, nd=0):
    return "–" if v is None else ("{:,.%df}" % nd).format(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--cacert", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--dur", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--header", default="", help="text put above the table")
    a = ap.parse_args()
    targets = [Target(s, a) for s in a.target]
    load0 = loadavg()
    for t in targets:
        t.login()
        t.seed()
        t.tls = t.tls_version()
    for rep in range(a.reps):
        for t in (targets if rep % 2 == 0 else targets[::-1]):
            print(time.strftime("[secure %H:%M:%S]"), "rep", rep + 1, t.name, file=sys.stderr, flush=True)
            t.wrk(a)
    rows = []
    base = {}
    for t in targets:
        med = {k: statistics.median(r[k] for r in t.runs) for k in ("rps", "p99_ms", "cpu_us_per_req")}
        family = t.name.split()[0]
        base.setdefault(family, med)
        rel = med["rps"] / base[family]["rps"]
        rows.append("| %s | %s | %s (min %s, max %s) | %s | %s | %.2f× |" % (
            t.name, t.tls, fmt(med["rps"]), fmt(min(r["rps"] for r in t.runs)), fmt(max(r["rps"] for r in t.runs)),
            fmt(med["p99_ms"], 2), fmt(med["cpu_us_per_req"], 1), rel))
    with open(a.out, "w") as f:
        f.write(a.header)
        f.write("\nLoad average %.2f at the start, %.2f at the end; %d repetitions of %d s, %d connections, "
                "cells are medians.\n\n" % (load0, loadavg(), a.reps, a.dur, a.conns))
        f.write("| server | TLS (as Python's OpenSSL negotiates it) | manifest GET req/s | p99 ms | server CPU µs/req | req/s vs the same server plain |\n")
        f.write("|---|---|---|---|---|---|\n")
        f.write("\n".join(rows) + "\n")
    print(open(a.out).read())


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print("secure.py: %s" % e, file=sys.stderr)
        sys.exit(1)
