#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suites against airdock.
#
#   conformance/run.sh [path-to-airdock-binary]      (default: ./target/x86_64-unknown-linux-gnu/release/airdock)
#
# Each suite gets a fresh server on a free loopback port with its own temp
# data dir; the server is stopped by PID afterwards (also on error / Ctrl-C).
# See conformance/README.md for the suites, the switches and the env knobs.
# shellcheck disable=SC2317  # cleanup/suite functions are invoked indirectly (trap, run_bg)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

# Knobs (all optional).
suites=${CONFORMANCE_SUITES:-main sparse legacy auth-tls s3-main s3-sparse replicas}  # subset/order of: main sparse legacy auth-tls s3-main s3-sparse replicas
results_root=${CONFORMANCE_RESULTS_DIR:-$here/results}
bin_dir=${CONFORMANCE_BIN_DIR:-$here/bin}
suite_timeout=${CONFORMANCE_TIMEOUT:-900}          # seconds per suite run
log_level=${CONFORMANCE_LOG:-warn}                 # OCI_LOG for the main suite
filter=${CONFORMANCE_FILTER:-}                     # OCI_FILTER_TEST for the main suite
auto_crossmount=${CONFORMANCE_AUTOMATIC_CROSSMOUNT:-1}  # legacy OCI_AUTOMATIC_CROSSMOUNT
registry_cmd=${REGISTRY_CMD:-}                     # test-only: run this instead of airdock

die() { echo "run.sh: $*" >&2; exit 2; }

# Never let a caller's OCI_* settings leak into a run: every switch is set below.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^OCI_' || true)

for tool in go python3 curl timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

