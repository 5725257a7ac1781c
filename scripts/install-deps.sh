#!/usr/bin/env bash
# Install everything airdock's tests need on Debian (bookworm), as root.
#
#   scripts/install-deps.sh
#
# Idempotent: when every tool is already present, apt is not touched.
# Rust (cargo, rustfmt, clippy) is expected to be installed already.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian package that provides each command the tests run.
declare -A PACKAGE_FOR=(
    [skopeo]=skopeo   # tests/it/skopeo.rs: push/pull multi-platform images
    [gzip]=gzip       # tests/it/skopeo.rs: compresses the test layers
    [tar]=tar         # tests/it/skopeo.rs: checks the test layers
    [curl]=curl       # conformance/run.sh: readiness probes
    [python3]=python3 # conformance/run.sh: free ports, summaries
    [nginx]=nginx-light # tests/it/nginx.rs: TLS proxy (proxy.rs), round-robin over replicas (cluster.rs, balancer.rs, lb_clients.rs, conformance/run.sh)
    [fusermount3]=fuse3 # tests/it/powerloss.rs: FUSE mounts when not root (root uses mount(2))
    [chromium]=chromium # tests/it/console.rs: the web console in a headless browser
    [npm]=npm           # tests/browser: installs playwright-core (node comes with it)
)

missing=()
for cmd in "${!PACKAGE_FOR[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${PACKAGE_FOR[$cmd]}")
    fi
done

# Debian package that provides each Python module the tests import (with /usr/bin/python3).
declare -A PY_PACKAGE_FOR=(
    [requests]=python3-requests # tests/it/connections.rs: refusals as Python clients see them
)
for module in "${!PY_PACKAGE_FOR[@]}"; do
    if ! /usr/bin/python3 -c "import $module" >/dev/null 2>&1; then
        missing+=("${PY_PACKAGE_FOR[$module]}")
    fi
done

# PostgreSQL's server (storage/src/pgtest.rs: the metadata tests start their own, `initdb` into a
# temp dir and `postgres` on a free loopback port, as the `postgres` account the package creates
# when the tests run as root). Debian keeps the binaries off the PATH, in
# /usr/lib/postgresql/<version>/bin.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi

if ((${#missing[@]} == 0)); then
    echo "install-deps: all test dependencies present (${!PACKAGE_FOR[*]})"
else
    echo "install-deps: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "install-deps: need root to install: ${missing[*]}" >&2
            exit 1
        fi
    else
        SUDO=()
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Rust toolchain cannot be fetched here (only package registries are
# reachable), so just check it is complete.
for tool in cargo rustfmt cargo-clippy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-deps: \`$tool\` is missing; install the Rust toolchain with rustfmt and clippy" >&2
        exit 1
    fi
done

# scripts/fuzz.sh: cargo-fuzz (from crates.io) on the nightly toolchain (libFuzzer needs
# nightly's sanitizer-coverage flags). Pinned so CI builds the same tool every time.
CARGO_FUZZ_VERSION=0.13.2
if ! command -v rustup >/dev/null 2>&1; then
    echo "install-deps: rustup is missing; the fuzz targets need it for the nightly toolchain" >&2
    exit 1
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "install-deps: installing the nightly toolchain (for scripts/fuzz.sh)"
    rustup toolchain install nightly --profile minimal
fi
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# versitygw: the real S3-compatible server the S3 tests start on loopback (storage-s3/,
# tests/it/s3.rs, the S3 conformance run). Pinned; built with `go install` from the Go module
# proxy into target/tools/bin (or $AIRDOCK_TOOLS_BIN), where the tests look; rebuilt only
# when missing or of another version (~1.5 min).
VERSITYGW_MODULE=github.com/versity/versitygw/cmd/versitygw
VERSITYGW_VERSION=v1.8.0
TOOLS_BIN=${AIRDOCK_TOOLS_BIN:-$PWD/target/tools/bin}
GO=$(command -v go || true)
if [[ -z $GO && -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
fi
if [[ -z $GO ]]; then
    echo "install-deps: \`go\` is missing; it is needed to build versitygw" >&2
    exit 1
fi
mkdir -p "$TOOLS_BIN"
have=""
if [[ -x $TOOLS_BIN/versitygw ]]; then
    have=$("$GO" version -m "$TOOLS_BIN/versitygw" 2>/dev/null |
        awk '$1 == "mod" { print $3; exit }' || true)
fi
if [[ $have != "$VERSITYGW_VERSION" ]]; then
    echo "install-deps: go install $VERSITYGW_MODULE@$VERSITYGW_VERSION"
    # -mod=mod: its go.mod needs updating to build outside its own repository.
    GOBIN=$TOOLS_BIN GOFLAGS=-mod=mod GOTOOLCHAIN=local \
        "$GO" install "$VERSITYGW_MODULE@$VERSITYGW_VERSION"
fi
echo "versitygw $("$GO" version -m "$TOOLS_BIN/versitygw" | awk '$1 == "mod" { print $3; exit }')"

# tests/browser: playwright-core from npm, pinned by its lockfile, driving Debian's chromium
# (no browser download). Skipped when the installed copy is the locked version.
want=$(node -p "require('./tests/browser/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [[ "$want" != "$have" ]]; then
    echo "install-deps: installing playwright-core $want in tests/browser"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

# The real-client tests (tests/it/clients/) have their own installer:
# docker, containerd, podman via apt; crane, oras, crictl via `go install`.
if [[ -f scripts/install-clients.sh ]]; then
    bash scripts/install-clients.sh
fi

# The conformance suite (owned by conformance/) may bring its own installer.
if [[ -f conformance/install-deps.sh ]]; then
    bash conformance/install-deps.sh
fi

skopeo --version
