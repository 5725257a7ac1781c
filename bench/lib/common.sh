# Shell helpers shared by the bench/ scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Wait up to $1 seconds for the 1-minute load average to drop below $2 (default 0.5).
wait_quiet() {
  local end=$((SECONDS + $1)) below=${2:-0.5}
  while [ $SECONDS -lt $end ] && awk -v b="$below" '{exit !($1 >= b)}' /proc/loadavg; do sleep 10; done
}

# Stop the given PIDs: TERM all, up to 5 s each to exit, then KILL.
stop_pids() {
  local p
  for p in "$@"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done
  for p in "$@"; do
    [ -n "$p" ] || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  return 0
}

# Wait up to 30 s for URL $1 to give any HTTP answer (401 included) while PID $2 runs; on
# failure show the tail of its log $3. Further arguments go to curl (e.g. --cacert FILE).
wait_answer() {
  local url=$1 pid=$2 log=$3
  shift 3
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || { echo "server exited:" >&2; tail -20 "$log" >&2; return 1; }
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" "$url")" != 000 ] && return 0
    sleep 0.2
  done
  echo "no answer at $url after 30 s:" >&2; tail -20 "$log" >&2; return 1
}

# $RUN: a new temp dir under $DATA_ROOT named after $1; at exit every server in $PIDS is stopped
# by PID and $RUN removed (parallel unlinks first: rm -rf of a big data dir takes minutes here).
bench_rundir() {
  mkdir -p "$DATA_ROOT"
  RUN=$(mktemp -d "${DATA_ROOT%/}/$1.XXXXXX") || exit 1
  PIDS=()
  trap bench_rundir_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_rundir_cleanup() {
  stop_pids "${PIDS[@]:-}"
  python3 "$HERE/lib/rmtree.py" "$RUN" 2>/dev/null
  rm -rf "$RUN"
}

# Distribution's config on stdout: log level warn and access log off (its cheapest logging, as
# airdock logs nothing per request by default), the storage driver block $2 (YAML indented by
# two spaces), in-memory blob descriptor cache, delete enabled, no upload purging, 127.0.0.1:$1.
distribution_yml() {
  cat <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
$2
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$1
  secret: airdock-bench-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
YML
}

# Exit 127 naming the Debian packages to install when a tool is missing. Arguments:
# `tool:package` pairs.
need_tools() {
  local missing=() t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing tools; install them with:  apt-get install -y ${missing[*]}" >&2
    exit 127
  fi
}

# Exit 2 unless $BIN is an executable airdock binary; make it absolute.
need_bin() {
  if [ ! -x "$BIN" ]; then
    echo "no airdock binary at $BIN; build it first:  cargo build --release  (or pass --bin PATH)" >&2
    exit 2
  fi
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
}

# Set IMGPKG to imgpkg on PATH or in target/tools/bin (scripts/install-clients.sh), or exit 127.
need_imgpkg() {
  IMGPKG=$(command -v imgpkg || true)
  [ -n "$IMGPKG" ] || IMGPKG=${AIRDOCK_TOOLS_BIN:-$ROOT/target/tools/bin}/imgpkg
  if [ ! -x "$IMGPKG" ]; then
    echo "imgpkg not found (PATH, target/tools/bin); install it with:  scripts/install-clients.sh" >&2
    exit 127
  fi
}

# The imgpkg benches (import.sh, export.sh): make $OUT absolute and the temp dir $RUN under
# $DATA_ROOT (prefix $1), removed at exit after every process recorded in $RUN/pids (by the
# Python driver, see imgpkgbench.py) and the driver itself are stopped by PID.
imgpkg_bench_setup() {
  mkdir -p "$(dirname "$OUT")" "$DATA_ROOT"
  OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
  RUN=$(mktemp -d "${DATA_ROOT%/}/$1.XXXXXX") || exit 1
  PY=""
  trap imgpkg_bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

imgpkg_bench_cleanup() {
  if [ -f "$RUN/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null; done < "$RUN/pids"
  fi
  [ -n "$PY" ] && kill "$PY" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$RUN"
}

# Run the Python driver read from stdin (with bench/lib importable) and return its status.
run_driver() {
  # <&0: an async command would otherwise read /dev/null, not the caller's here-document.
  PYTHONPATH="$HERE/lib${PYTHONPATH:+:$PYTHONPATH}" python3 - <&0 &
  PY=$!
  wait "$PY"
  local rc=$?
  PY=""
  return $rc
}
