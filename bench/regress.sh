#!/bin/bash
# bench/regress.sh --base PATH [--bin PATH] [--quick] [--out FILE] [--reps N] [--data-root DIR]
#                  [--wait-quiet SECONDS] [-- EXTRA airbench.py OPTIONS]
#
# Two airdock builds side by side on this machine, both on the filesystem backend: `--base`
# (an older binary, e.g. from before a refactor) and `--bin` (default: this tree's release
# build). Each starts on a free 127.0.0.1 port with an empty data dir; bench/run.sh's figures
# run against both interleaved (A,B then B,A ...), so load from other work falls on both alike.
# Writes a table per figure: base and new median, new/base, and whether the new build is
# within 5 % of the base (the "must not regress" bound of a refactor).
#
#   --quick         development run: 256 MiB blobs, 2 repetitions, 3 s load runs, 20,000 tags
#   --out FILE      the report (default target/bench/regress.md)
# Needs python3 wrk ab curl (Debian: apt-get install -y python3 wrk apache2-utils curl).
# Installs nothing; every server it starts is stopped by PID at exit.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
ROOT=$(cd "$HERE/.." && pwd)
CMDLINE="bench/regress.sh${*:+ $*}"
QUICK=0 BASE="" BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock OUT="" DATA_ROOT=/var/tmp REPS="" WAITQ=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift;;
    --base) BASE=$2; shift 2;;
    --bin) BIN=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --data-root) DATA_ROOT=$2; shift 2;;
    --wait-quiet) WAITQ=$2; shift 2;;
    --) shift; EXTRA=("$@"); break;;
    -h|--help) sed -n '2,16p' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
need_tools python3:python3 wrk:wrk ab:apache2-utils curl:curl
[ -n "$BASE" ] || { echo "--base PATH (the airdock binary to compare against) is required" >&2; exit 2; }
need_bin
NEW=$BIN
if [ ! -x "$BASE" ]; then echo "no airdock binary at $BASE" >&2; exit 2; fi
BASE=$(cd "$(dirname "$BASE")" && pwd)/$(basename "$BASE")

if [ "$QUICK" = 1 ]; then
  ARGS=(--reps "${REPS:-2}" --blob-mib 256 --dur 3 --tags-big 20000 --repos 2000
        --populate-seconds 40 --list-reps 2 --list-iters 3)
else
  ARGS=(--reps "${REPS:-4}" --blob-mib 1024 --dur 8 --tags-big 100000 --repos 10000
        --populate-seconds 150 --list-reps 4 --list-iters 5)
fi
[ -n "$OUT" ] || OUT=$ROOT/target/bench/regress.md
mkdir -p "$ROOT/target/bench" "$(dirname "$OUT")"
JSON=$ROOT/target/bench/regress-$(date +%Y%m%d-%H%M%S).json

[ "$WAITQ" -gt 0 ] && wait_quiet "$WAITQ"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$SECONDS
bench_rundir airdock-regress

start() {  # name binary → sets PORT_<name>, PID_<name>
  local port
  port=$(freeport)
  mkdir -p "$RUN/$1"
  # setsid: its own session, so a Ctrl-C of this script reaches it only through cleanup.
  setsid env -u RUST_LOG $(compgen -e | grep "^AIRDOCK_" | sed "s/^/-u /") "$2" serve \
    --addr "127.0.0.1:$port" --data-dir "$RUN/$1" > "$RUN/$1.log" 2>&1 &
  PIDS+=($!)
  wait_answer "http://127.0.0.1:$port/v2/" "$!" "$RUN/$1.log" || exit 1
  printf -v "PORT_$1" %s "$port"
  printf -v "PID_$1" %s "$!"
}
start base "$BASE"
start new "$NEW"
sleep 2
echo "== base $BASE (pid $PID_base) vs new $NEW (pid $PID_new); data in $RUN"
python3 "$HERE/lib/airbench.py" --out "$JSON" \
  --target "base=http://127.0.0.1:$PORT_base@$PID_base" --target "new=http://127.0.0.1:$PORT_new@$PID_new" \
  "${ARGS[@]}" "${EXTRA[@]}"
RC=$?
[ -s "$JSON" ] || { echo "no results written (exit $RC)" >&2; exit 1; }
PYTHONPATH="$HERE/lib" python3 "$HERE/lib/regress.py" --results "$JSON" --out "$OUT" \
  --command "$CMDLINE" --load "$LOAD_START → $(cut -d' ' -f1-3 /proc/loadavg)" \
  --elapsed "$((SECONDS - T0))" \
  --base "$("$BASE" --version 2>/dev/null | head -1) (sha256 $(sha256sum "$BASE" | cut -c1-12)…)" \
  --new "$("$NEW" --version 2>/dev/null | head -1) (sha256 $(sha256sum "$NEW" | cut -c1-12)…, git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))" || exit 1
echo "== wrote $OUT (raw: $JSON) in $((SECONDS - T0)) s"
exit $RC
