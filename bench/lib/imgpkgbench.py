"""What bench/import.sh and bench/export.sh share: the processes they start (airdock,
Distribution) and how they stop them, the bundle tars they make with imgpkg itself, and what
they read of the machine and of a process (load, RSS, CPU seconds).

Configured by the environment the shell part exports: BENCH_RUN (the temp dir; every process
started is recorded in BENCH_RUN/pids so the shell can stop it by PID), BENCH_BIN (airdock),
BENCH_IMGPKG.
"""
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

E = os.environ
RUN, BIN, IMGPKG = E["BENCH_RUN"], E["BENCH_BIN"], E["BENCH_IMGPKG"]
HOME = os.path.join(RUN, "home")  # imgpkg's private HOME: no credentials from the machine
os.makedirs(HOME, exist_ok=True)
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


def kill_children():
    """For the driver's `finally`: nothing it started outlives it."""
    for p in children:
        if p.poll() is None:
            p.kill()
            p.wait()


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
    """CPU seconds of every waited-for child (curl, imgpkg) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class RssSampler:
    """Samples a process's VmRSS every 20 ms between start() and stop()."""

    def __init__(self, pid):
        self.pid, self.samples, self.done = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.done.is_set():
            try:
                self.samples.append(status(self.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.02)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.samples


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
    """Debian's docker-registry (CNCF Distribution 2.8), filesystem storage under `storage`."""
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


def make_bundle_tars(gibs, layer):
    """One `imgpkg copy -b … --to-tar` tar per size in `gibs`: a bundle over single-layer
    images of `layer` random (incompressible) bytes each, pushed with `imgpkg push` into a
    throw-away airdock that is gone afterwards. Returns [{gib, images, path, bytes}]."""
    counts = [math.ceil(g * (1 << 30) / layer) for g in gibs]
    gen = os.path.join(RUN, "gen-data")
    srv, host = start_airdock(gen)
    log(f"generating {max(counts)} images of {layer >> 20} MiB random layers via imgpkg push to {host}")
    refs = []
    for i in range(max(counts)):
        d = os.path.join(RUN, "img")
        os.makedirs(d)
        with open(os.path.join(d, "layer.bin"), "wb") as f:
            left = layer - 2048  # the layer is a tar.gz of this file: a little overhead
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
    for g, n in zip(gibs, counts):
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


def airdock_import(host, token, tar, repo="lib/app"):
    """`curl -T tar` to /admin/v1/import; (status code, body)."""
    r = subprocess.run(["curl", "-sS", "-T", tar, "-H", f"Authorization: Bearer {token}",
                        "-w", "\n%{http_code}", f"http://{host}/admin/v1/import?repository={repo}"],
                       capture_output=True, text=True)
    body, _, code = r.stdout.rpartition("\n")
    return code, body + r.stderr


def machine():
    cpu_name = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    fs = subprocess.run(["df", "-T", RUN], capture_output=True, text=True).stdout.splitlines()[-1].split()
    return (f"{os.cpu_count()} CPUs ({cpu_name}), {mem / (1 << 20):.0f} GiB RAM, Linux {os.uname().release}, "
            f"data dir on {fs[1]} ({fs[0]})")
