#!/usr/bin/env python3
"""s3bench: the tag-page figure and the report of bench/s3.sh (python3 stdlib).

bench/s3.sh runs airbench.py for the blob and manifest figures, then this:

    s3bench.py --target airdock=http://127.0.0.1:PORT@PID --target distribution=...@PID \
               --s3-pid PID --dist-bucket-dir DIR --airbench RUN.json --out RESULTS.md ...

1. Populates one repository with --tags tags in each registry, one registry at a time, by
   plain PUT by tag (the same manifest, --workers processes; airbench.populate_tags), each
   bounded to --populate-seconds.
2. If Distribution did not reach --tags in that time, tops its repository up to --tags by
   writing, straight into its bucket's directory on the S3 server (versitygw's posix
   backend: one file per object, metadata in xattrs), the objects its driver writes for a tag
   (`_manifests/tags/<tag>/current/link` and `.../index/sha256/<hex>/link`), copied byte for
   byte and xattr for xattr from a tag it wrote itself. The report says how many tags each
   way. Its tag listing reads exactly those objects, so the page it serves is the one it
   would serve had it written them all.
3. Checks that each registry lists every tag, then measures, interleaved over --list-reps
   repetitions: the first page n=100, the page n=100 after the middle tag, the whole list.
4. Writes the Markdown results (both runs' figures, ratios, the targets of issue 11) and the
   raw JSON beside it.
Server and S3-server CPU from /proc/PID/stat. Loopback only.
"""
import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import urllib.parse

import airbench as ab
from report import cell, fmt, med

A, D = "airdock", "distribution"
REPO = "tags/big"


def say(*a):
    print(time.strftime("[s3bench %H:%M:%S]"), *a, file=sys.stderr, flush=True)


def xattrs_of(path):
    return [(k, os.getxattr(path, k, follow_symlinks=False)) for k in os.listxattr(path, follow_symlinks=False)]


def _write_tags(job):
    """Worker: make the tag directories of job's tags from the template."""
    tags_dir, template, tags = job
    for tag in tags:
        for rel, content, xattrs in template:   # top-down: parents before children
            d = os.path.join(tags_dir, tag, rel) if rel != "." else os.path.join(tags_dir, tag)
            if content is None:
                os.mkdir(d)
            else:
                with open(d, "wb") as f:
                    f.write(content)
            for k, v in xattrs:
                os.setxattr(d, k, v, follow_symlinks=False)
    return len(tags)


def top_up_distribution(bucket_dir, repo, have_tag, want, workers=4):
    """Write the tag objects of t000000..t<want-1> that are missing, as copies of have_tag's
    (content and xattrs). Returns (tags written, seconds)."""
    tags_dir = os.path.join(bucket_dir, "docker/registry/v2/repositories", repo, "_manifests/tags")
    src = os.path.join(tags_dir, have_tag)
    if not os.path.isdir(src):
        raise ab.Fail("no %s in Distribution's bucket (%s): cannot copy its layout" % (have_tag, src))
    template = []   # (relative path, bytes or None for a directory, xattrs), parents first
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        template.append((os.path.relpath(dirpath, src), None, xattrs_of(dirpath)))
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                template.append((os.path.relpath(p, src), fh.read(), xattrs_of(p)))
    present = set(os.listdir(tags_dir))
    missing = [t for t in ("t%06d" % i for i in range(want)) if t not in present]
    w0 = time.perf_counter()
    step = 2000
    jobs = [(tags_dir, template, missing[i:i + step]) for i in range(0, len(missing), step)]
    with mp.get_context("fork").Pool(workers) as pool:
        n = sum(pool.imap_unordered(_write_tags, jobs))
    return n, time.perf_counter() - w0


