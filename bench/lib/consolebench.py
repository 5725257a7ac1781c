#!/usr/bin/env python3
"""The console's render benchmark (issue 13): every page at 10,000 repositories and 100,000
tags, timed from the client over loopback (what the server spends rendering plus one local
round trip), and each page's weight (HTML + the scripts and stylesheets it loads).

Population (through the registry API, in worker processes, with keep-alive connections):
repository `big/tags` with --big-tags tags, and --repos - 1 repositories `lab/rNNNNN` with
the rest of --tags between them. Each repository has its own config blob (so the bundle
check has one config per repository to read, as with real images); every --bundle-every-th
repository's first tag is an imgpkg bundle (its config carries `dev.carvel.imgpkg.bundle`).
Every tag names its own manifest (an annotation differs). One layer, mounted from a source
repository, is shared by all.

Pages are fetched signed in (console session cookie) as the admin user and, for the lists,
also as a user whose rule lets it pull `lab/*` only (the rights check runs per repository).
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from airbench import (  # noqa: E402  (the lean client and helpers of the main bench)
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Fail, Http, sha256_digest)

BUNDLE_LABEL = "dev.carvel.imgpkg.bundle"


def basic(user, password):
    import base64
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def manifest(cfg, layer, note):
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg[0], "size": cfg[1]},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer[0], "size": layer[1]}],
        "annotations": {"n": note}}, separators=(",", ":")).encode()


def config(repo, bundle):
    labels = {BUNDLE_LABEL: "true"} if bundle else {"repo": repo}
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                       "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def fill_repo(h, auth, repo, ntags, layer, bundle):
    r = h.request("POST", "/v2/%s/blobs/uploads/?mount=%s&from=src/layer" % (repo, layer[0]), headers=auth)
    r.need(201, what="mount into %s" % repo)
    cfgs = [config(repo, False)]
    if bundle:
        cfgs.insert(0, config(repo, True))
    digests = []
    for c in cfgs:
        d = sha256_digest(c)
        h.request("POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, d), body=c,
                  headers=dict(auth, **{"Content-Type": "application/octet-stream"})).need(201, what="config")
        digests.append((d, len(c)))
    for i in range(ntags):
        cfg = digests[0] if i == 0 else digests[-1]
        body = manifest(cfg, layer, "%s:%d" % (repo, i))
        h.request("PUT", "/v2/%s/manifests/v%05d" % (repo, i), body=body,
                  headers=dict(auth, **{"Content-Type": OCI_MANIFEST})).need(201, what="PUT %s" % repo)


def worker(port, auth, jobs, layer, wid, nw, q):
    h = Http(port)
    err = None
    try:
        for i in range(wid, len(jobs), nw):
            repo, ntags, bundle = jobs[i]
            fill_repo(h, auth, repo, ntags, layer, bundle)
    except Exception as e:  # reported to the parent
        err = "%s: %s" % (type(e).__name__, e)
    h.close()
    q.put(err)


def populate(a, auth):
    h = Http(a.port)
    layer_bytes = os.urandom(2048)
    ld = sha256_digest(layer_bytes)
    h.request("POST", "/v2/src/layer/blobs/uploads/?digest=%s" % ld, body=layer_bytes,
              headers=dict(auth, **{"Content-Type": "application/octet-stream"})).need(201, what="layer")
    h.close()
    layer = (ld, len(layer_bytes))
    small = a.repos - 1
    rest = a.tags - a.big_tags
    jobs = [("big/tags", a.big_tags, False)]
    for i in range(small):
        n = rest // small + (1 if i < rest % small else 0)
        jobs.append(("lab/r%05d" % i, n, a.bundle_every > 0 and i % a.bundle_every == 0))
    # The big repository goes first, alone in its worker's share, so it does not finish last.
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=worker, args=(a.port, auth, jobs, layer, w, a.workers, q), daemon=True)
             for w in range(a.workers)]
    for p in procs:
        p.start()
    errs = [e for e in (q.get() for _ in procs) if e]
    for p in procs:
        p.join(10)
    dt = time.perf_counter() - t0
    if errs:
        raise Fail("population: " + "; ".join(errs[:3]))
    print("populated %d repositories, %d tags in %.1f s (%.0f tags/s)" % (len(jobs), a.tags, dt, a.tags / dt),
          file=sys.stderr)
    return dt


def sign_in(port, user, password):
    """A console session: the sign-in form's cookie and CSRF token, then the POST."""
    h = Http(port)
    r = h.request("GET", "/ui/login").need(200, what="sign-in page")
    cookie = r.headers.get("set-cookie", "").split(";")[0]
    csrf = re.search(rb'name="_csrf" value="([^"]+)"', r.body).group(1).decode()
    form = urllib.parse.urlencode({"_csrf": csrf, "next": "/ui/", "user": user, "password": password}).encode()
    r = h.request("POST", "/ui/login", body=form, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}).need(303, what="sign in")
    return h, {"Cookie": r.headers.get("set-cookie", "").split(";")[0]}


