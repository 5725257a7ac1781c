#!/bin/bash
# bench/replica.sh [--quick] [--bin PATH] [--out FILE] [--data-root DIR] [--blob-mib N] [--reps N]
#                  [--tags N] [--populate-seconds S] [--replica-populate-seconds S]
#                  [--dist-populate-seconds S] [--dur S] [--wait-quiet S]
#
# One airdock replica with its metadata in PostgreSQL and its blobs on S3 (issue 12) side by
# side, in the same run, with: airdock single node (local disk, the default), airdock single
# node on S3 (no database), and Distribution 2.8 with its `s3` driver; every S3 user on one
# versitygw (a bucket each), PostgreSQL started here (initdb into the run's temp dir, as the
# `postgres` account when root, fsync on). Figures (lib/airbench.py, the order of the four
# alternating by repetition): blob push monolithic, blob GET, manifest GET by tag (64
# connections, and one connection), manifest PUT; then (lib/replicabench.py) the database round
# trip itself (pgbench: `SELECT 1` and the catch-up query, as sent and prepared), catch-up
# rounds per manifest GET under load, and the tag page at --tags tags for the single node, the
# replica and Distribution (populated as bench/s3.sh does). Ratios: the replica ÷ each.
# Writes bench/replica-results.md (default) and target/bench/replica-<time>.json.
#
#   --quick            smoke run (~2 min): 16 MiB blobs, 1 rep, 2 s load runs, 2,000 tags;
#                      writes target/bench/replica-results-quick.md
#   --bin PATH         airdock binary (default target/x86_64-unknown-linux-gnu/release/airdock)
#   --blob-mib N       blob size (default 64)
#   --reps N           repetitions of the blob and manifest figures (default 3)
#   --tags N           tags of the listed repository (default 100000)
#   --populate-seconds bound of the single node's tag population through its API (default 300)
#   --replica-populate-seconds  bound of the replica's (default 60; the rest committed as rows of
#                      its journal table, which it applies at its next catch-up)
#   --dist-populate-seconds  bound of Distribution's (default 30; the rest written into its bucket)
#   --dur S            seconds per wrk run (default 5)
# Needs python3 wrk curl docker-registry postgresql and versitygw (scripts/install-deps.sh).
# Every process it starts is stopped by PID at exit and its temp dir (under --data-root,
# default /var/tmp) removed.
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
ROOT=$(cd "$HERE/.." && pwd)
CMDLINE="bench/replica.sh${*:+ $*}"
QUICK=0 BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/airdock OUT="" DATA_ROOT=/var/tmp WAITQ=0
MIB="" REPS="" TAGS="" POPS="" RPOPS="" DPOPS="" DUR=""
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
    --replica-populate-seconds) RPOPS=$2; shift 2;;
    --dist-populate-seconds) DPOPS=$2; shift 2;;
    --dur) DUR=$2; shift 2;;
    --wait-quiet) WAITQ=$2; shift 2;;
    -h|--help) sed -n '2,31p' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
need_tools python3:python3 wrk:wrk curl:curl docker-registry:docker-registry
need_bin
if [ "$QUICK" = 1 ]; then
  : "${MIB:=16}" "${REPS:=1}" "${TAGS:=2000}" "${POPS:=20}" "${RPOPS:=10}" "${DPOPS:=5}" "${DUR:=2}"
  [ -n "$OUT" ] || OUT=$ROOT/target/bench/replica-results-quick.md
else
  : "${MIB:=64}" "${REPS:=3}" "${TAGS:=100000}" "${POPS:=300}" "${RPOPS:=60}" "${DPOPS:=30}" "${DUR:=5}"
  [ -n "$OUT" ] || OUT=$HERE/replica-results.md
fi
mkdir -p "$ROOT/target/bench" "$(dirname "$OUT")" "$DATA_ROOT"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
JSON=$ROOT/target/bench/replica-$(date +%Y%m%d-%H%M%S).json

[ "$WAITQ" -gt 0 ] && wait_quiet "$WAITQ"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)

bench_rundir airdock-replicabench

# --- PostgreSQL, the S3 server (a bucket per S3 user), the four registries
start_postgres
start_versitygw single-s3 replica distribution
start_distribution_s3 distribution
S3FLAGS=(--storage s3 --s3-endpoint "http://127.0.0.1:$SPORT")
start_airdock single; SINGLE="single=http://127.0.0.1:$APORT@$APID"
start_airdock single-s3 "${S3FLAGS[@]}" --s3-bucket single-s3; ONS3="s3=http://127.0.0.1:$APORT@$APID"
start_airdock replica "${S3FLAGS[@]}" --s3-bucket replica --metadata-url "$PGURL"
REPLICA="replica=http://127.0.0.1:$APORT@$APID"
sleep 1
echo "== single $SINGLE, s3 $ONS3, replica $REPLICA, distribution :$DPORT@$DPID; versitygw :$SPORT@$SPID, postgres :$PGPORT@$PGPID; data in $RUN"

TARGETS=(--target "$SINGLE" --target "$ONS3" --target "$REPLICA"
         --target "distribution=http://127.0.0.1:$DPORT@$DPID")
python3 "$HERE/lib/airbench.py" --out "$JSON.blob" "${TARGETS[@]}" --helper "s3=$SPID" --helper "pg=$PGPID" \
  --figures push_mono,pull,manifest_get,manifest_get_1,manifest_put \
  --reps "$REPS" --blob-mib "$MIB" --dur "$DUR"
RC1=$?

META=$(python3 - <<PY
import json, sys
sys.path.insert(0, "$HERE/lib")
import airbench
m = airbench.machine()
print(json.dumps({
  "command": "$CMDLINE", "started": "$(date -d @"$T0" '+%Y-%m-%d %H:%M:%S %z')", "t0": $T0,
  "airdock": "$("$BIN" --version 2>/dev/null | head -1) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))",
  "distribution": "$(docker-registry --version 2>/dev/null | head -1)",
  "s3": "versitygw ${S3VER:-(version unknown)}",
  "postgres": "$("$PGBIN/postgres" --version 2>/dev/null | head -1)",
  "fs": "$(findmnt -n -T "$RUN" -o SOURCE,FSTYPE 2>/dev/null | head -1)",
  "nproc": m["nproc"], "cpu": m["cpu_model"], "mem": m["mem_total_gib"],
  "load_start": "$LOAD_START"}))
PY
)
PYTHONPATH="$HERE/lib" python3 "$HERE/lib/replicabench.py" "${TARGETS[@]}" --s3-pid "$SPID" \
  --pg-pid "$PGPID" --pg-url "$PGURL" --pg-bin "$PGBIN" --dist-bucket-dir "$RUN/s3/distribution" \
  --airbench "$JSON.blob" --tags "$TAGS" --populate-seconds "$POPS" --replica-populate-seconds "$RPOPS" --dist-populate-seconds "$DPOPS" \
  --dur "$DUR" --out "$OUT" --json "$JSON" --meta "$META"
RC2=$?
rm -f "$JSON.blob"
echo "== wrote $OUT (raw: $JSON) in $(( $(date +%s) - T0 )) s"
[ "$RC1" = 0 ] && exit "$RC2"
exit "$RC1"
