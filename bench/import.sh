#!/bin/bash
# bench/import.sh [--bin PATH] [--gib LIST] [--layer-mib N] [--reps N] [--out FILE]
#                 [--data-root DIR] [--wait-quiet SECONDS] [--profile]
#
# Issue 3 item 6: airdock's imgpkg tar import against the seed's path, side by side.
# 1. Builds the bundle tars with imgpkg itself: random (incompressible) single-layer images
#    and a bundle listing them are pushed with `imgpkg push` into a throw-away airdock, then
#    `imgpkg copy -b … --to-tar` writes one tar per size. The throw-away server is then gone.
# 2. For each size, repeated and interleaved (A,B then B,A …), each run on a fresh data dir:
#    (a) airdock: `curl -T bundle.tar` to /admin/v1/import with the token from the data dir;
#        the server's VmRSS is sampled every 20 ms during the import, VmHWM read after it;
#    (b) the seed's path: `imgpkg copy --tar bundle.tar --to-repo 127.0.0.1:PORT/lib/app`
#        into Debian's docker-registry (CNCF Distribution 2.8), filesystem storage.
# 3. Writes a markdown report (machine, load, command, table, targets of issue 3).
#
#   --bin PATH      airdock binary (default target/x86_64-unknown-linux-gnu/release/airdock; this script builds nothing)
#   --gib LIST      tar sizes in GiB, comma separated (default 1,2.1: at least 2 GiB)
#   --layer-mib N   size of each image's random layer (default 32, so 2.1 GiB = 68 images)
#   --reps N        repetitions per size and system (default 3)
#   --out FILE      the report (default target/bench/import-results.md)
#   --data-root DIR where the temp dir is made (default /var/tmp); removed at exit
#   --wait-quiet S  after making the tars, wait up to S seconds for the 1-minute load
#                   average to drop below 1.0 before measuring (default 0: do not wait)
#   --profile       afterwards, one more airdock import of the largest tar under
#                   `perf record -g`; the top of `perf report` goes into the report
# Needs python3 curl docker-registry openssl (Debian: apt-get install -y python3 curl
# docker-registry openssl; linux-perf for --profile) and imgpkg 0.43.1 on PATH or in
# target/tools/bin (scripts/install-clients.sh). Listens on 127.0.0.1 only; every process
# it starts is stopped by PID at exit and the temp dir is removed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CMDLINE="bench/import.sh${*:+ $*}"
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock GIB=1,2.1 LAYER_MIB=32 REPS=3 OUT=$ROOT/target/bench/import-results.md
DATA_ROOT=/var/tmp PROFILE=0 WAITQ=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2;;
    --gib) GIB=$2; shift 2;;
    --layer-mib) LAYER_MIB=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --data-root) DATA_ROOT=$2; shift 2;;
    --wait-quiet) WAITQ=$2; shift 2;;
    --profile) PROFILE=1; shift;;
    -h|--help) sed -n '2,30p' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done

# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
tools=(python3:python3 curl:curl docker-registry:docker-registry openssl:openssl sha256sum:coreutils)
[ "$PROFILE" = 1 ] && tools+=(perf:linux-perf)
need_tools "${tools[@]}"
need_imgpkg
need_bin
imgpkg_bench_setup airdock-import-bench

export BENCH_RUN=$RUN BENCH_BIN=$BIN BENCH_IMGPKG=$IMGPKG BENCH_GIB=$GIB BENCH_LAYER_MIB=$LAYER_MIB \
  BENCH_REPS=$REPS BENCH_OUT=$OUT BENCH_PROFILE=$PROFILE BENCH_WAITQ=$WAITQ BENCH_CMDLINE=$CMDLINE BENCH_ROOT=$ROOT
run_driver <<'PY'
import json, os, re, shutil, signal, statistics, subprocess, time

from imgpkgbench import (E, BIN, IMGPKG, RUN, RssSampler, airdock_import, children_cpu, cpu,
                         kill_children, log, imgpkg, loadavg, machine, make_bundle_tars, spawn,
                         start_airdock, start_distribution, status, stop)

