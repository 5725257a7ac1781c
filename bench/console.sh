#!/bin/bash
# bench/console.sh [--bin PATH] [--repos N] [--tags N] [--big-tags N] [--reps N] [--out FILE]
#                  [--wait-quiet SECONDS]
#
# The web console's render benchmark (issue 13): one airdock with authentication (an admin,
# and a user who may pull lab/* only), populated through the registry API to 10,000
# repositories and 100,000 tags (default; one repository of 10,000 tags, the rest spread
# over the others, one in a hundred repositories with an imgpkg bundle), then every console
# page fetched --reps times signed in: first, median, p95 and max time per page, and its
# weight (HTML + the scripts and stylesheets it loads). Targets: p95 < 50 ms, < 150 KB.
# Prints a table; writes the raw figures to target/bench/console-<time>.json and the
# table to --out (default target/bench/console-results.md). Exits 1 if a page misses.
# Needs: python3 curl. The server is stopped by PID at exit.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
ROOT=$(cd "$HERE/.." && pwd)
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock
OUT=$ROOT/target/bench/console-results.md
REPOS=10000 TAGS=100000 BIG=10000 REPS=20 WAITQ=0
CMDLINE="bench/console.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --repos) REPOS=$2; shift 2;;
    --tags) TAGS=$2; shift 2;;
    --big-tags) BIG=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --wait-quiet) WAITQ=$2; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
for t in python3 curl; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y python3 curl)" >&2; exit 127; }
done
[ -x "$BIN" ] || { echo "no airdock binary at $BIN; cargo build --release first" >&2; exit 2; }
[ "$WAITQ" -gt 0 ] && wait_quiet "$WAITQ"

RUN=$(mktemp -d /var/tmp/airdock-console.XXXXXX) || exit 1
PID=
cleanup() {
  stop_pids "$PID"
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASS=bench-$(od -An -tx4 -N4 /dev/urandom | tr -d ' ')
for u in admin viewer; do
  printf '%s\n' "$PASS" | "$BIN" user add --htpasswd "$RUN/htpasswd" --cost 5 "$u" >/dev/null || exit 1
done
cat > "$RUN/config.yaml" <<YAML
auth:
  htpasswd: $RUN/htpasswd
  admins: [admin]
access:
  - repos: ["**"]
    users: [admin]
    allow: [pull, push, delete]
  - repos: ["lab/*"]
    users: [viewer]
    allow: [pull]
YAML
PORT=$(freeport)
mkdir -p "$RUN/data" "$ROOT/target/bench"
setsid env -u RUST_LOG $(compgen -e | grep "^AIRDOCK_" | sed "s/^/-u /") "$BIN" serve \
  --addr "127.0.0.1:$PORT" --data-dir "$RUN/data" --config "$RUN/config.yaml" > "$RUN/airdock.log" 2>&1 &
PID=$!
for _ in $(seq 150); do
  kill -0 "$PID" 2>/dev/null || { echo "airdock exited:" >&2; tail -20 "$RUN/airdock.log" >&2; exit 1; }
  [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/v2/")" != 000 ] && break
  sleep 0.2
done

JSON=$ROOT/target/bench/console-$(date +%Y%m%d-%H%M%S).json
python3 "$HERE/lib/consolebench.py" --port "$PORT" --admin "admin:$PASS" --viewer "viewer:$PASS" \
  --repos "$REPOS" --tags "$TAGS" --big-tags "$BIG" --reps "$REPS" --json "$JSON"
STATUS=$?
[ -s "$JSON" ] || exit 1
python3 - "$JSON" "$CMDLINE" "$(nproc)" "$(grep VmHWM /proc/$PID/status | awk '{print $2}')" > "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("Produced by `%s`: %d repositories, %d tags (one repository of %d), %d CPUs shared by client and server, "
      "population %.0f s through the registry API, server peak RSS %s KiB; %d GETs per page, signed in."
      % (sys.argv[2], r["repos"], r["tags"], r["big_tags"], int(sys.argv[3]), r["populate_s"], sys.argv[4], r["reps"]))
print()
print("| page | viewer | first ms | median ms | p95 ms | HTML bytes | + script and style | p95 < 50 ms, < 150 KB |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for p in r["pages"]:
    print("| %s | %s | %.1f | %.1f | %.1f | %d | %d | %s |" % (p["page"], p["who"], p["first_ms"], p["median_ms"],
          p["p95_ms"], p["html_bytes"], p["asset_bytes"], "yes" if p["ok"] else "**no**"))
PY
cat "$OUT"
exit $STATUS
