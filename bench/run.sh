#!/bin/bash
# bench/run.sh [--quick] [--bin PATH] [--out FILE] [--json FILE] [--data-root DIR]
#              [--reps N] [--no-ceilings] [--wait-quiet SECONDS] [-- EXTRA airbench.py OPTIONS]
#
# airdock and CNCF Distribution (Debian's docker-registry 2.8) side by side on this machine:
# starts both on free 127.0.0.1 ports with empty data dirs in one temp dir, runs every figure
# against both interleaved (A,B then B,A ...), and writes BENCHMARKS.md (machine, command,
# min/median per figure, ratios airdock/Distribution, the targets of issue 4 met or not).
#
#   --quick         development run (< 4 min): 256 MiB blobs, 2 repetitions, 3 s load runs,
#                   20,000 tags and 2,000 repositories; its numbers are not the published ones
#   --bin PATH      airdock binary (default target/x86_64-unknown-linux-gnu/release/airdock; this script builds nothing)
#   --out FILE      the report (default BENCHMARKS.md; --quick: target/bench/BENCHMARKS-quick.md)
#   --json FILE     raw results (default target/bench/run-<time>.json)
#   --data-root DIR where the temp data dir is made (default /var/tmp); removed at exit
#   --reps N        repetitions of the per-operation figures (default 4, quick 2)
#   --no-ceilings   skip the machine ceilings (sha256, disk, fsync, loopback) measured first
#   --wait-quiet S  before starting, wait up to S seconds for the 1-minute load to drop below 0.5
# Needs: python3 wrk ab curl docker-registry (Debian: apt-get install -y python3 wrk
# apache2-utils curl docker-registry). Installs nothing. Every server it starts is stopped
# by PID at exit; everything listens on 127.0.0.1 only.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
ROOT=$(cd "$HERE/.." && pwd)
CMDLINE="bench/run.sh${*:+ $*}"
QUICK=0 BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock OUT="" JSON="" DATA_ROOT=/var/tmp REPS="" CEIL=1 WAITQ=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift;;
    --bin) BIN=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --json) JSON=$2; shift 2;;
    --data-root) DATA_ROOT=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --no-ceilings) CEIL=0; shift;;
    --wait-quiet) WAITQ=$2; shift 2;;
    --) shift; EXTRA=("$@"); break;;
    -h|--help) sed -n '2,22p' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done

missing=()
for t in python3:python3 wrk:wrk ab:apache2-utils curl:curl docker-registry:docker-registry; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools; install them with:  apt-get install -y ${missing[*]}" >&2
  exit 127
fi
if [ ! -x "$BIN" ]; then
  echo "no airdock binary at $BIN; build it first:  cargo build --release  (or pass --bin PATH)" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if [ "$QUICK" = 1 ]; then
  ARGS=(--reps "${REPS:-2}" --blob-mib 256 --dur 3 --tags-big 20000 --repos 2000
        --populate-seconds 40 --list-reps 2 --list-iters 3)
  [ -n "$OUT" ] || OUT=$ROOT/target/bench/BENCHMARKS-quick.md
else
  ARGS=(--reps "${REPS:-4}" --blob-mib 1024 --dur 8 --tags-big 100000 --repos 10000
        --populate-seconds 150 --list-reps 4 --list-iters 5)
  [ -n "$OUT" ] || OUT=$ROOT/BENCHMARKS.md
fi
mkdir -p "$ROOT/target/bench"
[ -n "$JSON" ] || JSON=$ROOT/target/bench/run-$(date +%Y%m%d-%H%M%S).json

[ "$WAITQ" -gt 0 ] && wait_quiet "$WAITQ"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$SECONDS

