#!/bin/bash
# bench/export.sh [--bin PATH] [--gib G] [--layer-mib N] [--reps N] [--out FILE] [--data-root DIR]
#
# Issue 15: airdock's export of a bundle against the seed's path, side by side.
# 1. Builds one bundle with imgpkg itself (random single-layer images + a bundle listing them,
#    `imgpkg push` into a throw-away airdock, `imgpkg copy -b … --to-tar`), then loads that tar
#    into a fresh airdock (`POST /admin/v1/import`) and into Debian's docker-registry (CNCF
#    Distribution 2.8, filesystem storage) with `imgpkg copy --tar … --to-repo`.
# 2. Repeated and interleaved (A,B then B,A …), each writing a new file on the same disk:
#    (a) airdock: `curl -o out.tar /admin/v1/export?repository=lib/app&tag=1.0` (the server's
#        VmRSS sampled every 20 ms, VmHWM read after);
#    (b) the seed's path: `imgpkg copy -b 127.0.0.1:PORT/lib/app:1.0 --to-tar out.tar` from
#        Distribution.
#    Both outputs are checked to hold the same blob entries; then (c) `airdock export
#    --data-dir` of the stopped server's data dir is timed once.
# 3. Writes a markdown report (machine, load, command, table, the issue's target: ≥ 2×).
#
#   --bin PATH      airdock binary (default target/x86_64-unknown-linux-gnu/release/airdock; builds nothing)
#   --gib G         bundle size in GiB (default 1)
#   --layer-mib N   size of each image's random layer (default 32)
#   --reps N        repetitions per system (default 3)
#   --out FILE      the report (default target/bench/export-results.md)
#   --data-root DIR where the temp dir is made (default /var/tmp); removed at exit
# Needs python3 curl docker-registry and imgpkg 0.43.1 (PATH or target/tools/bin). Listens on
# 127.0.0.1 only; every process it starts is stopped by PID at exit; the temp dir is removed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CMDLINE="bench/export.sh${*:+ $*}"
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock GIB=1 LAYER_MIB=32 REPS=3
OUT=$ROOT/target/bench/export-results.md DATA_ROOT=/var/tmp
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2;;
    --gib) GIB=$2; shift 2;;
    --layer-mib) LAYER_MIB=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --data-root) DATA_ROOT=$2; shift 2;;
    -h|--help) sed -n '2,26p' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
need_tools python3:python3 curl:curl docker-registry:docker-registry
need_imgpkg
need_bin
imgpkg_bench_setup airdock-export-bench

export BENCH_RUN=$RUN BENCH_BIN=$BIN BENCH_IMGPKG=$IMGPKG BENCH_GIB=$GIB BENCH_LAYER_MIB=$LAYER_MIB \
  BENCH_REPS=$REPS BENCH_OUT=$OUT BENCH_CMDLINE=$CMDLINE
run_driver <<'PY'
import os, statistics, subprocess, tarfile, time

from imgpkgbench import (E, BIN, RUN, RssSampler, airdock_import, children_cpu, cpu, imgpkg,
                         kill_children, loadavg, log, machine, make_bundle_tars, start_airdock,
                         start_distribution, status, stop)

GIB, LAYER, REPS, OUT = float(E["BENCH_GIB"]), int(E["BENCH_LAYER_MIB"]) << 20, int(E["BENCH_REPS"]), E["BENCH_OUT"]


def members(path):
    with tarfile.open(path) as t:
        return sorted((m.name, m.size) for m in t.getmembers() if m.name != "manifest.json")


