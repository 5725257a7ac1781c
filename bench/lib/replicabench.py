#!/usr/bin/env python3
"""replicabench: the database figures, the tag page and the report of bench/replica.sh
(python3 stdlib; PostgreSQL's own psql and pgbench for the database side).

bench/replica.sh runs airbench.py for the blob and manifest figures of four registries
(single: airdock on local disk; s3: airdock on S3 without a database; replica: airdock on
PostgreSQL + S3; distribution: Distribution 2.8 on S3), then this:

1. Catch-up rounds under load: wrk on the replica's manifest GET (64 connections), with the
   database's committed-transaction count (pg_stat_database) read before and after: rounds
   per request (each catch-up is one query, one transaction).
2. The database round trip itself, with pgbench on one connection, as the replica's read
   connection sends it: `SELECT 1`, and the catch-up query (nothing new: past the last row)
   in the simple protocol (as airdock sends it) and prepared.
3. The tag page at --tags tags: one repository populated in the single node, the replica and
   Distribution (as bench/s3.sh does, lib/s3bench.py: PUT by tag, bounded; Distribution's
   missing tags written into its bucket directly), then interleaved listings.
4. The Markdown report: the four side by side, ratios of the replica to each, the targets of
   issue 12, the load average.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

import airbench as ab
import s3bench
from report import cell, fmt, med

S, O, R, D = "single", "s3", "replica", "distribution"
NAMES = (S, O, R, D)
TITLES = {S: "airdock single node (local disk)", O: "airdock single node on S3",
          R: "airdock replica (PostgreSQL + S3)", D: "Distribution on S3"}
TAGGED = (S, R, D)
LOCK_CLASS = 0x61697264   # storage/src/meta/pg.rs: the class of airdock's advisory locks   # the tag page: the S3 node's metadata is the single node's, in memory


def say(*a):
    print(time.strftime("[replicabench %H:%M:%S]"), *a, file=sys.stderr, flush=True)


class Pg:
    def __init__(self, url, bindir):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.user = u.hostname, str(u.port), u.username
        self.db = u.path.lstrip("/")
        self.bin = bindir

    def psql(self, sql, db="postgres"):
        p = subprocess.run([os.path.join(self.bin, "psql"), "-h", self.host, "-p", self.port,
                            "-U", self.user, "-d", db, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        if p.returncode:
            raise ab.Fail("psql: %s" % p.stderr.strip())
        return p.stdout.strip()

    def psql_file(self, sql, db):
        """Run a script (too long for -c); its output."""
        p = subprocess.run([os.path.join(self.bin, "psql"), "-h", self.host, "-p", self.port,
                            "-U", self.user, "-d", db, "-v", "ON_ERROR_STOP=1", "-f", "-"],
                           input=sql, capture_output=True, text=True, timeout=600)
        if p.returncode:
            raise ab.Fail("psql: %s" % p.stderr.strip()[-500:])
        return p.stdout

    def commits(self):
        """Transactions committed in the replica's database so far. The statistics are
        flushed by each backend at most once a second: wait for that first."""
        time.sleep(1.5)
        return int(self.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = '%s'" % self.db))

    def pgbench(self, sql, mode, dur, defines=()):
        with open(os.path.join("/tmp", "replicabench-%d.sql" % os.getpid()), "w") as f:
            f.write(sql + "\n")
            path = f.name
        cmd = [os.path.join(self.bin, "pgbench"), "-n", "-c", "1", "-j", "1", "-T", str(dur), "-M", mode,
               "-h", self.host, "-p", self.port, "-U", self.user, "-f", path]
        for d in defines:
            cmd += ["-D", d]
        cmd.append(self.db)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60)
        finally:
            os.unlink(path)
        m = re.search(r"latency average = ([\d.]+) ms", p.stdout)
        if p.returncode or not m:
            raise ab.Fail("pgbench: %s %s" % (p.stdout[-300:], p.stderr[-300:]))
        return float(m.group(1)) * 1000   # µs


def top_up_replica(t, pg, want):
    """Commit, as rows of the replica's journal table, the tag ops of t000000..t<want-1> that
    its API did not reach: copies of the op that set t000000 with the tag's name changed, one
    row (one transaction) per tag as the API writes them, under the journal lock every commit
    takes. The replica applies them at its next catch-up, timed here by one GET /v2/.
    Returns (rows written, seconds to write, seconds of the replica's catch-up)."""
    h = t.http()
    _, have, _ = ab.whole_list(h, "/v2/%s/tags/list" % s3bench.REPO, "tags")
    present = set(have)
    missing = [i for i in range(want) if "t%06d" % i not in present]
    if not missing:
        h.close()
        return 0, 0.0, 0.0
    sql = """BEGIN;
SELECT pg_advisory_xact_lock(%d, 1);
WITH template AS (
  SELECT op FROM airdock_txns, jsonb_array_elements(body->'ops') AS op
  WHERE op->>'op' = 'tag' AND op->>'repo' = '%s' AND op->>'tag' = 't000000' LIMIT 1)
INSERT INTO airdock_txns (body)
SELECT jsonb_build_object('ops', jsonb_build_array(
         template.op || jsonb_build_object('tag', 't' || lpad(i::text, 6, '0'))))
FROM template, unnest('{%s}'::int[]) WITH ORDINALITY AS u(i, n) ORDER BY n;
COMMIT;
""" % (LOCK_CLASS, s3bench.REPO, ",".join(str(i) for i in missing))
    w0 = time.perf_counter()
    out = pg.psql_file(sql, pg.db)
    dt = time.perf_counter() - w0
    if "INSERT 0 %d" % len(missing) not in out:
        raise ab.Fail("top-up inserted not %d rows: %s" % (len(missing), out[-300:]))
    c0 = time.perf_counter()
    h.request("GET", "/v2/").need(200, 401, what="GET /v2/ (catch-up)")
    dc = time.perf_counter() - c0
    h.close()
    return len(missing), dt, dc


def rounds_under_load(t, pg, a):
    """wrk on the replica's manifest GET; (requests, catch-up rounds, server CPU s, pg CPU s)."""
    c0 = pg.commits()
    p0 = ab.proc_tree_cpu_s(a.pg_pid)
    d = ab.run_wrk(t, a, "%s/v2/bench/small/manifests/latest" % t.url, 2, 64,
                   extra=["-H", "Accept: " + ab.OCI_MANIFEST])
    p1 = ab.proc_tree_cpu_s(a.pg_pid)
    c1 = pg.commits()
    return {"requests": d["requests"], "rps": d["requests"] / d["seconds"], "rounds": c1 - c0,
            "server_cpu_s": d["server_cpu_s"], "pg_cpu_s": p1 - p0}


def round_trips(pg, a):
    applied = pg.psql("SELECT coalesce(max(seq), 0) FROM airdock_txns", db=pg.db)
    # As storage/src/meta/pg.rs's fetch_after sends it: the journal's floor and the rows past
    # the replica's position, in one statement.
    catchup = ("SELECT 0::bigint, pruned, NULL::text FROM airdock_floor UNION ALL (SELECT 1, seq, body::text "
               "FROM airdock_txns WHERE seq > :applied ORDER BY seq LIMIT 10000) ORDER BY 1, 2;")
    out = {"applied": int(applied)}
    runs = [("select1_simple_us", "SELECT 1;", "simple"),
            ("catchup_simple_us", catchup, "simple"),
            ("catchup_prepared_us", catchup, "prepared")]
    # Interleaved, the order reversed every other repetition: on a loaded machine the
    # scheduler's delays are most of a loopback round trip, and they drift.
    for rep in range(a.rt_reps):
        for key, sql, mode in (runs if rep % 2 == 0 else runs[::-1]):
            out.setdefault(key, []).append(pg.pgbench(sql, mode, a.rt_seconds, ["applied=" + applied]))
    return out


def helper_per_req(blob, name, helper, fig):
    t = blob["targets"][name]
    v = t["info"].get("helper_cpu_s", {}).get(helper, {}).get(fig, [])
    runs = t["info"].get(fig + "_runs", [])
    return med([c / r["requests"] * 1e6 for c, r in zip(v, runs) if r.get("requests")])


ROWS = [
    ("push_mono_MBps", "blob push, monolithic (POST + PUT), {mib} MiB", "MB/s", True),
    ("pull_MBps", "blob GET, {mib} MiB, through the registry", "MB/s", True),
    ("manifest_get_rps", "manifest GET by tag (wrk, {conns} conns, {dur} s)", "req/s", True),
    ("manifest_get_p99_ms", "  p99 latency", "ms", False),
    ("manifest_get_cpu_us_per_req", "  registry CPU", "CPU-µs/req", False),
    ("manifest_get_1_rps", "manifest GET by tag, one connection (wrk, {dur} s)", "req/s", True),
    ("manifest_get_1_p50_ms", "  median latency", "ms", False),
    ("manifest_put_rps", "manifest PUT, new manifest + new tag each (wrk, {put_conns} conns, {dur} s)", "req/s", True),
    ("manifest_put_p99_ms", "  p99 latency", "ms", False),
    ("manifest_put_cpu_us_per_req", "  registry CPU", "CPU-µs/req", False),
    ("tags_page_first_ms", "tags/list over {ntags} tags: first page n=100", "ms", False),
    ("tags_page_middle_ms", "  page n=100 after the middle tag", "ms", False),
    ("tags_whole_ms", "  whole list", "ms", False),
]

# (figure key, text, the other registry, minimum ratio replica/other, higher is better)
TARGETS = [
    ("manifest_get_rps", "manifest GET by tag, replica ≥ 10× Distribution on S3", D, 10.0, True),
    ("manifest_get_rps", "manifest GET by tag, replica ≥ 0.5× single node (local disk)", S, 0.5, True),
    ("manifest_get_rps", "manifest GET by tag, replica vs single node on S3 (no target)", O, None, True),
]


def report(a, blob, tags, db, meta):
    samples = {}
    for n in NAMES:
        s = dict(blob["targets"][n]["samples"]) if blob else {}
        s.update(tags["targets"].get(n, {}).get("samples", {}))
        if "manifest_get_1_runs" in (blob["targets"][n]["info"] if blob else {}):
            s["manifest_get_1_p50_ms"] = [r["p50_ms"] for r in blob["targets"][n]["info"]["manifest_get_1_runs"]]
        samples[n] = s
    args = blob["args"] if blob else {}
    counts = sorted(set(tags["targets"].get(n, {}).get("info", {}).get("entries", 0) for n in TAGGED))
    subst = {"mib": args.get("blob_mib", "?"), "conns": args.get("conns", "?"),
             "put_conns": args.get("put_conns", "?"), "dur": args.get("dur", "?"),
             "ntags": "{:,}".format(counts[0]) if len(counts) == 1 else
             " / ".join("{:,} ({})".format(tags["targets"].get(n, {}).get("info", {}).get("entries", 0), n)
                        for n in TAGGED)}

    def ratio(key, other, hib):
        x, y = med(samples[R].get(key, [])), med(samples[other].get(key, []))
        if not x or not y:
            return None
        return x / y if hib else y / x

    L = []
    w = L.append
    w("# airdock replica on PostgreSQL + S3 vs single node and Distribution")
    w("")
    w("<!-- generated by bench/replica.sh: do not edit by hand, rerun it -->")
    w("")
    w("Produced by `%s` on %s in %s s." % (meta["command"], meta["started"], meta["elapsed"]))
    w("")
    w("- airdock: %s; **single**: `serve --data-dir` (local disk, metadata journal in the data dir); "
      "**s3**: `--storage s3`, no database; **replica**: `--storage s3 --metadata-url postgres://…` "
      "(one replica: what each request pays for being one)" % meta["airdock"])
    w("- PostgreSQL: %s, started by the script (initdb into the run's temp dir, loopback TCP, trust "
      "auth, default durability: fsync on, synchronous commit)" % meta["postgres"])
    w("- baseline: %s, `s3` driver, `redirect: disable: true`, in-memory blob descriptor cache, "
      "access log off" % meta["distribution"])
    w("- S3 server: %s, `posix` backend, one process, a bucket per registry; data on `%s`" % (meta["s3"], meta["fs"]))
    w("- machine: %s CPUs (%s), %s GiB RAM, shared by the clients (python, wrk, pgbench), the four "
      "registries, PostgreSQL and the S3 server" % (meta["nproc"], meta["cpu"], meta["mem"]))
    w("- load average (1, 5, 15 min): %s at the start, %s at the end" % (meta["load_start"], meta["load_end"]))
    if blob:
        oth = blob.get("other_processes_cpu_pct") or {}
        w("- CPU used by processes other than the registries and the clients during the blob and "
          "manifest figures (PostgreSQL and the S3 server included): median %s %%, max %s %% of the "
          "machine" % (fmt(oth.get("median")), fmt(oth.get("max"))))
    w("")
    w("Each figure alternates the order of the four across repetitions (forward, backward). Cells: "
      "**median** (min, max, n). Ratios: the replica ÷ the other for rates, the other ÷ the replica "
      "for times (above 1: the replica better).")
    w("")
    w("| figure | unit | single | s3 | replica | Distribution | replica ÷ single | replica ÷ s3 | replica ÷ Distribution |")
    w("|---|---|---|---|---|---|---|---|---|")
    for key, label, unit, hib in ROWS:
        if not any(samples[n].get(key) for n in NAMES):
            continue
        rs = [ratio(key, o, hib) for o in (S, O, D)]
        w("| %s | %s | %s | %s |" % (
            label.format(**subst).replace("  ", "&nbsp;&nbsp;"), unit,
            " | ".join(cell(samples[n].get(key, [])) for n in NAMES),
            " | ".join("%s×" % fmt(r) if r is not None else "–" for r in rs)))
    w("")
    w("### The targets of issue 12")
    w("")
    w("| target | measured (median ratio) | met |")
    w("|---|---|---|")
    for key, text, other, lim, hib in TARGETS:
        r = ratio(key, other, hib)
        ok = "–" if lim is None or r is None else ("**yes**" if r >= lim else "**no**")
        w("| %s | %s | %s |" % (text, "%s×" % fmt(r) if r is not None else "not measured", ok))
    w("")
    w("### The database round trip")
    w("")
    w("pgbench, one connection, %s runs of %s s each, interleaved, against the replica's database (%s "
      "rows in the journal table), while the registries are idle: a query's wall time, client to "
      "server and back (pgbench's latency average). Cells: **median** (min, max, n)." % (
          a.rt_reps, a.rt_seconds, "{:,}".format(db["rt"].get("applied", 0))))
    w("")
    w("| query | µs per query |")
    w("|---|---|")
    for key, text in (("select1_simple_us", "`SELECT 1` (the bare round trip)"),
                      ("catchup_simple_us", "the catch-up (the journal's floor `UNION ALL` the rows `WHERE seq > $applied ORDER BY seq LIMIT 10000`), nothing new, simple protocol (as the replica sends it)"),
                      ("catchup_prepared_us", "the same, prepared")):
        w("| %s | %s |" % (text, cell(db["rt"].get(key, []))))
    w("")
    lo = db.get("load")
    if lo:
        w("Under load: wrk, 64 connections, %s s of manifest GET by tag on the replica: %s requests "
          "(%s req/s), %s catch-up rounds (transactions committed in its database meanwhile), so "
          "**%s requests share a round** on average; PostgreSQL's CPU %s µs and the replica's %s µs "
          "per request." % (a.dur, "{:,}".format(lo["requests"]), fmt(lo["rps"]), "{:,}".format(lo["rounds"]),
                            fmt(lo["requests"] / lo["rounds"]) if lo["rounds"] else "–",
                            fmt(lo["pg_cpu_s"] / lo["requests"] * 1e6) if lo["requests"] else "–",
                            fmt(lo["server_cpu_s"] / lo["requests"] * 1e6) if lo["requests"] and lo["server_cpu_s"] is not None else "–"))
        w("")
    if blob:
        w("Helper CPU per manifest request, median over the repetitions (µs of the S3 server / of "
          "PostgreSQL, including its backends, while each registry ran the figure):")
        w("")
        w("| figure | " + " | ".join(NAMES) + " |")
        w("|---|" + "---|" * len(NAMES))
        for fig in ("manifest_get", "manifest_get_1", "manifest_put"):
            w("| %s | %s |" % (fig.replace("_", " "), " | ".join(
                "%s / %s" % (fmt(helper_per_req(blob, n, "s3", fig)), fmt(helper_per_req(blob, n, "pg", fig)))
                for n in NAMES)))
        w("")
    w("### Tag population (setup of the tag page, plain PUT by tag, %d worker processes)" % tags["args"]["workers"])
    w("")
    w("airdock's single node's population through its API is bounded to %d s, the replica's to %d s, "
      "Distribution's to %d s; the rest is written directly: Distribution's as copies of the objects its "
      "driver wrote for its first tag into its bucket's directory (s3.sh's way), the replica's as rows of "
      "its journal table (what its API commits, one transaction per tag), which it applies at its next "
      "catch-up like any other replica's commits. Each then lists every tag from what it would have "
      "written itself." % (a.populate_seconds, a.replica_populate_seconds, a.dist_populate_seconds))
    w("")
    w("| registry | through the API | written directly | listed |")
    w("|---|---|---|---|")
    for n in TAGGED:
        i = tags["targets"].get(n, {}).get("info", {})
        p = i.get("populate_" + s3bench.REPO, {})
        top = i.get("top_up")
        w("| %s | %s of %s tags in %s s (%s/s; registry CPU %s s) | %s | %s |" % (
            n, "{:,}".format(p.get("tagged", 0)), "{:,}".format(p.get("wanted", 0)), fmt(p.get("seconds")),
            fmt(p.get("tags_per_s")), fmt(p.get("server_cpu_s")),
            ("{:,} in %s s (copies of a tag's objects it wrote)".format(top[0]) % fmt(top[1])) if top and n == D else
            ("{:,} rows in %s s (copies of the op that set its first tag, one row each, under the journal lock); "
             "the replica's catch-up applying them: %s s".format(top[0]) % (fmt(top[1]), fmt(top[2]))) if top else "–",
            "{:,}".format(i.get("entries", 0))))
    w("")
    errs = []
    for n in NAMES:
        if blob:
            errs += ["%s: %s" % (n, e) for e in blob["targets"][n]["errors"]]
        errs += ["%s: %s" % (n, e) for e in tags["targets"].get(n, {}).get("errors", [])]
    errs += db.get("errors", [])
    s3bench.write_errors(w, errs)
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--s3-pid", type=int, required=True)
    ap.add_argument("--pg-pid", type=int, required=True)
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--dist-bucket-dir", required=True)
    ap.add_argument("--airbench", help="airbench.py's JSON of the same run")
    ap.add_argument("--tags", type=int, default=100000)
    ap.add_argument("--populate-seconds", type=float, default=300)
    ap.add_argument("--dist-populate-seconds", type=float, default=30)
    ap.add_argument("--replica-populate-seconds", type=float, default=60,
                    help="bound of the replica's population through its API (the rest committed directly)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--list-reps", type=int, default=3)
    ap.add_argument("--list-iters", type=int, default=3)
    ap.add_argument("--list-seconds", type=float, default=180, help="no new listing repetition after this")
    ap.add_argument("--dur", type=int, default=5)
    ap.add_argument("--rt-reps", type=int, default=5, help="repetitions of each round-trip figure")
    ap.add_argument("--rt-seconds", type=int, default=2, help="seconds of each pgbench run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--meta", required=True)
    a = ap.parse_args()
    meta = json.loads(a.meta)
    targets = {t.name: t for t in (ab.Target(s) for s in a.target)}
    if set(targets) != set(NAMES):
        raise SystemExit("targets must be named %s" % ", ".join(NAMES))
    blob = None
    if a.airbench and os.path.exists(a.airbench):
        with open(a.airbench) as f:
            blob = json.load(f)
    pg = Pg(a.pg_url, a.pg_bin)
    db = {"errors": []}
    try:
        say("catch-up rounds under load")
        db["load"] = rounds_under_load(targets[R], pg, a)
        say("round trips")
        db["rt"] = round_trips(pg, a)
    except (ab.Fail, OSError, subprocess.SubprocessError, ValueError) as e:
        db["errors"].append("database figures: %s" % e)
        db.setdefault("rt", {})
    for n in TAGGED:
        t = targets[n]
        secs = {D: a.dist_populate_seconds, R: a.replica_populate_seconds}.get(n, a.populate_seconds)
        try:
            ab.populate_tags(t, argparse.Namespace(workers=a.workers, populate_seconds=secs), {}, s3bench.REPO, a.tags)
        except (ab.Fail, OSError) as e:
            t.errors.append("populate: %s" % e)
    dist = targets[D]
    if dist.info.get("populate_" + s3bench.REPO, {}).get("tagged", 0) < a.tags:
        try:
            n, dt = s3bench.top_up_distribution(a.dist_bucket_dir, s3bench.REPO, "t000000", a.tags)
            dist.info["top_up"] = (n, dt)
        except (ab.Fail, OSError) as e:
            dist.errors.append("top-up: %s" % e)
    rep_t = targets[R]
    if rep_t.info.get("populate_" + s3bench.REPO, {}).get("tagged", 0) < a.tags:
        try:
            rep_t.info["top_up"] = top_up_replica(rep_t, pg, a.tags)
            say("replica: %d tags committed into its table directly in %.1fs, caught up in %.1fs" % rep_t.info["top_up"])
        except (ab.Fail, OSError, subprocess.SubprocessError) as e:
            rep_t.errors.append("top-up: %s" % e)
    l0 = time.time()
    for rep in range(a.list_reps):
        if rep and time.time() - l0 > a.list_seconds:
            say("listing budget of %.0f s spent after %d repetitions" % (a.list_seconds, rep))
            break
        for n in (TAGGED if rep % 2 == 0 else TAGGED[::-1]):
            t = targets[n]
            say("list rep %d %s" % (rep + 1, n))
            try:
                wl, cnt, pages, first, middle = s3bench.list_rep(t, a.list_iters)
                t.info["entries"], t.info["pages_whole"] = cnt, pages
                if cnt < a.tags and rep == 0:
                    t.errors.append("listed %d tags, wanted %d" % (cnt, a.tags))
                t.add("tags_whole_ms", wl)
                t.add("tags_page_first_ms", med(first))
                t.add("tags_page_middle_ms", med(middle))
            except (ab.Fail, OSError, ValueError) as e:
                t.errors.append("list rep %d: %s" % (rep + 1, e))
    tags = {"args": vars(a), "targets": {n: {"samples": t.samples, "info": t.info, "errors": t.errors}
                                         for n, t in targets.items()}}
    with open("/proc/loadavg") as f:
        meta["load_end"] = " ".join(f.read().split()[:3])
    meta["elapsed"] = round(time.time() - meta["t0"])
    with open(a.json, "w") as f:
        json.dump({"airbench": blob, "tags": tags, "db": db, "meta": meta}, f, indent=1)
    with open(a.out, "w") as f:
        f.write(report(a, blob, tags, db, meta) + "\n")
    say("wrote %s (raw %s)" % (a.out, a.json))
    bad = db["errors"] or any(t.errors for t in targets.values()) or (
        blob and any(blob["targets"][n]["errors"] for n in NAMES))
    return 3 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
