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
  # PostgreSQL first, with a fast shutdown (SIGINT: its sessions are ended), so that it is not
  # left waiting for its clients' sessions as it would on SIGTERM.
  [ -n "${PGPID:-}" ] && kill -INT "$PGPID" 2>/dev/null
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

# A free port on 127.0.0.1 that no earlier newport call of this script returned.
USED_PORTS=" "
newport() {
  local p
  p=$(freeport)
  while [[ "$USED_PORTS" == *" $p "* ]]; do p=$(freeport); done
  USED_PORTS="$USED_PORTS$p "
  NEWPORT=$p
}

# The S3 server (s3.sh, replica.sh): versitygw ($VERSITYGW, else target/tools/bin, else PATH),
# `posix` backend over $RUN/s3 with one bucket (directory) per argument, on a free port.
# Sets S3BIN, S3VER, KEY, SECRET, SPORT, SPID (added to PIDS).
start_versitygw() {
  S3BIN=${VERSITYGW:-$ROOT/target/tools/bin/versitygw}
  [ -x "$S3BIN" ] || S3BIN=$(command -v versitygw || true)
  [ -n "$S3BIN" ] && [ -x "$S3BIN" ] || { echo "versitygw not found; install it with:  scripts/install-deps.sh" >&2; exit 127; }
  KEY=s3bench SECRET=s3bench-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
  local b
  for b in "$@"; do mkdir -p "$RUN/s3/$b"; done
  newport; SPORT=$NEWPORT
  setsid "$S3BIN" --port "127.0.0.1:$SPORT" --access "$KEY" --secret "$SECRET" posix "$RUN/s3" > "$RUN/versitygw.log" 2>&1 &
  PIDS+=($!); SPID=$!
  wait_answer "http://127.0.0.1:$SPORT/" "$SPID" "$RUN/versitygw.log" || exit 1
  # The binary's --version says "git"; the module version is in its Go build info.
  S3VER=$(go version -m "$S3BIN" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')
}

# Distribution 2.8 (docker-registry) with its `s3` driver on bucket $1 of start_versitygw's
# server: blob GETs through the registry (redirect disabled, as airdock serves them by default),
# on a free port. Sets DPORT, DPID (added to PIDS); waits until it answers.
start_distribution_s3() {
  newport; DPORT=$NEWPORT
  {
    echo "# written by bench/: s3 driver on the run's versitygw, blob GETs served through the"
    echo "# registry (as airdock does by default), delete enabled, loopback only"
    distribution_yml "$DPORT" "  s3:
    regionendpoint: http://127.0.0.1:$SPORT
    region: us-east-1
    bucket: $1
    accesskey: $KEY
    secretkey: $SECRET
    secure: false
    v4auth: true
    forcepathstyle: true
  redirect:
    disable: true"
  } > "$RUN/distribution.yml"
  # setsid: each server in its own session (a Ctrl-C reaches only the script, whose cleanup
  # stops them); in a non-interactive shell setsid execs, so $! is the server's PID.
  # Distribution's AWS SDK panics when AWS_CA_BUNDLE is set.
  setsid env -u AWS_CA_BUNDLE -u AWS_PROFILE docker-registry serve "$RUN/distribution.yml" > "$RUN/distribution.log" 2>&1 &
  PIDS+=($!); DPID=$!
  wait_answer "http://127.0.0.1:$DPORT/v2/" "$DPID" "$RUN/distribution.log" || exit 1
}

# `airdock serve` on a free port with data dir $RUN/$1 and the further flags given, the S3 keys
# of start_versitygw in its environment (used with --storage s3) and no AIRDOCK_* variable of
# the caller's. Sets APORT, APID (added to PIDS); waits until it answers.
start_airdock() {
  local name=$1
  shift
  mkdir -p "$RUN/$name"
  newport; APORT=$NEWPORT
  # shellcheck disable=SC2046 # one `-u NAME` per variable
  setsid env -u RUST_LOG $(compgen -e | grep "^AIRDOCK_" | sed "s/^/-u /") \
    AWS_ACCESS_KEY_ID="${KEY:-}" AWS_SECRET_ACCESS_KEY="${SECRET:-}" \
    "$BIN" serve --addr "127.0.0.1:$APORT" --data-dir "$RUN/$name" "$@" > "$RUN/$name.log" 2>&1 &
  PIDS+=($!); APID=$!
  wait_answer "http://127.0.0.1:$APORT/v2/" "$APID" "$RUN/$name.log" || exit 1
}

# PostgreSQL from Debian's package (the newest /usr/lib/postgresql/*/bin, or $AIRDOCK_PG_BIN):
# `initdb` into $RUN/pg (trust auth for role airdock, loopback only) and `postgres` on a free
# port with its default durability (fsync on, as a lab's database runs), as the `postgres`
# account when we are root (it refuses to run as root), and database `airdock` created.
# Sets PGBIN, PGPORT, PGPID (added to PIDS, stopped first by SIGINT), PGURL.
start_postgres() {
  PGBIN=${AIRDOCK_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
  [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL not found; install it with:  scripts/install-deps.sh" >&2; exit 127; }
  local as=()
  mkdir -p "$RUN/pg"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "running as root and no postgres account: scripts/install-deps.sh" >&2; exit 127; }
    chmod 711 "$RUN"          # the postgres account must reach its directory inside
    chown postgres: "$RUN/pg"
    as=(setpriv --reuid=postgres --regid=postgres --clear-groups)
  fi
  "${as[@]}" "$PGBIN/initdb" --auth=trust --encoding=UTF8 --no-locale --username=airdock \
    -D "$RUN/pg/data" > "$RUN/initdb.log" 2>&1 || { cat "$RUN/initdb.log" >&2; exit 1; }
  newport; PGPORT=$NEWPORT
  setsid "${as[@]}" "$PGBIN/postgres" -D "$RUN/pg/data" -c listen_addresses=127.0.0.1 \
    -c port="$PGPORT" -c unix_socket_directories="$RUN/pg" -c max_connections=100 \
    > "$RUN/postgres.log" 2>&1 &
  PIDS+=($!); PGPID=$!
  local base="postgres://airdock@127.0.0.1:$PGPORT"
  for _ in $(seq 300); do
    "$PGBIN/psql" "$base/postgres" -qAt -c "SELECT 1" >/dev/null 2>&1 && break
    kill -0 "$PGPID" 2>/dev/null || { echo "postgres exited:" >&2; tail -20 "$RUN/postgres.log" >&2; exit 1; }
    sleep 0.2
  done
  "$PGBIN/psql" "$base/postgres" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE airdock" || exit 1
  PGURL=$base/airdock
}
