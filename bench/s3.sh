#!/bin/bash
# bench/s3.sh [--quick] [--bin PATH] [--out FILE] [--data-root DIR] [--blob-mib N] [--reps N]
#             [--tags N] [--populate-seconds S] [--dist-populate-seconds S] [--dur S] [--wait-quiet S]
#
# airdock on S3 side by side with CNCF Distribution 2.8's `s3` driver, both on one versitygw
# (S3 server over a directory, one bucket each) on 127.0.0.1 (issue 11): blob push monolithic
# and in 16 MiB chunks, blob GET (through the registry), manifest GET and PUT (airbench.py,
# interleaved A,B / B,A), then the tag page at --tags tags (lib/s3bench.py: populated through
# each registry's API, airdock's bounded to --populate-seconds, Distribution's to
# --dist-populate-seconds, which measures its rate; the tags Distribution did not reach are
# written into its bucket directly as copies of a tag it wrote, said so in the results).
# Writes bench/s3-results.md (default) and target/bench/s3-<time>.json.
#
#   --quick            smoke run (~1 min): 16 MiB blobs, 1 rep, 2 s load runs, 2,000 tags;
#                      writes target/bench/s3-results-quick.md
#   --bin PATH         airdock binary (default target/x86_64-unknown-linux-gnu/release/airdock)
#   --blob-mib N       blob size (default 256: Distribution pushes 256 MiB in about a minute here)
#   --reps N           repetitions of the blob and manifest figures (default 3)
#   --tags N           tags of the listed repository (default 100000)
#   --populate-seconds bound of airdock's tag population through its API (default 300)
#   --dist-populate-seconds  bound of Distribution's (default 60; the rest written directly)
#   --dur S            seconds per wrk run (default 5)
# Needs python3 wrk curl docker-registry and versitygw ($VERSITYGW, else target/tools/bin, else
# PATH; scripts/install-deps.sh installs it). Every process it starts is stopped by PID at exit
# and its temp dir (under --data-root, default /var/tmp) removed.
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1   # lib/s3bench.py imports airbench and report: no __pycache__ in bench/lib
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
ROOT=$(cd "$HERE/.." && pwd)
CMDLINE="bench/s3.sh${*:+ $*}"
QUICK=0 BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock OUT="" DATA_ROOT=/var/tmp WAITQ=0
MIB="" REPS="" TAGS="" POPS="" DPOPS="" DUR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift;;
    --bin) BIN=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --data-root) DATA_ROOT=$2; shift 2;;
    --blob-mib) MIB=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --tags) TAGS=$2; shift 2;;
    --populate-seconds) POPS=$2; shift 2;;
    --dist-populate-seconds) DPOPS=$2; shift 2;;
    --dur) DUR=$2; shift 2;;
    --wait-quiet) WAITQ=$2; shift 2;;
    -h|--help) sed -n '2,25p' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
need_tools python3:python3 wrk:wrk curl:curl docker-registry:docker-registry
need_bin
if [ "$QUICK" = 1 ]; then
  : "${MIB:=16}" "${REPS:=1}" "${TAGS:=2000}" "${POPS:=20}" "${DPOPS:=5}" "${DUR:=2}"
  [ -n "$OUT" ] || OUT=$ROOT/target/bench/s3-results-quick.md
else
  : "${MIB:=256}" "${REPS:=3}" "${TAGS:=100000}" "${POPS:=300}" "${DPOPS:=60}" "${DUR:=5}"
  [ -n "$OUT" ] || OUT=$HERE/s3-results.md
fi
mkdir -p "$ROOT/target/bench" "$(dirname "$OUT")" "$DATA_ROOT"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
JSON=$ROOT/target/bench/s3-$(date +%Y%m%d-%H%M%S).json

[ "$WAITQ" -gt 0 ] && wait_quiet "$WAITQ"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)

bench_rundir airdock-s3bench

# --- the S3 server (a bucket per registry) and the two registries
start_versitygw airdock distribution
start_distribution_s3 distribution
start_airdock airdock --storage s3 --s3-endpoint "http://127.0.0.1:$SPORT" --s3-bucket airdock
sleep 1
echo "== airdock (pid $APID, port $APORT) vs Distribution (pid $DPID, port $DPORT) on versitygw (pid $SPID, port $SPORT); data in $RUN"

cpu_of() { python3 -c "import sys; sys.path.insert(0, '$HERE/lib'); import airbench; print(airbench.proc_cpu_s($1))"; }
T1=(--target "airdock=http://127.0.0.1:$APORT@$APID" --target "distribution=http://127.0.0.1:$DPORT@$DPID")
S3C0=$(cpu_of "$SPID")
python3 "$HERE/lib/airbench.py" --out "$JSON.blob" "${T1[@]}" --helper "s3=$SPID" \
  --figures push_mono,push_chunked,pull,manifest_get,manifest_put \
  --reps "$REPS" --blob-mib "$MIB" --chunk-mib 16 --dur "$DUR"
RC1=$?
S3C1=$(cpu_of "$SPID")

META=$(python3 - "$RUN" <<PY
import json, os, sys
sys.path.insert(0, "$HERE/lib")
import airbench
m = airbench.machine()
print(json.dumps({
  "command": "$CMDLINE", "started": "$(date -d @"$T0" '+%Y-%m-%d %H:%M:%S %z')", "t0": $T0,
  "airdock": "$("$BIN" --version 2>/dev/null | head -1) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))",
  "distribution": "$(docker-registry --version 2>/dev/null | head -1)",
  "s3": "versitygw ${S3VER:-(version unknown)}",
  "fs": "$(findmnt -n -T "$RUN" -o SOURCE,FSTYPE 2>/dev/null | head -1)",
  "nproc": m["nproc"], "cpu": m["cpu_model"], "mem": m["mem_total_gib"],
  "load_start": "$LOAD_START", "s3_cpu_blob": $S3C1 - $S3C0}))
PY
)
PYTHONPATH="$HERE/lib" python3 "$HERE/lib/s3bench.py" "${T1[@]}" --s3-pid "$SPID" \
  --dist-bucket-dir "$RUN/s3/distribution" --airbench "$JSON.blob" --tags "$TAGS" \
  --populate-seconds "$POPS" --dist-populate-seconds "$DPOPS" --out "$OUT" --json "$JSON" --meta "$META"
RC2=$?
rm -f "$JSON.blob"
echo "== wrote $OUT (raw: $JSON) in $(( $(date +%s) - T0 )) s"
[ "$RC1" = 0 ] && exit "$RC2"
exit "$RC1"