mkdir -p "$DATA_ROOT"
RUN=$(mktemp -d "${DATA_ROOT%/}/airdock-bench.XXXXXX") || exit 1
PIDS=()
cleanup() {
  local c0=$SECONDS
  stop_pids "${PIDS[@]:-}"
  local c1=$SECONDS
  python3 "$HERE/lib/rmtree.py" "$RUN" 2>/dev/null   # parallel unlinks; rm -rf takes minutes here
  rm -rf "$RUN"
  echo "== servers stopped in $((c1 - c0)) s, data dir removed in $((SECONDS - c1)) s" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# --- machine description (data dir filesystem and its device)
FS=$(findmnt -n -T "$RUN" -o SOURCE,FSTYPE,OPTIONS 2>/dev/null | head -1)
DEV=$(findmnt -n -T "$RUN" -o SOURCE 2>/dev/null | head -1)
DEVINFO=$(lsblk -dn -o NAME,MODEL,ROTA,SIZE "$DEV" 2>/dev/null | tr -s ' ' || true)
DFREE=$(df -h --output=avail "$RUN" | tail -1 | tr -d ' ')
AIRDOCK_VERSION=$("$BIN" --version 2>/dev/null | head -1)
AIRDOCK_SHA=$(sha256sum "$BIN" | cut -c1-12)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src storage Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+uncommitted changes in src/storage"
DIST_VERSION=$(docker-registry --version 2>/dev/null | head -1)

# --- ceilings first, with no registry running
CEIL_JSON=$RUN/ceilings.json
if [ "$CEIL" = 1 ]; then
  echo "== machine ceilings (sha256, disk, fsync, loopback) in $RUN/ceil"
  if [ "$QUICK" = 1 ]; then CMIB=256; else CMIB=1024; fi
  python3 "$HERE/lib/ceilings.py" --dir "$RUN/ceil" --mib "$CMIB" --out "$CEIL_JSON" || echo "ceilings failed (continuing)" >&2
  rm -rf "$RUN/ceil"
fi

# --- the two registries
DPORT=$(freeport); APORT=$(freeport)
while [ "$APORT" = "$DPORT" ]; do APORT=$(freeport); done
mkdir -p "$RUN/distribution" "$RUN/airdock"
{
  echo "# written by bench/run.sh: filesystem storage, delete enabled, loopback only"
  distribution_yml "$DPORT" "  filesystem:
    rootdirectory: $RUN/distribution"
} > "$RUN/distribution.yml"
# setsid: each server in its own session, so a Ctrl-C of this script does not reach it
# before cleanup; in a non-interactive shell setsid execs, so $! is the server's PID.
setsid docker-registry serve "$RUN/distribution.yml" > "$RUN/distribution.log" 2>&1 &
PIDS+=($!); DPID=$!
setsid env -u RUST_LOG $(compgen -e | grep "^AIRDOCK_" | sed "s/^/-u /") "$BIN" serve --addr "127.0.0.1:$APORT" --data-dir "$RUN/airdock" > "$RUN/airdock.log" 2>&1 &
PIDS+=($!); APID=$!
wait_answer "http://127.0.0.1:$DPORT/v2/" "$DPID" "$RUN/distribution.log" || exit 1
wait_answer "http://127.0.0.1:$APORT/v2/" "$APID" "$RUN/airdock.log" || exit 1
sleep 2   # let both settle before the idle RSS is read
echo "== airdock $BIN (pid $APID, port $APORT) vs $DIST_VERSION (pid $DPID, port $DPORT); data in $RUN"

python3 "$HERE/lib/airbench.py" --out "$JSON" \
  --target "airdock=http://127.0.0.1:$APORT@$APID" --target "distribution=http://127.0.0.1:$DPORT@$DPID" \
  "${ARGS[@]}" "${EXTRA[@]}"
RC=$?
[ -s "$JSON" ] || { echo "no results written (exit $RC)" >&2; exit 1; }

python3 "$HERE/lib/report.py" --results "$JSON" ${CEIL:+--ceilings "$CEIL_JSON"} --out "$OUT" \
  --command "$CMDLINE" --load-start "$LOAD_START" --load-end "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --elapsed "$((SECONDS - T0))" --fs "$FS" --device "$DEVINFO" --disk-free "$DFREE" \
  --airdock "$AIRDOCK_VERSION (binary sha256 $AIRDOCK_SHA…, git $GIT_REV)" --distribution "$DIST_VERSION" \
  --quick "$QUICK" || exit 1
echo "== wrote $OUT (raw: $JSON) in $((SECONDS - T0)) s"
exit $RC
