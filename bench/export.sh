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
missing=()
for t in python3:python3 curl:curl docker-registry:docker-registry; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools; install them with:  apt-get install -y ${missing[*]}" >&2
  exit 127
fi
IMGPKG=$(command -v imgpkg || true)
[ -n "$IMGPKG" ] || IMGPKG=${AIRDOCK_TOOLS_BIN:-$ROOT/target/tools/bin}/imgpkg
[ -x "$IMGPKG" ] || { echo "imgpkg not found; install it with:  scripts/install-clients.sh" >&2; exit 127; }
[ -x "$BIN" ] || { echo "no airdock binary at $BIN; build it first:  cargo build --release  (or --bin PATH)" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$(dirname "$OUT")" "$DATA_ROOT"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
RUN=$(mktemp -d "${DATA_ROOT%/}/airdock-export-bench.XXXXXX") || exit 1
PY=""
cleanup() {
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
  BENCH_REPS=$REPS BENCH_OUT=$OUT BENCH_CMDLINE=$CMDLINE
python3 - <<'PY' &
import json, math, os, platform, re, shutil, socket, statistics, subprocess, sys, tarfile, threading, time
import urllib.request

E = os.environ
RUN, BIN, IMGPKG = E["BENCH_RUN"], E["BENCH_BIN"], E["BENCH_IMGPKG"]
GIB, LAYER, REPS, OUT = float(E["BENCH_GIB"]), int(E["BENCH_LAYER_MIB"]) << 20, int(E["BENCH_REPS"]), E["BENCH_OUT"]
HOME = os.path.join(RUN, "home")
os.makedirs(HOME)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
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


def imgpkg(*args):
    env = dict(E, HOME=HOME, DOCKER_CONFIG=os.path.join(HOME, ".docker"))
    r = subprocess.run([IMGPKG, *args, "--registry-insecure"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"imgpkg {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_airdock(data):
    p = spawn([BIN, "serve", "--addr", "127.0.0.1:0", "--data-dir", data],
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = p.stdout.readline()
        m = re.search(r"listening on (?:https?://)?(127\.0\.0\.1:\d+)", line)
        if m:
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return p, m.group(1)
        if not line and p.poll() is not None:
            break
    raise SystemExit("airdock did not start")


def start_distribution(storage):
    port = free_port()
    cfg = os.path.join(RUN, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
                f"  filesystem:\n    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    p = spawn(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        if subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/v2/"]).returncode == 0:
            return p, f"127.0.0.1:{port}"
        time.sleep(0.1)
    raise SystemExit("docker-registry did not start")


def make_tar():
    n = math.ceil(GIB * (1 << 30) / LAYER)
    gen = os.path.join(RUN, "gen-data")
    srv, host = start_airdock(gen)
    log(f"generating {n} images of {LAYER >> 20} MiB random layers via imgpkg push to {host}")
    refs = []
    for i in range(n):
        d = os.path.join(RUN, "img")
        os.makedirs(d)
        with open(os.path.join(d, "layer.bin"), "wb") as f:
            left = LAYER - 2048
            while left > 0:
                k = min(left, 4 << 20)
                f.write(os.urandom(k))
                left -= k
        imgpkg("push", "-i", f"{host}/gen/img{i}:v1", "-f", d)
        shutil.rmtree(d)
        head = urllib.request.Request(f"http://{host}/v2/gen/img{i}/manifests/v1", method="HEAD",
                                      headers={"Accept": "*/*"})
        with urllib.request.urlopen(head) as resp:
            refs.append(f"{host}/gen/img{i}@{resp.headers['Docker-Content-Digest']}")
    b = os.path.join(RUN, "bundle")
    os.makedirs(os.path.join(b, ".imgpkg"))
    with open(os.path.join(b, ".imgpkg", "images.yml"), "w") as f:
        f.write("---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n")
        f.writelines(f"- image: {r}\n" for r in refs)
        f.write("kind: ImagesLock\n")
    imgpkg("push", "-b", f"{host}/gen/bundle:1.0", "-f", b)
    shutil.rmtree(b)
    tar = os.path.join(RUN, "bundle.tar")
    imgpkg("copy", "-b", f"{host}/gen/bundle:1.0", "--to-tar", tar)
    stop(srv)
    shutil.rmtree(gen)
    return tar, n


def members(path):
    with tarfile.open(path) as t:
        return sorted((m.name, m.size) for m in t.getmembers() if m.name != "manifest.json")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


tar, images = make_tar()
size = os.path.getsize(tar)
log(f"{tar}: {size / (1 << 30):.2f} GiB, {images} images + bundle")
air_data = os.path.join(RUN, "air-data")
air, air_host = start_airdock(air_data)
token = open(os.path.join(air_data, "admin-token")).read().strip()
r = subprocess.run(["curl", "-sS", "-T", tar, "-H", f"Authorization: Bearer {token}", "-o", "/dev/null",
                    "-w", "%{http_code}", f"http://{air_host}/admin/v1/import?repository=lib/app"],
                   capture_output=True, text=True)
if r.stdout != "201":
    raise SystemExit(f"import into airdock failed: {r.stdout} {r.stderr}")
dist, dist_host = start_distribution(os.path.join(RUN, "dist-data"))
imgpkg("copy", "--tar", tar, "--to-repo", f"{dist_host}/lib/app")
expected = members(tar)
out = os.path.join(RUN, "out.tar")


def run_airdock():
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(status(air.pid, "VmRSS"))
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    load = loadavg()
    th.start()
    t0 = time.perf_counter()
    r = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {token}", "-o", out,
                        f"http://{air_host}/admin/v1/export?repository=lib/app&tag=1.0"])
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if r.returncode != 0:
        raise SystemExit("airdock export failed")
    return {"wall": wall, "rss": max(samples or [0]), "load": load}


def run_imgpkg():
    load = loadavg()
    t0 = time.perf_counter()
    imgpkg("copy", "-b", f"{dist_host}/lib/app:1.0", "--to-tar", out)
    return {"wall": time.perf_counter() - t0, "load": load}


res = {"airdock": [], "imgpkg": []}
for i in range(REPS):
    order = [("airdock", run_airdock), ("imgpkg", run_imgpkg)]
    if i % 2:
        order.reverse()
    for name, fn in order:
        if os.path.exists(out):
            os.remove(out)
        subprocess.run(["sync"])
        m = fn()
        got = members(out)
        if got != expected:
            raise SystemExit(f"{name}: the tar's blob entries differ from the original's")
        res[name].append(m)
        log(f"{name} rep {i + 1}: {m['wall']:.2f} s")
hwm = status(air.pid, "VmHWM")
stop(air)
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
lines = [
    "# Export benchmark (issue 15)", "",
    f"- command: `{E['BENCH_CMDLINE']}`",
    f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}",
    f"- bundle: {images} images of {LAYER >> 20} MiB random layers + the bundle, tar {gib:.2f} GiB",
    f"- {REPS} repetitions, interleaved; each writes a new file on the same disk", "",
    "| system | median s | GiB/s | runs (s) | load at start |", "|---|---|---|---|---|",
]
for k, label in [("airdock", "airdock `GET /admin/v1/export` (curl -o)"),
                 ("imgpkg", "`imgpkg copy -b … --to-tar` from Distribution 2.8")]:
    runs = ", ".join(f"{m['wall']:.2f}" for m in res[k])
    loads = "; ".join(m["load"] for m in res[k])
    lines.append(f"| {label} | {med[k]:.2f} | {gib / med[k]:.2f} | {runs} | {loads} |")
lines += ["",
          f"- airdock `export --data-dir` (server stopped): {offline:.2f} s",
          f"- airdock server peak RSS during the exports: {max(m['rss'] for m in res['airdock']) / (1 << 20):.1f} MiB (VmHWM {hwm / (1 << 20):.1f} MiB)",
          f"- speed-up: {ratio:.2f}× (target ≥ 2×: {'met' if ratio >= 2 else 'missed'})", ""]
with open(OUT, "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY
PY=$!
wait "$PY"