def timed(h, cookie, path, reps):
    """(first, median, p95, max) in ms and the HTML bytes of `reps` GETs of `path`."""
    times, size, body = [], 0, b""
    for _ in range(reps):
        t0 = time.perf_counter()
        r = h.request("GET", path, headers=cookie).need(200, what="GET " + path)
        times.append((time.perf_counter() - t0) * 1000)
        size, body = len(r.body), r.body
    # The first GET may fill a cache (bundle checks, the usage report): reported alone; the
    # median and p95 are of the repetitions after it (nearest rank).
    s = sorted(times[1:] or times)
    p95 = s[max(0, -(-len(s) * 95 // 100) - 1)]
    return {"first_ms": round(times[0], 2), "median_ms": round(statistics.median(s), 2),
            "p95_ms": round(p95, 2), "max_ms": round(s[-1], 2), "html_bytes": size}, body


def asset_bytes(h, body, cache):
    total = 0
    for src in re.findall(rb'(?:src|href)="(/ui/static/[^"]+)"', body):
        p = src.decode()
        if p not in cache:
            cache[p] = len(h.request("GET", p).need(200, what=p).body)
        total += cache[p]
    return total


def pages(h, cookie, a):
    """The pages to time: every console page, at the first page, searched, and deep."""
    tmid = "v%05d" % (a.big_tags // 2)
    rmid = "lab/r%05d" % (a.repos // 2)
    r = h.request("GET", "/ui/repositories/big/tags?n=1&after=" + tmid, headers=cookie).need(200)
    digest = re.search(rb'/-/manifests/(sha256:[0-9a-f]{64})', r.body).group(1).decode()
    # lab/r00000's first tag is a bundle (not read from /ui/bundles: its first render is timed).
    r = h.request("GET", "/ui/repositories/lab/r00000?q=v00000", headers=cookie).need(200)
    m = re.search(rb'/-/manifests/(sha256:[0-9a-f]{64})', r.body)
    bundle = "/ui/repositories/lab/r00000/-/bundles/" + m.group(1).decode() if m else None
    out = [
        ("repositories, first page", "/ui/"),
        ("repositories, searched (\"r0999\")", "/ui/?q=r0999"),
        ("repositories, searched (\"lab/\": all)", "/ui/?q=lab/"),
        ("repositories, page after " + rmid, "/ui/?after=" + rmid),
        ("repository of %d tags" % (a.tags // a.repos), "/ui/repositories/lab/r%05d" % (a.repos * 3 // 7)),
        ("repository big/tags, first page", "/ui/repositories/big/tags"),
        ("repository big/tags, searched (\"v099\")", "/ui/repositories/big/tags?q=v099"),
        ("repository big/tags, page after " + tmid, "/ui/repositories/big/tags?after=" + tmid),
        ("manifest", "/ui/repositories/big/tags/-/manifests/" + digest),
        ("bundles, first page", "/ui/bundles"),
        ("bundles, page after " + rmid, "/ui/bundles?after=" + rmid),
        ("imports", "/ui/imports"),
        ("storage, by name", "/ui/storage"),
        ("storage, by size", "/ui/storage?sort=size"),
        ("storage, searched (\"r0999\")", "/ui/storage?q=r0999"),
        ("upload", "/ui/upload"),
    ]
    if bundle:
        out.insert(10, ("bundle", bundle))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin", required=True, help="user:password of an admin")
    ap.add_argument("--viewer", required=True, help="user:password of a user who may pull lab/* only")
    ap.add_argument("--repos", type=int, default=10000)
    ap.add_argument("--tags", type=int, default=100000)
    ap.add_argument("--big-tags", type=int, default=10000)
    ap.add_argument("--bundle-every", type=int, default=100)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--limit-ms", type=float, default=50.0)
    ap.add_argument("--limit-kb", type=float, default=150.0)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    admin = a.admin.split(":", 1)
    viewer = a.viewer.split(":", 1)
    pop_s = populate(a, basic(*admin))
    h, cookie = sign_in(a.port, *admin)
    hv, vcookie = sign_in(a.port, *viewer)
    assets = {}
    rows = []
    todo = pages(h, cookie, a)
    for who, hh, ck in (("admin", h, cookie), ("lab/* viewer", hv, vcookie)):
        for label, path in todo:
            if who != "admin" and not (path.startswith("/ui/?") or path == "/ui/" or path.startswith("/ui/bundles")):
                continue
            t, body = timed(hh, ck, path, a.reps)
            t.update({"page": label, "who": who, "path": path,
                      "asset_bytes": asset_bytes(hh, body, assets)})
            t["weight_bytes"] = t["html_bytes"] + t["asset_bytes"]
            t["ok"] = t["p95_ms"] < a.limit_ms and t["weight_bytes"] < a.limit_kb * 1024
            rows.append(t)
            print("%-52s %-12s first %7.1f  median %6.1f  p95 %6.1f ms  %7d B html + %d B assets%s" % (
                label, who, t["first_ms"], t["median_ms"], t["p95_ms"], t["html_bytes"], t["asset_bytes"],
                "" if t["ok"] else "  MISSED"), file=sys.stderr)
    with open(a.json, "w") as f:
        json.dump({"repos": a.repos, "tags": a.tags, "big_tags": a.big_tags, "populate_s": round(pop_s, 1),
                   "reps": a.reps, "pages": rows}, f, indent=1)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