def list_rep(t, it):
    """One repetition of the tag-page figures for t: each page is the median of `it` tries,
    or of one when the whole list took over 5 s (Distribution on S3 lists every tag object
    for every page)."""
    h = t.http()
    base = "/v2/%s/tags/list" % REPO
    wl, items, pages = ab.whole_list(h, base, "tags")
    if wl > 5000:
        it = 1
    mid = sorted(items)[len(items) // 2] if items else ""
    first, middle = [], []
    for _ in range(it):
        dt, got, _ = ab.timed_get(h, base + "?n=100", "tags")
        first.append(dt)
        t.info["first_page_entries"] = len(got)
    for _ in range(it):
        dt, got, _ = ab.timed_get(h, base + "?n=100&last=" + urllib.parse.quote(mid, safe=""), "tags")
        middle.append(dt)
        t.info["middle_page_entries"] = len(got)
    h.close()
    return wl, len(items), pages, first, middle


ROWS = [
    ("push_mono_MBps", "blob push, monolithic (POST + PUT), {mib} MiB", "MB/s", True),
    ("push_mono_cpu_s_per_GiB", "  registry CPU", "CPU-s/GiB", False),
    ("push_chunked_MBps", "blob push, chunked (PATCH × {chunk} MiB), {mib} MiB", "MB/s", True),
    ("push_chunked_cpu_s_per_GiB", "  registry CPU", "CPU-s/GiB", False),
    ("pull_MBps", "blob GET, {mib} MiB, through the registry", "MB/s", True),
    ("pull_cpu_s_per_GiB", "  registry CPU", "CPU-s/GiB", False),
    ("manifest_get_rps", "manifest GET by tag (wrk, {conns} conns, {dur} s)", "req/s", True),
    ("manifest_get_p99_ms", "  p99 latency", "ms", False),
    ("manifest_get_cpu_us_per_req", "  registry CPU", "CPU-µs/req", False),
    ("manifest_put_rps", "manifest PUT, new manifest + new tag each (wrk, {put_conns} conns, {dur} s)", "req/s", True),
    ("manifest_put_p99_ms", "  p99 latency", "ms", False),
    ("manifest_put_cpu_us_per_req", "  registry CPU", "CPU-µs/req", False),
    ("tags_page_first_ms", "tags/list over {ntags} tags: first page n=100", "ms", False),
    ("tags_page_middle_ms", "  page n=100 after the middle tag", "ms", False),
    ("tags_whole_ms", "  whole list (one request without n, or following Link)", "ms", False),
]

# figure key -> (target text, minimum ratio airdock/Distribution, higher is better)
TARGETS = [
    ("push_mono_MBps", "blob push, monolithic ≥ 2×", 2.0, True),
    ("push_chunked_MBps", "blob push, 16 MiB chunks ≥ 2×", 2.0, True),
    ("pull_MBps", "blob GET ≥ 1×", 1.0, True),
    ("manifest_get_rps", "manifest GET ≥ 10×", 10.0, True),
    ("manifest_put_rps", "manifest PUT (no target; reported)", None, True),
    ("tags_page_first_ms", "tag page at {ntags} tags ≥ 100× (first page n=100)", 100.0, False),
    ("tags_page_middle_ms", "tag page at {ntags} tags ≥ 100× (page after the middle)", 100.0, False),
]


def helper_cpu(blob, name, fig):
    """Median S3-server CPU of one registry's runs of fig: per GiB (blob figures) or in µs per
    request (load figures)."""
    t = blob["targets"][name]
    v = t["info"].get("helper_cpu_s", {}).get("s3", {}).get(fig, [])
    if not v:
        return None
    if fig.startswith("manifest_"):
        runs = t["info"].get(fig + "_runs", [])
        per = [c / r["requests"] * 1e6 for c, r in zip(v, runs) if r.get("requests")]
        return med(per)
    return med([c / (blob["args"]["blob_mib"] / 1024) for c in v])


def ntags(tags):
    c = [tags["targets"][n]["info"].get("entries", 0) for n in (A, D)]
    return "{:,}".format(c[0]) if c[0] == c[1] else "{:,} (airdock) / {:,} (Distribution)".format(*c)


def write_errors(w, errs):
    """The report's list of errors (nothing when there are none), through the line writer w."""
    if errs:
        w("Errors:")
        w("")
        for e in errs:
            w("- %s" % e)
        w("")


def report(a, blob, tags, meta):
    samples = {}
    for name in (A, D):
        s = dict(blob["targets"][name]["samples"]) if blob else {}
        s.update(tags["targets"][name]["samples"])
        samples[name] = s
    args = blob["args"] if blob else {}
    subst = {"mib": args.get("blob_mib", "?"), "chunk": args.get("chunk_mib", "?"),
             "conns": args.get("conns", "?"), "put_conns": args.get("put_conns", "?"),
             "dur": args.get("dur", "?"),
             "ntags": ntags(tags)}

    def ratio(key, hib):
        x, y = med(samples[A].get(key, [])), med(samples[D].get(key, []))
        if x is None or y is None or not x or not y:
            return None
        return x / y if hib else y / x

    L = []
    w = L.append
    w("# airdock vs Distribution, both on S3 (versitygw)")
    w("")
    w("<!-- generated by bench/s3.sh: do not edit by hand, rerun it -->")
    w("")
    w("Produced by `%s` on %s in %s s." % (meta["command"], meta["started"], meta["elapsed"]))
    w("")
    w("- airdock: %s, `--storage s3` (blobs in bucket `airdock`, metadata journal in its data dir)" % meta["airdock"])
    w("- baseline: %s (CNCF Distribution, Debian `docker-registry`), `s3` driver (bucket `distribution`, "
      "path style, v4 auth, default 10 MiB parts), `redirect: disable: true` so blob GETs go through "
      "it as airdock's do by default, in-memory blob descriptor cache, log level warn, access log off"
      % meta["distribution"])
    w("- S3 server: %s, `posix` backend, one process for both registries (one bucket each), data on `%s`"
      % (meta["s3"], meta["fs"]))
    w("- machine: %s CPUs (%s), %s GiB RAM; clients (python, wrk), both registries and the S3 server "
      "share these cores" % (meta["nproc"], meta["cpu"], meta["mem"]))
    w("- load average (1, 5, 15 min): %s at the start, %s at the end" % (meta["load_start"], meta["load_end"]))
    if blob:
        oth = blob.get("other_processes_cpu_pct") or {}
        w("- CPU used by processes other than the registries and the clients during the blob and manifest "
          "figures (this includes the S3 server): median %s %%, max %s %% of the machine" % (
              fmt(oth.get("median")), fmt(oth.get("max"))))
        if blob.get("skipped"):
            w("- skipped past the deadline: %s" % ", ".join(blob["skipped"]))
    w("")
    w("Each figure alternates the order airdock, Distribution / Distribution, airdock across "
      "repetitions. Cells: **median** (min, max, n). MB = 10^6 bytes. Ratios are airdock ÷ "
      "Distribution for rates and Distribution ÷ airdock for times (above 1: airdock better).")
    w("")
    w("| figure | unit | airdock | Distribution | ratio |")
    w("|---|---|---|---|---|")
    for key, label, unit, hib in ROWS:
        if not samples[A].get(key) and not samples[D].get(key):
            continue
        r = ratio(key, hib)
        w("| %s | %s | %s | %s | %s |" % (label.format(**subst).replace("  ", "&nbsp;&nbsp;"), unit,
                                          cell(samples[A].get(key, [])), cell(samples[D].get(key, [])),
                                          "%s×" % fmt(r) if r is not None else "–"))
    w("")
    w("### S3 server CPU per figure")
    w("")
    w("CPU of the versitygw process while each registry ran the figure (the S3 work that registry "
      "caused), beside the registry's own; median over the repetitions.")
    w("")
    w("| figure | unit | S3 server, airdock's run | S3 server, Distribution's run | airdock | Distribution |")
    w("|---|---|---|---|---|---|")
    for fig, label, unit, own in (("push_mono", "blob push, monolithic", "CPU-s/GiB", "push_mono_cpu_s_per_GiB"),
                                  ("push_chunked", "blob push, chunked", "CPU-s/GiB", "push_chunked_cpu_s_per_GiB"),
                                  ("pull", "blob GET", "CPU-s/GiB", "pull_cpu_s_per_GiB"),
                                  ("manifest_get", "manifest GET", "CPU-µs/req", "manifest_get_cpu_us_per_req"),
                                  ("manifest_put", "manifest PUT", "CPU-µs/req", "manifest_put_cpu_us_per_req")):
        cells = [helper_cpu(blob, n, fig) for n in (A, D)] if blob else [None, None]
        w("| %s | %s | %s | %s | %s | %s |" % (label, unit, fmt(cells[0]), fmt(cells[1]),
                                              fmt(med(samples[A].get(own, []))), fmt(med(samples[D].get(own, [])))))
    w("")
    w("### CPU by phase")
    w("")
    w("| phase | S3 server CPU-s | airdock CPU-s | Distribution CPU-s |")
    w("|---|---|---|---|")
    for row in meta.get("cpu_phases", []):
        w("| %s | %s | %s | %s |" % (row[0], fmt(row[1]), fmt(row[2]), fmt(row[3])))
    w("")
    w("### The targets of issue 11")
    w("")
    w("| target | measured (median ratio) | met |")
    w("|---|---|---|")
    for key, text, lim, hib in TARGETS:
        r = ratio(key, hib)
        ok = "–" if lim is None or r is None else ("**yes**" if r >= lim else "**no**")
        w("| %s | %s | %s |" % (text.format(**subst), "%s×" % fmt(r) if r is not None else "not measured", ok))
    w("")
    w("### Tag population (setup of the tag page, plain PUT by tag, %d worker processes)"
      % tags["args"]["workers"])
    w("")
    w("airdock's population through its API is bounded to %d s (its tags live in its metadata "
      "journal, which only its API writes); Distribution's to %d s, which measures its rate, and the "
      "tags it did not reach are then written straight into its bucket's directory as copies "
      "(content and xattrs) of the objects it wrote for its first tag: its tag listing reads "
      "exactly those objects, so it lists them as it would had it written them itself."
      % (tags["args"]["populate_seconds"], tags["args"]["dist_populate_seconds"]))
    w("")
    w("| registry | through the API | written into its bucket directly | listed (requests for the whole list; tags on the first / middle page n=100) |")
    w("|---|---|---|---|")
    for name in (A, D):
        i = tags["targets"][name]["info"]
        p = i.get("populate_" + REPO, {})
        top = i.get("top_up")
        w("| %s | %s of %s tags in %s s (%s/s; registry CPU %s s) | %s | %s |" % (
            name, "{:,}".format(p.get("tagged", 0)), "{:,}".format(p.get("wanted", 0)), fmt(p.get("seconds")),
            fmt(p.get("tags_per_s")), fmt(p.get("server_cpu_s")),
            ("{:,} tags in %s s (copies of a tag's objects it wrote, with their xattrs)".format(top[0]) % fmt(top[1]))
            if top else "–",
            "{:,} ({} request(s) for the whole list; pages n=100 gave {} / {} tags)".format(i.get("entries", 0), i.get("pages_whole", "–"),
                                          i.get("first_page_entries", "–"), i.get("middle_page_entries", "–"))))
    w("")
    errs = []
    for name in (A, D):
        for src in (blob, tags):
            if src:
                errs += ["%s: %s" % (name, e) for e in src["targets"][name]["errors"]]
    write_errors(w, errs)
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--s3-pid", type=int, required=True)
    ap.add_argument("--dist-bucket-dir", required=True)
    ap.add_argument("--airbench", help="airbench.py's JSON of the same run (blob and manifest figures)")
    ap.add_argument("--tags", type=int, default=100000)
    ap.add_argument("--populate-seconds", type=float, default=300, help="bound of airdock's population")
    ap.add_argument("--dist-populate-seconds", type=float, default=60,
                    help="bound of Distribution's population through its API (the rest is written directly)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--list-reps", type=int, default=3)
    ap.add_argument("--list-iters", type=int, default=3)
    ap.add_argument("--list-seconds", type=float, default=240, help="no new listing repetition after this")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--meta", required=True, help="JSON of the run's details from s3.sh")
    a = ap.parse_args()
    meta = json.loads(a.meta)
    targets = {t.name: t for t in (ab.Target(s) for s in a.target)}
    out = {"args": vars(a), "targets": {}}
    s3cpu = lambda: ab.proc_cpu_s(a.s3_pid)  # noqa: E731
    phases = meta.setdefault("cpu_phases", [])
    blob = None
    if a.airbench and os.path.exists(a.airbench):
        with open(a.airbench) as f:
            blob = json.load(f)
        if "s3_cpu_blob" in meta:
            phases.append(["blob and manifest figures (both registries)", meta["s3_cpu_blob"],
                           blob["targets"][A]["info"].get("cpu_s_total"),
                           blob["targets"][D]["info"].get("cpu_s_total")])

    for name in (A, D):
        t = targets[name]
        c0, r0 = s3cpu(), t.cpu()
        secs = a.populate_seconds if name == A else a.dist_populate_seconds
        try:
            ab.populate_tags(t, argparse.Namespace(workers=a.workers, populate_seconds=secs), {}, REPO, a.tags)
        except (ab.Fail, OSError) as e:
            t.errors.append("populate: %s" % e)
        row = ["tag population through the API: " + name, None, None, None]
        row[1] = s3cpu() - c0
        row[2 if name == A else 3] = t.cpu() - r0
        phases.append(row)
    dist = targets[D]
    have = dist.info.get("populate_" + REPO, {}).get("tagged", 0)
    if have < a.tags:
        try:
            n, dt = top_up_distribution(a.dist_bucket_dir, REPO, "t000000", a.tags)
            dist.info["top_up"] = (n, dt)
            say("distribution: %d tags written into its bucket directly in %.1fs" % (n, dt))
        except (ab.Fail, OSError) as e:
            dist.errors.append("top-up: %s" % e)
    l0 = time.time()
    done_reps = 0
    for rep in range(a.list_reps):
        if rep and time.time() - l0 > a.list_seconds:
            say("listing budget of %.0f s spent after %d repetitions" % (a.list_seconds, rep))
            break
        done_reps += 1
        for name in ((A, D) if rep % 2 == 0 else (D, A)):
            t = targets[name]
            say("list rep %d %s" % (rep + 1, name))
            c0, r0 = s3cpu(), t.cpu()
            try:
                wl, n, pages, first, middle = list_rep(t, a.list_iters)
                t.info["entries"], t.info["pages_whole"] = n, pages
                if n < a.tags and rep == 0:   # measured all the same, at the count it has
                    t.errors.append("listed %d tags, wanted %d" % (n, a.tags))
                t.add("tags_whole_ms", wl)
                t.add("tags_page_first_ms", statistics.median(first))
                t.add("tags_page_middle_ms", statistics.median(middle))
            except (ab.Fail, OSError, ValueError) as e:
                t.errors.append("list rep %d: %s" % (rep + 1, e))
                say("ERROR list %s: %s" % (name, e))
            t.info.setdefault("list_cpu", []).append((s3cpu() - c0, t.cpu() - r0))
    for name in (A, D):
        lc = targets[name].info.get("list_cpu", [])
        row = ["tag listings (%d reps): %s" % (done_reps, name), sum(x[0] for x in lc), None, None]
        row[2 if name == A else 3] = sum(x[1] for x in lc)
        phases.append(row)
    out["targets"] = {n: {"samples": t.samples, "info": t.info, "errors": t.errors} for n, t in targets.items()}
    with open("/proc/loadavg") as f:
        meta["load_end"] = " ".join(f.read().split()[:3])
    meta["elapsed"] = round(time.time() - meta["t0"])
    out["meta"] = meta
    with open(a.json, "w") as f:
        json.dump({"airbench": blob, "tags": out}, f, indent=1)
    with open(a.out, "w") as f:
        f.write(report(a, blob, out, meta) + "\n")
    say("wrote %s (raw %s)" % (a.out, a.json))
    return 3 if any(t.errors for t in targets.values()) or (blob and any(
        blob["targets"][n]["errors"] for n in (A, D))) else 0


if __name__ == "__main__":
    sys.exit(main())
