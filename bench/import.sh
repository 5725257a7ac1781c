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

missing=()
for t in python3:python3 curl:curl docker-registry:docker-registry openssl:openssl sha256sum:coreutils; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
[ "$PROFILE" = 1 ] && { command -v perf >/dev/null 2>&1 || missing+=(linux-perf); }
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools; install them with:  apt-get install -y ${missing[*]}" >&2
  exit 127
fi
IMGPKG=$(command -v imgpkg || true)
[ -n "$IMGPKG" ] || IMGPKG=${AIRDOCK_TOOLS_BIN:-$ROOT/target/tools/bin}/imgpkg
if [ ! -x "$IMGPKG" ]; then
  echo "imgpkg not found (PATH, target/tools/bin); install it with:  scripts/install-clients.sh" >&2
  exit 127
fi
if [ ! -x "$BIN" ]; then
  echo "no airdock binary at $BIN; build it first:  cargo build --release  (or pass --bin PATH)" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$(dirname "$OUT")" "$DATA_ROOT"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

RUN=$(mktemp -d "${DATA_ROOT%/}/airdock-import-bench.XXXXXX") || exit 1
PY=""
cleanup() {
  # The driver records every process it starts in $RUN/pids; stop each by PID, then the driver.
  if [ -f "$RUN/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null; done < "$RUN/pids"
  fi
  [ -n "$PY" ] && kill "$PY" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export BENCH_RUN=$RUN BENCH_BIN=$BIN BENCH_IMGPKG=$IMGPKG BENCH_GIB=$GIB BENCH_LAYER_MIB=$LAYER_MIB \
  BENCH_REPS=$REPS BENCH_OUT=$OUT BENCH_PROFILE=$PROFILE BENCH_WAITQ=$WAITQ BENCH_CMDLINE=$CMDLINE BENCH_ROOT=$ROOT
python3 - <<'PY' &
import json, math, os, re, shutil, signal, socket, statistics, subprocess, sys, threading, time
import resource
import urllib.request

E = os.environ
RUN, BIN, IMGPKG = E["BENCH_RUN"], E["BENCH_BIN"], E["BENCH_IMGPKG"]
GIBS = [float(x) for x in E["BENCH_GIB"].split(",")]
LAYER = int(E["BENCH_LAYER_MIB"]) << 20
REPS, OUT, PROFILE = int(E["BENCH_REPS"]), E["BENCH_OUT"], E["BENCH_PROFILE"] == "1"
WAITQ = float(E["BENCH_WAITQ"])
HOME = os.path.join(RUN, "home")  # imgpkg's private HOME: no credentials from the machine
os.makedirs(HOME)
children = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    children.append(p)
    with open(os.path.join(RUN, "pids"), "a") as f:
        f.write(f"{p.pid}\n")
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all(*_):
    for p in children:
        if p.poll() is None:
            p.kill()
    sys.exit(130)


signal.signal(signal.SIGTERM, stop_all)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def imgpkg(*args, check=True):
    env = dict(E, HOME=HOME, DOCKER_CONFIG=os.path.join(HOME, ".docker"))
    r = subprocess.run([IMGPKG, *args, "--registry-insecure"], env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"imgpkg {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout + r.stderr


def status(pid, key):
    """A `kB` field of /proc/PID/status, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def cpu(pid):
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start_airdock(data):
    p = spawn([BIN, "serve", "--addr", "127.0.0.1:0", "--data-dir", data],
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = p.stdout.readline()
        m = re.search(r"listening on (?:https?://)?(127\.0\.0\.1:\d+)", line)
        if m:
            # Keep draining stdout so the server never blocks on a full pipe.
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return p, m.group(1)
        if not line and p.poll() is not None:
            break
    raise SystemExit("airdock did not start")


def wait_http(url):
    deadline = time.time() + 30
    while time.time() < deadline:
        if subprocess.run(["curl", "-sf", "-o", "/dev/null", url]).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def start_distribution(storage):
    port = free_port()
    cfg = os.path.join(RUN, f"registry-{port}.yml")
    with open(cfg, "w") as f:
        f.write(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
""")
    p = spawn(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/")
    return p, f"127.0.0.1:{port}"


# ---- 1. the tars, written by imgpkg ----
def make_tars():
    counts = [math.ceil(g * (1 << 30) / LAYER) for g in GIBS]
    gen = os.path.join(RUN, "gen-data")
    srv, host = start_airdock(gen)
    log(f"generating {max(counts)} images of {LAYER >> 20} MiB random layers via imgpkg push to {host}")
    refs = []
    for i in range(max(counts)):
        d = os.path.join(RUN, "img")
        os.makedirs(d)
        with open(os.path.join(d, "layer.bin"), "wb") as f:
            left = LAYER - 2048  # the layer is a tar.gz of this file: a little overhead
            while left > 0:
                n = min(left, 4 << 20)
                f.write(os.urandom(n))
                left -= n
        imgpkg("push", "-i", f"{host}/gen/img{i}:v1", "-f", d)
        shutil.rmtree(d)
        head = urllib.request.Request(f"http://{host}/v2/gen/img{i}/manifests/v1", method="HEAD",
                                      headers={"Accept": "*/*"})
        with urllib.request.urlopen(head) as resp:
            refs.append(f"{host}/gen/img{i}@{resp.headers['Docker-Content-Digest']}")
    tars = []
    for g, n in zip(GIBS, counts):
        b = os.path.join(RUN, "bundle")
        os.makedirs(os.path.join(b, ".imgpkg"))
        os.makedirs(os.path.join(b, "config"))
        with open(os.path.join(b, ".imgpkg", "images.yml"), "w") as f:
            f.write("---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n")
            for r in refs[:n]:
                f.write(f"- image: {r}\n")
            f.write("kind: ImagesLock\n")
        with open(os.path.join(b, "config", "app.yml"), "w") as f:
            f.write("images: %d\n" % n)
        ref = f"{host}/gen/bundle-{g}:1.0"
        imgpkg("push", "-b", ref, "-f", b)
        shutil.rmtree(b)
        tar = os.path.join(RUN, f"bundle-{g}GiB.tar")
        imgpkg("copy", "-b", ref, "--to-tar", tar)
        tars.append({"gib": g, "images": n, "path": tar, "bytes": os.path.getsize(tar)})
        log(f"{tar}: {os.path.getsize(tar) / (1 << 30):.2f} GiB, {n} images + bundle")
    stop(srv)
    shutil.rmtree(gen)
    return tars


# ---- 2. the measurements ----
def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_airdock(t, perf=False):
    data = os.path.join(RUN, "air-data")
    srv, host = start_airdock(data)
    token = open(os.path.join(data, "admin-token")).read().strip()
    idle = status(srv.pid, "VmRSS")
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            try:
                samples.append(status(srv.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.02)

    rec = None
    if perf:
        rec = spawn(["perf", "record", "-g", "-o", os.path.join(RUN, "perf.data"), "-p", str(srv.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    th = threading.Thread(target=sample, daemon=True)
    load = loadavg()
    th.start()
    c0, s0 = children_cpu(), cpu(srv.pid)
    t0 = time.perf_counter()
    r = subprocess.run(["curl", "-sS", "-T", t["path"], "-H", f"Authorization: Bearer {token}",
                        "-w", "\n%{http_code}", f"http://{host}/admin/v1/import?repository=lib/app"],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    server_cpu, client_cpu = cpu(srv.pid) - s0, children_cpu() - c0
    done.set()
    th.join()
    hwm = status(srv.pid, "VmHWM")
    if rec:
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
    stop(srv)
    shutil.rmtree(data)
    body, _, code = r.stdout.rpartition("\n")
    if code != "201":
        raise SystemExit(f"airdock import failed ({code}): {body[:2000]} {r.stderr}")
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


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    fs = subprocess.run(["df", "-T", RUN], capture_output=True, text=True).stdout.splitlines()[-1].split()
    kernel = os.uname().release
    return f"{os.cpu_count()} CPUs ({cpu}), {mem / (1 << 20):.0f} GiB RAM, Linux {kernel}, data dir on {fs[1]} ({fs[0]})"


def mb(x):
    return x / 1e6


def mib(x):
    return x / (1 << 20)


def main():
    load_start = loadavg()
    tars = make_tars()
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
    for p in children:
        if p.poll() is None:
            p.kill()
            p.wait()
PY
PY=$!
wait "$PY"
rc=$?
PY=""
exit $rc