def main():
    t = make_bundle_tars([GIB], LAYER)[0]
    tar, images, size = t["path"], t["images"], t["bytes"]
    air_data = os.path.join(RUN, "air-data")
    air, air_host = start_airdock(air_data)
    token = open(os.path.join(air_data, "admin-token")).read().strip()
    code, body = airdock_import(air_host, token, tar)
    if code != "201":
        raise SystemExit(f"import into airdock failed: {code} {body[:2000]}")
    dist, dist_host = start_distribution(os.path.join(RUN, "dist-data"))
    imgpkg("copy", "--tar", tar, "--to-repo", f"{dist_host}/lib/app")
    expected = members(tar)
    out = os.path.join(RUN, "out.tar")
    load_start = loadavg()

    def run_airdock():
        sampler = RssSampler(air.pid).start()
        load = loadavg()
        c0, s0 = children_cpu(), cpu(air.pid)
        t0 = time.perf_counter()
        r = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {token}", "-o", out,
                            f"http://{air_host}/admin/v1/export?repository=lib/app&tag=1.0"])
        wall = time.perf_counter() - t0
        server_cpu, client_cpu = cpu(air.pid) - s0, children_cpu() - c0
        samples = sampler.stop()
        if r.returncode != 0:
            raise SystemExit("airdock export failed")
        return {"wall": wall, "rss": max(samples or [0]), "load": load,
                "server_cpu": server_cpu, "client_cpu": client_cpu}

    def run_imgpkg():
        load = loadavg()
        c0, s0 = children_cpu(), cpu(dist.pid)
        t0 = time.perf_counter()
        imgpkg("copy", "-b", f"{dist_host}/lib/app:1.0", "--to-tar", out)
        wall = time.perf_counter() - t0
        return {"wall": wall, "load": load, "server_cpu": cpu(dist.pid) - s0,
                "client_cpu": children_cpu() - c0}

    res = {"airdock": [], "imgpkg": []}
    for i in range(REPS):
        order = [("airdock", run_airdock), ("imgpkg", run_imgpkg)]
        if i % 2:
            order.reverse()
        for name, fn in order:
            if os.path.exists(out):
                os.remove(out)
            # Writeback of the previous run's file is not paid by this one (untimed).
            subprocess.run(["sync"])
            m = fn()
            if members(out) != expected:
                raise SystemExit(f"{name}: the tar's blob entries differ from the original's")
            res[name].append(m)
            log(f"{name} rep {i + 1}: {m['wall']:.2f} s (load {m['load']})")
    hwm = status(air.pid, "VmHWM")
    stop(air)
    os.remove(out)
    subprocess.run(["sync"])
    t0 = time.perf_counter()
    subprocess.run([BIN, "export", "--data-dir", air_data, "-r", "lib/app", "-t", "1.0", "-o", out],
                   check=True, capture_output=True)
    offline = time.perf_counter() - t0
    if members(out) != expected:
        raise SystemExit("airdock export --data-dir: blob entries differ")
    stop(dist)

    med = {k: statistics.median(m["wall"] for m in v) for k, v in res.items()}
    ratio = med["imgpkg"] / med["airdock"]
    gib = size / (1 << 30)
    cpu_of = lambda rs: (f"{statistics.median(r['server_cpu'] for r in rs):.2f} + "
                         f"{statistics.median(r['client_cpu'] for r in rs):.2f}")
    lines = [
        "# Export benchmark (issue 15)", "",
        f"- command: `{E['BENCH_CMDLINE']}`",
        f"- machine: {machine()}",
        f"- load average (1/5/15 min) before the first run {load_start}, after the last {loadavg()}",
        f"- bundle: {images} images of {LAYER >> 20} MiB random layers + the bundle, tar {gib:.2f} GiB",
        f"- {REPS} repetitions, interleaved (A,B then B,A …); each writes a new file on the same disk, "
        "`sync` (untimed) between runs. CPU s: user + system seconds of the server (/proc/PID/stat) "
        "and of the client (curl, imgpkg) during the export.", "",
        "| system | median s | GiB/s | CPU s server + client (median) | runs (s) | load at start of each |",
        "|---|---|---|---|---|---|",
    ]
    for k, label in [("airdock", "airdock `GET /admin/v1/export` (curl -o)"),
                     ("imgpkg", "`imgpkg copy -b … --to-tar` from Distribution 2.8")]:
        runs = ", ".join(f"{m['wall']:.2f}" for m in res[k])
        loads = "; ".join(m["load"].split()[0] for m in res[k])
        lines.append(f"| {label} | {med[k]:.2f} | {gib / med[k]:.2f} | {cpu_of(res[k])} | {runs} | {loads} |")
    lines += ["",
              f"- airdock `export --data-dir` (server stopped): {offline:.2f} s",
              f"- airdock server peak RSS during the exports: {max(m['rss'] for m in res['airdock']) / (1 << 20):.1f} MiB "
              f"(VmHWM {hwm / (1 << 20):.1f} MiB)",
              f"- speed-up: {ratio:.2f}× (target ≥ 2×: {'met' if ratio >= 2 else 'missed'})", ""]
    with open(OUT, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


try:
    main()
finally:
    kill_children()
PY
