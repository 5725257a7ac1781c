#!/bin/bash
# bench/profile.sh FIGURE [--bin PATH] [--reps N] [--out DIR] [-- EXTRA airbench.py OPTIONS]
#
# CPU profile of airdock alone during one figure of bench/run.sh: starts airdock on a free
# 127.0.0.1 port with an empty temp data dir, attaches `perf record -g` to its PID, runs the
# figure (bench/lib/airbench.py --figures FIGURE) against it, and prints the top of
# `perf report --stdio` (also saved in DIR, default target/bench/profile-FIGURE-<time>/).
# FIGURE: push_mono push_chunked pull manifest_get manifest_head manifest_put layers listing
# Needs perf (Debian: linux-perf), python3, wrk, ab, curl. Builds and installs nothing.
# airdock is stopped by PID and its data dir removed at exit.
# The release profile strips symbols (the image must stay small); for readable stacks build
# with them first: CARGO_PROFILE_RELEASE_DEBUG=1 CARGO_PROFILE_RELEASE_STRIP=false cargo build --release
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
FIG=$1; shift
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock REPS=2 OUTDIR="" EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --out) OUTDIR=$2; shift 2;;
    --) shift; EXTRA=("$@"); break;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
for t in perf python3 wrk ab curl; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y linux-perf python3 wrk apache2-utils curl)" >&2; exit 127; }
done
[ -x "$BIN" ] || { echo "no airdock binary at $BIN (cargo build --release)" >&2; exit 2; }
[ -n "$OUTDIR" ] || OUTDIR=$ROOT/target/bench/profile-$FIG-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUTDIR"
RUN=$(mktemp -d /var/tmp/airdock-profile.XXXXXX) || exit 1
APID="" PPID_=""
cleanup() {
  [ -n "$PPID_" ] && kill -INT "$PPID_" 2>/dev/null
  if [ -n "$APID" ]; then
    kill -TERM "$APID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$APID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$APID" 2>/dev/null
  fi
  python3 "$HERE/lib/rmtree.py" "$RUN" 2>/dev/null; rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
setsid env -u RUST_LOG $(compgen -e | grep "^AIRDOCK_" | sed "s/^/-u /") "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$RUN/data" > "$OUTDIR/airdock.log" 2>&1 &
APID=$!
for _ in $(seq 150); do
  [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/v2/")" = 200 ] && break; sleep 0.2
done
perf record --call-graph dwarf,16384 -F 250 -p "$APID" -o "$OUTDIR/perf.data" > "$OUTDIR/perf-record.log" 2>&1 &
PPID_=$!
sleep 1
python3 "$HERE/lib/airbench.py" --out "$OUTDIR/run.json" --target "airdock=http://127.0.0.1:$PORT@$APID" \
  --figures "$FIG" --reps "$REPS" "${EXTRA[@]}"
kill -INT "$PPID_"; wait "$PPID_" 2>/dev/null; PPID_=""
# self time per symbol; then the same with children (inclusive) to see which callers own it
perf report -i "$OUTDIR/perf.data" --stdio --no-children -g none --sort dso,symbol --percent-limit 0.5 2>/dev/null \
  | grep '%' | cut -c1-160 > "$OUTDIR/report-self.txt"
perf report -i "$OUTDIR/perf.data" --stdio --children -g none --sort symbol --percent-limit 3 2>/dev/null \
  | grep '%' | cut -c1-160 > "$OUTDIR/report-children.txt"
perf report -i "$OUTDIR/perf.data" --stdio --no-children -G --percent-limit 2 2>/dev/null > "$OUTDIR/report-graph.txt"
echo "== self time (top 40):"; head -40 "$OUTDIR/report-self.txt"
echo "== inclusive time (top 40):"; head -40 "$OUTDIR/report-children.txt"
echo "== profile in $OUTDIR (report-graph.txt has the call graphs)"
