#!/usr/bin/env bash
# Run every check and test of airdock, as CI does:
#
#   scripts/test.sh
#
# 1. install test dependencies (scripts/install-deps.sh; needs root or sudo
#    the first time, a no-op afterwards)
# 2. cargo fmt --check, cargo clippy -D warnings
# 3. cargo build --release
# 4. cargo test --workspace --no-fail-fast (unit and integration tests, incl. skopeo;
#    every test binary runs even when an earlier one failed)
# 5. conformance/run.sh against the release binary (when present)
# 6. scripts/fuzz.sh: every fuzz target for FUZZ_SECONDS (default 30) each
#
# Every step runs even when an earlier one failed (except that tests need a
# build); the script ends with a summary and exits non-zero on any failure.
#
# Environment:
#   AIRDOCK_SKIP_INSTALL=1   do not run scripts/install-deps.sh
#   TEST_TIMEOUT=SECONDS     limit for `cargo test` (default 1500)
#   CONFORMANCE_TOTAL_TIMEOUT=SECONDS
#                            limit for all of conformance/run.sh (default 1800;
#                            its own per-suite knobs are in conformance/README.md)
#   FUZZ_SECONDS=SECONDS     per fuzz target (default 30; 0 skips fuzzing)
#   FUZZ_TOTAL_TIMEOUT=SECONDS
#                            limit for all of scripts/fuzz.sh, build included
#                            (default 1200)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# cargo may not be on PATH in a non-login shell.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

LOG_DIR="$ROOT/target/test-logs"
mkdir -p "$LOG_DIR"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

declare -a STEP_NAMES=() STEP_RESULTS=()
FAILED=0

# run_step NAME LOGFILE CMD...: run CMD, echo its output and keep a copy.
run_step() {
    local name=$1 log=$2
    shift 2
    local start=$SECONDS status=0
    echo
    echo "==> $name: $*"
    "$@" 2>&1 | tee "$LOG_DIR/$log" || status=$?
    local took=$((SECONDS - start))
    STEP_NAMES+=("$name")
    if ((status == 0)); then
        STEP_RESULTS+=("ok (${took}s)")
    else
        STEP_RESULTS+=("FAILED, exit $status (${took}s)")
        FAILED=1
    fi
    return "$status"
}

skip_step() {
    STEP_NAMES+=("$1")
    STEP_RESULTS+=("skipped: $2")
}

if [[ "${AIRDOCK_SKIP_INSTALL:-0}" == 1 ]]; then
    skip_step "install-deps" "AIRDOCK_SKIP_INSTALL=1"
else
    run_step "install-deps" install-deps.log bash scripts/install-deps.sh || true
fi

run_step "fmt" fmt.log cargo fmt --all -- --check || true
run_step "clippy" clippy.log cargo clippy --workspace --all-targets -- -D warnings || true

BUILD_OK=1
run_step "build" build.log cargo build --release || BUILD_OK=0

run_step "test" test.log \
    timeout --kill-after=30 "${TEST_TIMEOUT:-1500}" cargo test --workspace --no-fail-fast || true

if [[ ! -f conformance/run.sh ]]; then
    skip_step "conformance" "conformance/run.sh not present"
elif ((BUILD_OK == 0)); then
    skip_step "conformance" "release build failed"
    FAILED=1
else
    run_step "conformance" conformance.log \
        timeout --kill-after=30 "${CONFORMANCE_TOTAL_TIMEOUT:-1800}" \
        bash conformance/run.sh target/x86_64-unknown-linux-gnu/release/airdock || true
fi

# Fuzzing needs nightly; it builds its own target dir (fuzz/target), so it runs after the
# stable steps and does not disturb their cache.
if [[ "${FUZZ_SECONDS:-30}" == 0 ]]; then
    skip_step "fuzz" "FUZZ_SECONDS=0"
else
    run_step "fuzz" fuzz.log \
        timeout --kill-after=30 "${FUZZ_TOTAL_TIMEOUT:-1200}" \
        bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}" || true
fi

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

# Add up cargo's "test result: ok. N passed; N failed; N ignored; ..." lines.
passed=0 failed=0 ignored=0 suites=0
while read -r p f i; do
    passed=$((passed + p))
    failed=$((failed + f))
    ignored=$((ignored + i))
    suites=$((suites + 1))
done < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored;.*/\1 \2 \3/p' \
    "$LOG_DIR/test.log" 2>/dev/null || true)

# Conformance may close with its own "N passed, N failed[, N skipped]" line.
conf_line=""
if [[ -f "$LOG_DIR/conformance.log" ]]; then
    conf_line=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' \
        "$LOG_DIR/conformance.log" | tail -n 1 || true)
fi

echo
echo "==================== summary ===================="
for i in "${!STEP_NAMES[@]}"; do
    printf '  %-14s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
done
echo "  cargo test:    $passed passed, $failed failed, $ignored ignored ($suites test binaries)"
if [[ -n "$conf_line" ]]; then
    echo "  conformance:   ${conf_line#*: }"
    read -r cp cf cs < <(echo "${conf_line#*: }" |
        sed -nE 's/^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$/\1 \2 \4/p')
    passed=$((passed + ${cp:-0}))
    failed=$((failed + ${cf:-0}))
    ignored=$((ignored + ${cs:-0}))
fi
echo "  logs:          $LOG_DIR"
echo "================================================="
if ((FAILED != 0)); then
    echo "RESULT: FAILED (see the steps above)"
    echo "total: $passed passed, $failed failed, $ignored skipped"
    exit 1
fi
echo "RESULT: OK"
echo "total: $passed passed, $failed failed, $ignored skipped"