GIBS = [float(x) for x in E["BENCH_GIB"].split(",")]
LAYER = int(E["BENCH_LAYER_MIB"]) << 20
REPS, OUT, PROFILE = int(E["BENCH_REPS"]), E["BENCH_OUT"], E["BENCH_PROFILE"] == "1"
WAITQ = float(E["BENCH_WAITQ"])


def run_airdock(t, perf=False):
    data = os.path.join(RUN, "air-data")
    srv, host = start_airdock(data)
    token = open(os.path.join(data, "admin-token")).read().strip()
    idle = status(srv.pid, "VmRSS")
    rec = None
    if perf:
        rec = spawn(["perf", "record", "-g", "-o", os.path.join(RUN, "perf.data"), "-p", str(srv.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    load = loadavg()
    sampler = RssSampler(srv.pid).start()
    c0, s0 = children_cpu(), cpu(srv.pid)
    t0 = time.perf_counter()
    code, body = airdock_import(host, token, t["path"])
    wall = time.perf_counter() - t0
    server_cpu, client_cpu = cpu(srv.pid) - s0, children_cpu() - c0
    samples = sampler.stop()
    hwm = status(srv.pid, "VmHWM")
    if rec:
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
    stop(srv)
    shutil.rmtree(data)
    if code != "201":
        raise SystemExit(f"airdock import failed ({code}): {body[:2000]}")
    report = json.loads(body)
    # Every image, the bundle and its ImageLocations image are in the report.
    if len(report.get("images", [])) < t["images"] + 2 or not report.get("root_bundle"):
        raise SystemExit(f"unexpected import report: {body[:2000]}")
    return {"wall": wall, "idle_rss": idle, "hwm": hwm, "rss_samples": samples, "load": load,
            "server_cpu": server_cpu, "client_cpu": client_cpu}


def run_distribution(t):
    storage = os.path.join(RUN, "dist-data")
    srv, host = start_distribution(storage)
    load = loadavg()
    c0, s0 = children_cpu(), cpu(srv.pid)
    t0 = time.perf_counter()
    imgpkg("copy", "--tar", t["path"], "--to-repo", f"{host}/lib/app")
    wall = time.perf_counter() - t0
    server_cpu, client_cpu = cpu(srv.pid) - s0, children_cpu() - c0
    hwm = status(srv.pid, "VmHWM")
    stop(srv)
    shutil.rmtree(storage)
    return {"wall": wall, "hwm": hwm, "load": load, "server_cpu": server_cpu, "client_cpu": client_cpu}


def sha256_rates(tar):
    subprocess.run(["cat", tar], stdout=subprocess.DEVNULL)  # warm, as the measured runs are
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", tar], stdout=subprocess.DEVNULL, check=True)
    sum_rate = os.path.getsize(tar) / (time.perf_counter() - t0)
    out = subprocess.run(["openssl", "speed", "-evp", "sha256", "-bytes", "1048576", "-seconds", "3"],
                         capture_output=True, text=True).stdout
    m = re.search(r"^sha256\s+([\d.]+)k", out, re.M)
    ossl = float(m.group(1)) * 1000 if m else None
    return sum_rate, ossl


def write_rates(nbytes):
    """dd of `nbytes` zeros into a new file in the data dir: through the page cache, then with
    a final fsync (what every blob write of both registries pays, at most)."""
    out = {}
    for name, extra in (("cached", []), ("fsync", ["conv=fsync"])):
        f = os.path.join(RUN, "dd.bin")
        t0 = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={nbytes >> 20}", *extra],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out[name] = nbytes / (time.perf_counter() - t0)
        os.remove(f)
    return out


def mb(x):
    return x / 1e6


def mib(x):
    return x / (1 << 20)


def main():
    load_start = loadavg()
    tars = make_bundle_tars(GIBS, LAYER)
    if WAITQ > 0:
        log(f"waiting up to {WAITQ:.0f} s for the load to drop below 1.0 (now {loadavg()})")
        end = time.time() + WAITQ
        while time.time() < end and float(loadavg().split()[0]) >= 1.0:
            time.sleep(5)
    load_start = loadavg()
    sum_rate, ossl = sha256_rates(tars[-1]["path"])
    wr = write_rates(tars[-1]["bytes"])
    for t in tars:
        subprocess.run(["cat", t["path"]], stdout=subprocess.DEVNULL)
    results = {t["gib"]: {"airdock": [], "dist": []} for t in tars}
    for rep in range(REPS):
        for i, t in enumerate(tars):
            # Each size alternates which system goes first from one repetition to the next.
            order = ["airdock", "dist"] if (rep + i) % 2 == 0 else ["dist", "airdock"]
            for who in order:
                # Writeback one run leaves behind (its data dir was just deleted, page cache
                # still dirty) must not be paid by the next one; outside the timed region.
                subprocess.run(["sync"])
                r = run_airdock(t) if who == "airdock" else run_distribution(t)
                results[t["gib"]][who].append(r)
                log(f"rep {rep + 1} {t['gib']} GiB {who}: {r['wall']:.2f} s (load {r['load']})")
    prof = None
    if PROFILE:
        log("profiling one airdock import of the largest tar")
        run_airdock(tars[-1], perf=True)
        pd = os.path.join(RUN, "perf.data")
        prof = {
            "children": subprocess.run(["perf", "report", "-i", pd, "--stdio"],
                                       capture_output=True, text=True).stdout.splitlines()[:60],
            "self": subprocess.run(["perf", "report", "-i", pd, "--stdio", "--no-children", "-g", "none",
                                    "--percent-limit", "1.5"],
                                   capture_output=True, text=True).stdout.splitlines()[:45],
        }
    write_report(tars, results, load_start, loadavg(), sum_rate, ossl, wr, prof)


def write_report(tars, results, load_start, load_end, sum_rate, ossl, wr, prof):
    git = lambda *a: subprocess.run(["git", "-C", E["BENCH_ROOT"], *a], capture_output=True, text=True).stdout.strip()
    imgpkg_version = subprocess.run([IMGPKG, "version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    L = []
    L.append("# imgpkg tar import: airdock vs the seed's path (`imgpkg copy --tar … --to-repo` into Distribution 2.8)")
    L.append("")
    L.append(f"Generated by `{E['BENCH_CMDLINE']}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"tree {git('rev-parse', '--short', 'HEAD')}{' (with uncommitted changes)' if git('status', '--porcelain', '--untracked-files=no') else ''}, "
             f"binary `{BIN}`.")
    L.append("")
    L.append(f"- Machine: {machine()}.")
    L.append(f"- Load average (1/5/15 min) at start {load_start}, at end {load_end}; per run in the raw list below. "
             "The cores are shared with other work, so the spread between repetitions is part of the result.")
    L.append(f"- sha256 on this machine: `sha256sum` of the warm {tars[-1]['bytes'] / (1 << 30):.2f} GiB tar "
             f"{mb(sum_rate):.0f} MB/s" + (f"; `openssl speed -evp sha256` (1 MiB blocks) {mb(ossl):.0f} MB/s" if ossl else "") + ".")
    L.append(f"- Writing {tars[-1]['bytes'] >> 20} MiB into a new file in the data dir (`dd bs=1M`): "
             f"{mb(wr['cached']):.0f} MB/s through the page cache, {mb(wr['fsync']):.0f} MB/s with a final fsync.")
    L.append(f"- Tars written by `imgpkg copy -b … --to-tar` ({imgpkg_version}) "
             f"from a throw-away airdock: one bundle over N single-layer images of {LAYER >> 20} MiB random bytes each. "
             "Both imports start from an empty data dir; the tar is warm in the page cache.")
    L.append(f"- Each figure: min / median of {REPS} runs, systems interleaved (A,B then B,A …). "
             "MB/s = tar bytes / wall seconds (10^6 bytes). airdock: `curl -T` to `/admin/v1/import` with the "
             "token from `<data-dir>/admin-token`, wall time of curl until the 201 report; Distribution: wall time "
             "of `imgpkg copy --tar … --to-repo 127.0.0.1:PORT/lib/app --registry-insecure`. CPU s: user + system "
             "seconds the server (/proc/PID/stat) and the client (curl, imgpkg) used during the import, "
             "less sensitive than wall time to other work on the machine. Between runs (untimed) `sync`, so that writeback "
             "one run leaves behind is not paid by the next.")
    L.append("")
    L.append("| tar | images | system | wall s min / median | MB/s (median) | speed-up (median) | CPU s server + client (median) | server peak RSS (VmHWM) | server RSS during import, median / max of samples |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for t in tars:
        a, d = results[t["gib"]]["airdock"], results[t["gib"]]["dist"]
        aw = [r["wall"] for r in a]
        dw = [r["wall"] for r in d]
        am, dm = statistics.median(aw), statistics.median(dw)
        samples = [s for r in a for s in r["rss_samples"]]
        size = f"{t['bytes'] / (1 << 30):.2f} GiB"
        cpu_of = lambda rs: (f"{statistics.median(r['server_cpu'] for r in rs):.2f} + "
                             f"{statistics.median(r['client_cpu'] for r in rs):.2f}")
        L.append(f"| {size} | {t['images']} + bundle | airdock | {min(aw):.2f} / {am:.2f} | {mb(t['bytes']) / am:.0f} | "
                 f"{dm / am:.2f}× | {cpu_of(a)} | {mib(max(r['hwm'] for r in a)):.1f} MiB (idle {mib(statistics.median(r['idle_rss'] for r in a)):.1f} MiB) | "
                 f"{mib(statistics.median(samples)):.1f} / {mib(max(samples)):.1f} MiB ({len(samples)} samples) |")
        L.append(f"| {size} | {t['images']} + bundle | Distribution 2.8 + imgpkg copy | {min(dw):.2f} / {dm:.2f} | "
                 f"{mb(t['bytes']) / dm:.0f} | 1 | {cpu_of(d)} | {mib(max(r['hwm'] for r in d)):.1f} MiB | – |")
    L.append("")
    big = tars[-1]
    a = results[big["gib"]]["airdock"]
    ratio = statistics.median(r["wall"] for r in results[big["gib"]]["dist"]) / statistics.median(r["wall"] for r in a)
    hwm_all = max(r["hwm"] for t in tars for r in results[t["gib"]]["airdock"])
    hwm_small = max(r["hwm"] for r in results[tars[0]["gib"]]["airdock"])
    hwm_big = max(r["hwm"] for r in a)
    L.append("Targets of issue 3 (largest tar for speed; every airdock run for memory):")
    L.append("")
    L.append(f"- ≥ 3× faster than the seed's path: {ratio:.2f}× — {'met' if ratio >= 3 else 'missed'}.")
    L.append(f"- server RSS during the import ≤ 40 MiB: peak VmHWM {mib(hwm_all):.1f} MiB — {'met' if hwm_all <= 40 << 20 else 'missed'}.")
    if len(tars) > 1:
        growth = mib(hwm_big - hwm_small)
        L.append(f"- flat as the tar grows: peak {mib(hwm_small):.1f} MiB at {tars[0]['bytes'] / (1 << 30):.2f} GiB, "
                 f"{mib(hwm_big):.1f} MiB at {big['bytes'] / (1 << 30):.2f} GiB ({growth:+.1f} MiB) — "
                 f"{'met' if abs(growth) <= 4 else 'missed'} (flat = within ±4 MiB).")
    L.append("")
    L.append("Raw runs (wall seconds, load average when the run started):")
    L.append("")
    for t in tars:
        for who in ("airdock", "dist"):
            rs = results[t["gib"]][who]
            runs = ", ".join(f"{r['wall']:.2f} s ({r['load'].split()[0]})" for r in rs)
            L.append(f"- {t['bytes'] / (1 << 30):.2f} GiB, {'airdock' if who == 'airdock' else 'Distribution'}: {runs}")
    if prof:
        L.append("")
        L.append(f"## Profile: one airdock import of the {big['bytes'] / (1 << 30):.2f} GiB tar under `perf record -g -p PID`")
        L.append("")
        L.append("Self time (`perf report --stdio --no-children -g none --percent-limit 1.5`):")
        L.append("")
        L.append("```")
        L.extend(l for l in prof["self"] if l.strip() and not l.startswith("#") or l.startswith("# Samples"))
        L.append("```")
        L.append("")
        L.append("`perf report --stdio | head -60`:")
        L.append("")
        L.append("```")
        L.extend(l.rstrip()[:160] for l in prof["children"])
        L.append("```")
    text = "\n".join(L) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    print(text)


try:
    main()
finally:
    kill_children()
PY