airdock=
if [[ -z $registry_cmd ]]; then
  airdock=${1:-$root/target/x86_64-unknown-linux-gnu/release/airdock}
  [[ $airdock == /* ]] || airdock=$PWD/$airdock
  [[ -x $airdock ]] || die "airdock binary not found at $airdock (cargo build --release, or pass a path)"
fi

mkdir -p "$results_root" "$bin_dir" || die "cannot create $results_root / $bin_dir"
results_root=$(cd "$results_root" && pwd)
bin_dir=$(cd "$bin_dir" && pwd)

# --- build the pinned suites (module proxy only, go.sum must be complete) ---
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local
suite_pkg=github.com/opencontainers/distribution-spec/conformance

pinned_commit() { # short commit of the pinned pseudo-version in module dir $1
  local v
  v=$(cd "$1" && go list -m -f '{{.Version}}' "$suite_pkg") || return 1
  echo "${v##*-}"
}

echo "== building conformance suites into $bin_dir"
main_commit=$(pinned_commit "$here/main") || die "cannot resolve pinned main suite"
legacy_commit=$(pinned_commit "$here/legacy") || die "cannot resolve pinned legacy suite"
(cd "$here/main" && go build -trimpath -ldflags "-X main.Version=$main_commit" \
  -o "$bin_dir/oci-conformance-main" "$suite_pkg") || die "building main suite failed"
(cd "$here/legacy" && go test -c -trimpath \
  -o "$bin_dir/oci-conformance-legacy.test" "$suite_pkg") || die "building legacy suite failed"
echo "   main suite @ $main_commit, legacy (Ginkgo) suite @ $legacy_commit"

# --- server lifecycle ---
server_pid=
server_data=
server_port=

stop_server() {
  [[ -n $server_pid ]] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "   server $server_pid ignored SIGTERM for 5s, sending SIGKILL" >&2
      kill -KILL "$server_pid" 2>/dev/null
    fi
  fi
  wait "$server_pid" 2>/dev/null
  server_pid=
  if [[ -n $server_data && ${CONFORMANCE_KEEP_DATA:-0} != 1 ]]; then
    rm -rf "$server_data"
  fi
  server_data=
}
# The S3 server of the s3-* runs: one versitygw for the whole script, on a free loopback
# port with its own temp dir; each airdock server gets its own key prefix in its bucket.
s3_pid=
s3_root=
s3_port=
use_s3=0  # set for the s3-* runs only
s3_prefix=  # when set, every server's key prefix (replicas share one); else one per server
s3_bin=${VERSITYGW:-$root/target/tools/bin/versitygw}
[[ -x $s3_bin ]] || s3_bin=versitygw
stop_s3() {
  [[ -n $s3_pid ]] || return 0
  kill -TERM "$s3_pid" 2>/dev/null
  wait "$s3_pid" 2>/dev/null
  s3_pid=
  [[ -n $s3_root ]] && rm -rf "$s3_root"
  s3_root=
}
start_s3() { # LOGFILE: starts versitygw once; sets s3_port
  [[ -n $s3_pid ]] && return 0
  command -v "$s3_bin" >/dev/null 2>&1 || { echo "   $s3_bin not found (scripts/install-deps.sh installs it)"; return 1; }
  s3_root=$(mktemp -d "${TMPDIR:-/tmp}/airdock-conformance-s3.XXXXXX") || return 1
  mkdir "$s3_root/airdock" || return 1
  s3_port=$(free_port) || return 1
  "$s3_bin" --port "127.0.0.1:$s3_port" --access conformance --secret conformance-secret \
    posix "$s3_root" >>"$1" 2>&1 &
  s3_pid=$!
  for _ in $(seq 1 200); do  # up to 20s
    kill -0 "$s3_pid" 2>/dev/null || { s3_pid=; echo "   versitygw exited at start"; return 1; }
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$s3_port/" && return 0
    sleep 0.1
  done
  echo "   versitygw did not answer in 20s"
  return 1
}

# --- the replica run: the main suite through nginx round-robin over two airdocks ---
# Two `airdock serve` processes (own ports and data dirs) on one versitygw bucket (one key
# prefix for both) and one PostgreSQL (CONFORMANCE_METADATA_URL, else a throw-away cluster
# started here), behind nginx (Debian nginx-light): every other request lands on the other
# replica. Not run (and not counted) with REGISTRY_CMD, which starts one registry of its own.
replica_pids=()
replica_dirs=()
nginx_pid=
nginx_dir=
pg_pid=
pg_dir=
metadata_url=
use_replicas=0  # set for the replicas run only

replicas_supported() {
  [[ -z $registry_cmd ]]
}

stop_postgres() {
  if [[ -n $pg_pid ]]; then
    kill -INT "$pg_pid" 2>/dev/null  # fast shutdown
    wait "$pg_pid" 2>/dev/null
    pg_pid=
  fi
  [[ -n $pg_dir ]] && rm -rf "$pg_dir"
  pg_dir=
}
start_postgres() { # LOGFILE: sets metadata_url
  [[ -n $metadata_url ]] && return 0
  if [[ -n ${CONFORMANCE_METADATA_URL:-} ]]; then
    metadata_url=$CONFORMANCE_METADATA_URL
    return 0
  fi
  local bindir port as=()
  bindir=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [[ -x $bindir/initdb ]] || { echo "   PostgreSQL not found (scripts/install-deps.sh installs it)"; return 1; }
  pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/airdock-conformance-pg.XXXXXX") || return 1
  if [[ $(id -u) == 0 ]]; then
    # initdb refuses to run as root; setpriv execs, so $! is the server's own PID.
    chown postgres: "$pg_dir" || return 1
    as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  "${as[@]}" "$bindir/initdb" -D "$pg_dir/data" -U airdock --auth=trust >>"$1" 2>&1 || return 1
  port=$(free_port) || return 1
  "${as[@]}" "$bindir/postgres" -D "$pg_dir/data" -p "$port" -k "$pg_dir" \
    -c listen_addresses=127.0.0.1 >>"$1" 2>&1 &
  pg_pid=$!
  for _ in $(seq 1 200); do  # up to 20s
    kill -0 "$pg_pid" 2>/dev/null || { pg_pid=; echo "   postgres exited at start"; return 1; }
    if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
      metadata_url="postgres://airdock@127.0.0.1:$port/postgres"
      return 0
    fi
    sleep 0.1
  done
  echo "   postgres did not answer in 20s"
  return 1
}

stop_replicas() {
  if [[ -n $nginx_pid ]]; then
    kill -QUIT "$nginx_pid" 2>/dev/null
    wait "$nginx_pid" 2>/dev/null
    nginx_pid=
  fi
  [[ -n $nginx_dir && ${CONFORMANCE_KEEP_DATA:-0} != 1 ]] && rm -rf "$nginx_dir"
  nginx_dir=
  local i
  for i in "${!replica_pids[@]}"; do
    server_pid=${replica_pids[$i]} server_data=${replica_dirs[$i]}
    stop_server
  done
  replica_pids=() replica_dirs=()
}

# start_replicas LOGFILE SPARSE: two replicas and nginx; sets server_port to nginx's.
start_replicas() {
  local log=$1 sparse=$2 i port upstreams=
  s3_prefix=replicas-$$-$RANDOM
  for i in 1 2; do
    start_server "$log" "$sparse" --metadata-url "$metadata_url" || { stop_replicas; return 1; }
    replica_pids+=("$server_pid") replica_dirs+=("$server_data")
    upstreams+="    server 127.0.0.1:$server_port max_fails=0;"$'\n'
    server_pid= server_data=
  done
  s3_prefix=
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] ||
    { echo "   nginx not found (scripts/install-deps.sh installs nginx-light)"; stop_replicas; return 1; }
  nginx_dir=$(mktemp -d "${TMPDIR:-/tmp}/airdock-conformance-nginx.XXXXXX") || return 1
  port=$(free_port) || return 1
  cat >"$nginx_dir/nginx.conf" <<CONF
daemon off;
master_process off;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/error.log info;
events { worker_connections 512; }
http {
  log_format lb '\$upstream_addr \$request_method \$request_uri \$status';
  access_log $nginx_dir/access.log lb;
  client_body_temp_path $nginx_dir/body;
  proxy_temp_path $nginx_dir/proxy;
  fastcgi_temp_path $nginx_dir/fastcgi;
  uwsgi_temp_path $nginx_dir/uwsgi;
  scgi_temp_path $nginx_dir/scgi;
  client_max_body_size 0;
  upstream airdock {
$upstreams    keepalive 16;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://airdock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
    }
  }
}
CONF
  PATH=$PATH:/usr/sbin nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log" \
    >>"$log" 2>&1 </dev/null &
  nginx_pid=$!
  for _ in $(seq 1 100); do  # up to 10s
    kill -0 "$nginx_pid" 2>/dev/null || break
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/v2/"; then
      server_port=$port
      echo "   nginx pid $nginx_pid on 127.0.0.1:$port round-robin over ${#replica_pids[@]} replicas (log $nginx_dir/access.log)"
      return 0
    fi
    sleep 0.1
  done
  echo "   nginx did not come up:" >&2
  tail -n 20 "$nginx_dir/error.log" 2>/dev/null | sed 's/^/     | /' >&2
  stop_replicas
  return 1
}

# run_replicas: the main suite (as run_main) through the balancer, or a clear notice.
run_replicas() {
  local label=conformance-replicas dir="$results_root/conformance-replicas" rc
  if ! replicas_supported; then
    echo "== $label: not run: REGISTRY_CMD starts one registry, not replicas of airdock"
    return 0
  fi
  # run_main starts $dir afresh: the services log beside it.
  local services="$results_root/$label.services.log"
  if ! start_s3 "$services" || ! start_postgres "$services"; then
    echo "$label: 0 passed, 1 failed, 0 skipped"
    mkdir -p "$dir" && echo "0 1 0" >"$dir/counts"
    return 1
  fi
  use_s3=1 use_replicas=1
  run_main "$label" 0
  rc=$?
  use_s3=0 use_replicas=0
  return "$rc"
}

# The registry a suite talks to: one server, or (the replicas run) nginx over two.
start_registry() { # LOGFILE SPARSE [EXTRA-ARG...]
  if [[ $use_replicas == 1 ]]; then
    start_replicas "$1" "$2"
  else
    start_server "$@"
  fi
}
stop_registry() {
  if [[ $use_replicas == 1 ]]; then
    stop_replicas
  else
    stop_server
  fi
}

suite_pid=
cleanup() {
  if [[ -n $suite_pid ]]; then
    kill -TERM "$suite_pid" 2>/dev/null
    wait "$suite_pid" 2>/dev/null
    suite_pid=
  fi
  stop_server
  stop_replicas
  stop_postgres
  stop_s3
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# run_bg LOGFILE CMD...: runs CMD in the background (so signals reach our trap
# at once) and waits for it; returns its exit status.
run_bg() {
  local log=$1 rc
  shift
  "$@" >"$log" 2>&1 &
  suite_pid=$!
  wait "$suite_pid"
  rc=$?
  suite_pid=
  return "$rc"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Extra `airdock serve` arguments and the probe's scheme/curl flags, set by the auth-tls run.
server_extra=()
probe_scheme=http
probe_flags=()

# start_server LOGFILE SPARSE(0|1) [EXTRA-ARG...]: sets server_pid / server_port / server_data
start_server() {
  local log=$1 sparse=$2 attempt code
  local extra=("${@:3}")
  for attempt in 1 2 3; do
    server_port=$(free_port) || return 1
    server_data=$(mktemp -d "${TMPDIR:-/tmp}/airdock-conformance.XXXXXX") || return 1
    if [[ -n $registry_cmd ]]; then
      CONF_ADDR=127.0.0.1:$server_port CONF_DATA_DIR=$server_data CONF_SPARSE=$sparse \
        $registry_cmd >>"$log" 2>&1 &
    else
      local args=(serve --addr "127.0.0.1:$server_port" --data-dir "$server_data")
      [[ $sparse == 1 ]] && args+=(--sparse)
      args+=("${extra[@]}")
      args+=("${server_extra[@]}")
      if [[ $use_s3 == 1 ]]; then
        # Blobs on S3: a prefix per server, so every run starts from an empty store.
        args+=(--storage s3 --s3-endpoint "http://127.0.0.1:$s3_port" --s3-bucket airdock
          --s3-prefix "${s3_prefix:-$(basename "$server_data")}")
      fi
      echo "+ $airdock ${args[*]}" >>"$log"
      AWS_ACCESS_KEY_ID=conformance AWS_SECRET_ACCESS_KEY=conformance-secret \
        "$airdock" "${args[@]}" >>"$log" 2>&1 &
    fi
    server_pid=$!
    for _ in $(seq 1 300); do  # up to 30s
      if ! kill -0 "$server_pid" 2>/dev/null; then
        break
      fi
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${probe_flags[@]}" \
        "$probe_scheme://localhost:$server_port/v2/" || true)
      if [[ $code != 000 ]]; then
        echo "   server pid $server_pid on 127.0.0.1:$server_port (GET /v2/ -> $code), data $server_data"
        return 0
      fi
      sleep 0.1
    done
    echo "   server did not come up (attempt $attempt); log tail:" >&2
    tail -n 20 "$log" | sed 's/^/     | /' >&2
    stop_server
  done
  return 1
}

# --- suite runs ---
overall_rc=0
tot_pass=0 tot_fail=0 tot_skip=0

# record RESULTS_DIR: adds the "P F S" that summarize.py wrote to RESULTS_DIR/counts
record() {
  local p f s
  if read -r p f s <"$1/counts" 2>/dev/null; then
    tot_pass=$((tot_pass + p)) tot_fail=$((tot_fail + f)) tot_skip=$((tot_skip + s))
  else
    tot_fail=$((tot_fail + 1))
  fi
}

run_main() { # LABEL SPARSE [AUTH_TLS_DIR]
  local label=$1 sparse=$2 auth_dir=${3:-} dir="$results_root/$1" rc sparse_bool=false
  [[ $sparse == 1 ]] && sparse_bool=true
  rm -rf "$dir" && mkdir -p "$dir"
  echo "== $label: main suite @ $main_commit (OCI_VERSION=dev, every API/data switch on, sparse=$sparse_bool)"
  if ! start_registry "$dir/server.log" "$sparse"; then
    echo "$label: 0 passed, 1 failed, 0 skipped"
    echo "0 1 0" >"$dir/counts"
    return 1
  fi
  main_suite() {
    cd "$dir" || exit 2
    export OCI_CONFIGURATION=/dev/null OCI_RESULTS_DIR="$dir" OCI_LOG="$log_level"
    export OCI_VERSION=dev OCI_REGISTRY="127.0.0.1:$server_port" OCI_TLS=disabled
    if [[ -n $auth_dir ]]; then
      # Over TLS with the lab CA (Go reads SSL_CERT_FILE) and with credentials: the suite
      # follows the Bearer challenge to airdock's token endpoint.
      export OCI_REGISTRY="localhost:$server_port" OCI_TLS=enabled SSL_CERT_FILE="$auth_dir/ca.crt"
      export OCI_USERNAME=conformance OCI_PASSWORD=conformance-pw
    fi
    export OCI_REPO1=conformance/repo1 OCI_REPO2=conformance/repo2
    export OCI_FILTER_TEST="$filter"
    for s in PING PULL PUSH REFERRER \
      BLOBS_ATOMIC BLOBS_DELETE BLOBS_DIGEST_HEADER BLOBS_MOUNT_ANONYMOUS BLOBS_UPLOAD_CANCEL \
      MANIFESTS_ATOMIC MANIFESTS_DELETE MANIFESTS_DIGEST_HEADER MANIFESTS_TAG_PARAM \
      TAGS_ATOMIC TAGS_DELETE TAGS_LIST; do
      export "OCI_API_$s=true"
    done
    for s in IMAGE INDEX INDEX_LIST ARTIFACT SUBJECT SUBJECT_MISSING ARTIFACT_LIST SUBJECT_LIST \
      DATA_FIELD NONDISTRIBUTABLE CUSTOM_FIELDS NO_LAYERS EMPTY_BLOB SHA512; do
      export "OCI_DATA_$s=true"
    done
    export OCI_DATA_SPARSE=$sparse_bool
    exec timeout -k 10 "$suite_timeout" "$bin_dir/oci-conformance-main"
  }
  run_bg "$dir/suite.log" main_suite
  rc=$?
  [[ $rc == 124 || $rc == 137 ]] && echo "   suite timed out after ${suite_timeout}s" | tee -a "$dir/suite.log"
  local spread=ok
  if [[ $use_replicas == 1 ]]; then
    cp "$nginx_dir/access.log" "$dir/nginx-access.log" 2>/dev/null
    round_robin_problem "$dir/nginx-access.log" >"$dir/round-robin.txt" || spread=bad
  fi
  stop_registry
  python3 "$here/summarize.py" main "$label" "$dir" "$rc" "$here/expected-skips.txt"
  rc=$?
  if [[ $use_replicas == 1 ]]; then
    sed 's/^/   /' "$dir/round-robin.txt"
    if [[ $spread != ok ]]; then
      # Counted as one more failed check: the run did not prove what it is for.
      local p f s
      read -r p f s <"$dir/counts" && echo "$p $((f + 1)) $s" >"$dir/counts"
      rc=1
    fi
  fi
  return "$rc"
}

# round_robin_problem ACCESS_LOG: the replicas run's proof that it spread over both replicas.
# The suite sends one request at a time, so nginx's strict round-robin (one worker) must send
# every request to the other replica than the one before: each line's upstream (the
# `$upstream_addr` field of the `lb` format) differs from the previous line's. A line whose
# upstream lists two addresses ("A, B") is a retry on the other replica after an error, which
# would hide a failure: refused too. A `-` upstream is a request nginx answered itself (none
# expected). Prints a one-line summary, or the problem; non-zero on a problem.
round_robin_problem() {
  awk -v want="${#replica_pids[@]}" '
    { n++ }
    $1 == "-" { local_ = local_ + 1; next }
    $1 ~ /,$/ { retried = retried + 1; if (!ex) ex = "retried: " $0; next }
    {
      seen[$1]++
      if (prev != "" && $1 == prev) { same++; if (!ex) ex = "line " n " went to the replica of the line before: " $0 }
      prev = $1
    }
    END {
      ups = 0; for (u in seen) { ups++; per = per (per == "" ? "" : ", ") u ": " seen[u] }
      if (n == 0) { print "round-robin: FAILED: nginx logged no request"; exit 1 }
      bad = (ups != want || same > 0 || retried > 0 || local_ > 0)
      printf "round-robin: %s: %d requests over %d replicas (%s), %d to the same replica as the one before, %d retried, %d answered by nginx\n",
        (bad ? "FAILED" : "ok"), n, ups, per, same, retried, local_
      if (ex) print "  first: " ex
      exit bad
    }' "$1"
}

run_legacy() { # LABEL
  local label=$1 dir="$results_root/$1" rc
  rm -rf "$dir" && mkdir -p "$dir"
  echo "== $label: Ginkgo suite @ $legacy_commit (pull, push, content discovery, content management, cross-mount)"
  # The 2023 suite deletes a layer that another manifest in the repository still
  # references and accepts only 202/404; airdock refuses that (405 DENIED) unless told to
  # behave like CNCF Distribution. The current suite (main) accepts the 405.
  if ! start_server "$dir/server.log" 0 --allow-referenced-blob-delete; then
    echo "$label: 0 passed, 1 failed, 0 skipped"
    echo "0 1 0" >"$dir/counts"
    return 1
  fi
  legacy_suite() {
    cd "$dir" || exit 2
    export OCI_ROOT_URL="http://127.0.0.1:$server_port"
    export OCI_NAMESPACE=conformance/legacy OCI_CROSSMOUNT_NAMESPACE=conformance/legacy-mount
    export OCI_TEST_PULL=1 OCI_TEST_PUSH=1 OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1
    export OCI_AUTOMATIC_CROSSMOUNT="$auto_crossmount"
    export OCI_HIDE_SKIPPED_WORKFLOWS=0 OCI_DEBUG=1 OCI_REPORT_DIR="$dir"
    exec timeout -k 10 "$suite_timeout" "$bin_dir/oci-conformance-legacy.test" \
      -ginkgo.v -ginkgo.no-color -test.timeout "${suite_timeout}s"
  }
  run_bg "$dir/suite.log" legacy_suite
  rc=$?
  [[ $rc == 124 || $rc == 137 ]] && echo "   suite timed out after ${suite_timeout}s" | tee -a "$dir/suite.log"
  stop_server
  python3 "$here/summarize.py" legacy "$label" "$dir" "$rc" "$here/expected-skips.txt"
}

# run_auth_tls: the main suite over TLS (CA from `airdock cert init`) with an htpasswd user.
run_auth_tls() {
  local label=conformance-main-auth-tls auth_dir rc
  auth_dir=$(mktemp -d "${TMPDIR:-/tmp}/airdock-conformance-auth.XXXXXX") || return 1
  if ! "$airdock" cert init --dir "$auth_dir" --host localhost --host 127.0.0.1 >"$auth_dir/cert-init.log" 2>&1 ||
    ! printf 'conformance-pw\n' | "$airdock" user add conformance --htpasswd "$auth_dir/htpasswd" >/dev/null; then
    echo "$label: 0 passed, 1 failed, 0 skipped"
    mkdir -p "$results_root/$label" && echo "0 1 0" >"$results_root/$label/counts"
    rm -rf "$auth_dir"
    return 1
  fi
  server_extra=(--tls-cert "$auth_dir/tls.crt" --tls-key "$auth_dir/tls.key" --htpasswd "$auth_dir/htpasswd")
  probe_scheme=https probe_flags=(--cacert "$auth_dir/ca.crt")
  run_main "$label" 0 "$auth_dir"
  rc=$?
  server_extra=() probe_scheme=http probe_flags=()
  rm -rf "$auth_dir"
  return "$rc"
}

for suite in $suites; do
  case $suite in
    main) run_main conformance-main 0 ;;
    auth-tls) run_auth_tls ;;
    sparse) run_main conformance-main-sparse 1 ;;
    legacy) run_legacy conformance-legacy ;;
    s3-main | s3-sparse)
      # The main suite again with blobs on S3 (versitygw), every switch on.
      mkdir -p "$results_root/conformance-$suite"
      if start_s3 "$results_root/conformance-$suite/s3.log"; then
        use_s3=1
        if [[ $suite == s3-main ]]; then
          run_main conformance-s3-main 0
        else
          run_main conformance-s3-sparse 1
        fi
        rc=$?
        use_s3=0
        (exit "$rc")
      else
        echo "conformance-$suite: 0 passed, 1 failed, 0 skipped"
        echo "0 1 0" >"$results_root/conformance-$suite/counts"
        false
      fi
      ;;
    replicas) run_replicas ;;
    *) die "unknown suite '$suite' (expected main, sparse, legacy, auth-tls, s3-main, s3-sparse, replicas)" ;;
  esac
  rc=$?
  [[ $rc == 0 ]] || overall_rc=1
  case $suite in
    main) record "$results_root/conformance-main" ;;
    sparse) record "$results_root/conformance-main-sparse" ;;
    legacy) record "$results_root/conformance-legacy" ;;
    auth-tls) record "$results_root/conformance-main-auth-tls" ;;
    s3-main | s3-sparse) record "$results_root/conformance-$suite" ;;
    replicas) replicas_supported && record "$results_root/conformance-replicas" ;;
  esac
done

echo "== results and reports: $results_root"
echo "conformance: $tot_pass passed, $tot_fail failed, $tot_skip skipped"
exit "$overall_rc"
