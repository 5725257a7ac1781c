#!/usr/bin/env bash
# Build every cargo-fuzz target in fuzz/ and run each for a bounded time, as CI does:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# SECONDS_PER_TARGET defaults to $FUZZ_SECONDS, else 30 (11 targets: 6 minutes of fuzzing
# after a clean build of about 444 s of CPU, 4 minutes on 2 idle cores). Needs the nightly toolchain and
# cargo-fuzz (scripts/install-deps.sh installs cargo-fuzz).
#
# Each target starts from its corpus in fuzz/corpus/<target> (not committed; kept between
# runs so coverage accumulates), filled from the committed seeds in fuzz/seeds/<target> and
# from seeds generated here out of the repository's fixtures (tests/fixtures/imgpkg: tars,
# gzip of them, the manifests imgpkg pushed). A crashing input is saved under
# fuzz/artifacts/<target>/; reproduce it with
#   fuzz/target/<host>/release/<target> fuzz/artifacts/<target>/crash-...
# and turn it into a unit test beside the parser.
#
# The summary (per target: seconds, executions, result) goes to stdout and to
# target/fuzz-summary.md; the script exits non-zero if any target crashed, leaked past the
# memory limit, hung, or did not build.
#
# Environment:
#   FUZZ_SECONDS=N        seconds per target (the argument wins)
#   FUZZ_TARGETS="a b"    run only these targets
#   FUZZ_RSS_MB=N         libFuzzer's memory limit per target (default 2048)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

SECONDS_PER_TARGET=${1:-${FUZZ_SECONDS:-30}}
RSS_MB=${FUZZ_RSS_MB:-2048}
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
    echo "fuzz.sh: SECONDS_PER_TARGET must be a positive number, got '$SECONDS_PER_TARGET'" >&2
    exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing (scripts/install-deps.sh installs it)" >&2
    exit 1
fi

HOST=$(rustc +nightly -vV | sed -n 's/^host: //p')
BIN_DIR="$ROOT/fuzz/target/$HOST/release"
SUMMARY="$ROOT/target/fuzz-summary.md"
LOG_DIR="$ROOT/target/fuzz-logs"
mkdir -p "$LOG_DIR" "$ROOT/target"

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(cd fuzz && cargo fuzz list)
fi

# No sanitizer: the crates forbid `unsafe`, so ASan would find nothing a panic does not,
# at half the speed. cargo-fuzz keeps debug assertions and overflow checks on.
echo "==> building ${#TARGETS[@]} fuzz targets"
build_start=$SECONDS
if ! (cd fuzz && cargo +nightly fuzz build -s none 2>&1 | tee "$LOG_DIR/build.log"); then
    echo "fuzz.sh: the fuzz targets do not build (see $LOG_DIR/build.log)" >&2
    exit 1
fi
build_took=$((SECONDS - build_start))
echo "==> built in ${build_took}s"

FIX="$ROOT/tests/fixtures/imgpkg"

# seed TARGET DIR: committed seeds plus ones generated from the fixtures.
seed() {
    local t=$1 dir=$2 f n
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -f fuzz/seeds/"$t"/* "$dir"/
    fi
    case $t in
    tar_stream)
        cp -f "$FIX"/tars/*.tar "$dir"/
        ;;
    tar_header)
        for f in "$FIX"/tars/*.tar; do
            head -c 512 "$f" >"$dir/header-$(basename "$f")"
        done
        ;;
    gzip)
        # The first byte is the decoder's read chunk size.
        for f in "$FIX"/tars/*.tar; do
            n=$(basename "$f" .tar)
            { printf '\x03'; gzip -c -n "$f"; } >"$dir/$n.gz"
            { printf '\x10'; gzip -c -n "$f"; gzip -c -n "$f"; } >"$dir/$n.2members.gz"
            { printf '\x05'; gzip -c -n "$f"; head -c 700 /dev/zero; } >"$dir/$n.zero-padded.gz"
        done
        ;;
    manifest)
        # The first byte picks the Content-Type; whitespace keeps the JSON valid for the
        # `manifest.json` parser, which sees the whole input.
        for f in "$FIX"/expected/*/registry/manifest.*.json; do
            n=$(basename "$(dirname "$(dirname "$f")")")-$(basename "$f" | cut -c1-40)
            { printf '\n'; cat "$f"; } >"$dir/$n"
        done
        for f in "$FIX"/tars/*.tar; do
            { printf ' '; tar -xOf "$f" manifest.json; } >"$dir/imgpkg-$(basename "$f" .tar).json"
        done
        ;;
    imgpkg_lock)
        for f in "$FIX"/tars/*.tar; do
            n=$(basename "$f" .tar)
            # The bundle layer's images.yml, where the tar has one.
            tar -tf "$f" | grep '\.tar\.gz$' | while read -r layer; do
                tar -xOf "$f" "$layer" | tar -xzOf - .imgpkg/images.yml 2>/dev/null \
                    >"$dir/$n-images.yml" || rm -f "$dir/$n-images.yml"
                [[ -s "$dir/$n-images.yml" ]] && break
            done || true
        done
        ;;
    esac
}

declare -a ROWS=()
FAILED=0
for t in "${TARGETS[@]}"; do
    corpus="$ROOT/fuzz/corpus/$t"
    artifacts="$ROOT/fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    seed "$t" "$corpus"
    log="$LOG_DIR/$t.log"
    echo
    echo "==> $t: ${SECONDS_PER_TARGET}s, corpus $(find "$corpus" -type f | wc -l) files"
    extra=()
    # gzip inputs cost per read chunk (down to one byte); larger ones add little coverage
    # per second (the fixture .tar.gz files are 2-8 KiB).
    [[ $t == gzip ]] && extra=(-max_len=8192)
    start=$SECONDS
    status=0
    # -timeout: one input taking 10 s is a hang; the outer timeout catches a wedged process.
    timeout --kill-after=10 $((SECONDS_PER_TARGET + 120)) \
        "$BIN_DIR/$t" "$corpus" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb="$RSS_MB" \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "${extra[@]}" \
        >"$log" 2>&1 || status=$?
    took=$((SECONDS - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    execs=${execs:-0}
    if ((status == 0)); then
        result="ok"
    else
        result="FAILED (exit $status; $(ls "$artifacts" | head -n 1))"
        FAILED=1
        tail -n 40 "$log"
    fi
    echo "    $t: $result, $execs executions in ${took}s"
    ROWS+=("| \`$t\` | $took | $execs | $(find "$corpus" -type f | wc -l) | $result |")
done

{
    echo "Fuzzing run of $(date -u +%Y-%m-%d) at $(git rev-parse --short HEAD 2>/dev/null || echo '?'):"
    echo "build ${build_took}s, ${SECONDS_PER_TARGET}s per target, -rss_limit_mb=$RSS_MB."
    echo
    echo "| target | seconds | executions | corpus files | result |"
    echo "|---|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
} >"$SUMMARY"
echo
cat "$SUMMARY"
echo "(logs: $LOG_DIR)"
if ((FAILED != 0)); then
    echo "fuzz.sh: FAILED: a target crashed; the input is in fuzz/artifacts/<target>/" >&2
    exit 1
fi
