#!/usr/bin/env bash
# Install the real registry clients that tests/it/clients/ drives, on Debian
# (bookworm), as root:
#
#   scripts/install-clients.sh
#
# - Debian packages: docker.io (dockerd + docker CLI), containerd (+ ctr),
#   runc, podman, skopeo, iproute2 (`ip`, for the namespaced docker TLS test);
# - Go tools, pinned, built with `go install` from the Go module proxy into
#   target/tools/bin (project-local, nothing global): crane, oras, crictl.
#
# Idempotent: apt is not touched when every command is present, and a Go
# tool is rebuilt only when its binary is missing or of another version.
#
# Environment:
#   AIRDOCK_TOOLS_BIN=DIR   where the Go tools go (default target/tools/bin;
#                           the tests look there too)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# ---------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------

# Command -> Debian package that provides it.
declare -A PACKAGE_FOR=(
    [dockerd]=docker.io     # tests/it/clients/docker.rs
    [containerd]=containerd # tests/it/clients/containerd.rs
    [ctr]=containerd        # tests/it/clients/containerd.rs
    [runc]=runc             # runtime for dockerd/containerd (never run here)
    [podman]=podman         # tests/it/clients/podman.rs
    [skopeo]=skopeo         # tests/it/clients/skopeo_sync.rs
    [tar]=tar               # docker-archive/rootfs tarballs
    [ip]=iproute2           # tests/it/clients/netns.rs (a namespace per docker TLS test)
)

missing=()
for cmd in "${!PACKAGE_FOR[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${PACKAGE_FOR[$cmd]}")
    fi
done
# A docker CLI elsewhere on PATH is fine, but dockerd must come with one.
if command -v dockerd >/dev/null 2>&1 && ! command -v docker >/dev/null 2>&1; then
    missing+=(docker.io)
fi

if ((${#missing[@]} == 0)); then
    echo "install-clients: Debian clients present"
else
    # De-duplicate.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "install-clients: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "install-clients: need root to install: ${missing[*]}" >&2
            exit 1
        fi
    else
        SUDO=()
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The packages' services are started by the tests themselves, each with
    # its own sockets and directories; do not let the maintainer scripts
    # start the system-wide ones (there may be no init system at all).
    policy_rc=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy_rc ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy_rc" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy_rc"
        made_policy=1
    fi
    status=0
    {
        "${SUDO[@]}" apt-get update -q &&
            "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || status=$?
    if ((made_policy)); then
        "${SUDO[@]}" rm -f "$policy_rc"
    fi
    if ((status != 0)); then
        echo "install-clients: apt-get failed ($status)" >&2
        exit "$status"
    fi
fi

# ---------------------------------------------------------------------------
# Go tools (pinned)
# ---------------------------------------------------------------------------

TOOLS_BIN=${AIRDOCK_TOOLS_BIN:-$ROOT/target/tools/bin}
mkdir -p "$TOOLS_BIN"

GO=$(command -v go || true)
if [[ -z $GO && -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
fi
if [[ -z $GO ]]; then
    echo "install-clients: \`go\` is missing; it is needed to build crane, oras and crictl" >&2
    exit 1
fi

# binary name -> module path@version (the module's main package).
declare -A GO_TOOL=(
    [crane]=github.com/google/go-containerregistry/cmd/crane@v0.22.1
    [oras]=oras.land/oras/cmd/oras@v1.3.6
    [crictl]=sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
)

for bin in "${!GO_TOOL[@]}"; do
    spec=${GO_TOOL[$bin]}
    want=${spec##*@}
    have=""
    if [[ -x $TOOLS_BIN/$bin ]]; then
        # `go version -m` reads the module version embedded by `go install`.
        have=$("$GO" version -m "$TOOLS_BIN/$bin" 2>/dev/null |
            awk '$1 == "mod" { print $3; exit }' || true)
    fi
    if [[ $have == "$want" ]]; then
        continue
    fi
    echo "install-clients: go install $spec"
    GOBIN=$TOOLS_BIN CGO_ENABLED=0 GOTOOLCHAIN=local \
        "$GO" install "$spec"
done

# imgpkg (tests/it/imgpkg_tools.rs, imgpkg_clients.rs). `go install carvel.dev/...@v`
# fails here: the checksum database has no entry for carvel.dev. The module itself is
# served, so fetch it (GONOSUMDB: go.sum inside the module still pins its dependencies)
# and build it from a writable copy without its vendor directory.
IMGPKG_VERSION=v0.43.1
if ! { [[ -x $TOOLS_BIN/imgpkg ]] && "$TOOLS_BIN/imgpkg" version 2>/dev/null | grep -q "${IMGPKG_VERSION#v}"; }; then
    echo "install-clients: building carvel.dev/imgpkg@$IMGPKG_VERSION"
    dir=$(GOFLAGS=-mod=mod GONOSUMDB=carvel.dev GOTOOLCHAIN=local \
        "$GO" mod download -json "carvel.dev/imgpkg@$IMGPKG_VERSION" |
        sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [[ -n $dir ]] || { echo "install-clients: could not download imgpkg" >&2; exit 1; }
    src=$(mktemp -d)
    cp -r "$dir/." "$src"
    chmod -R u+w "$src"
    rm -rf "$src/vendor"
    (cd "$src" && GOFLAGS=-mod=mod GONOSUMDB=carvel.dev GOTOOLCHAIN=local CGO_ENABLED=0 \
        "$GO" build -o "$TOOLS_BIN/imgpkg" \
        -ldflags "-X carvel.dev/imgpkg/pkg/imgpkg/cmd.Version=${IMGPKG_VERSION#v}" ./cmd/imgpkg)
    rm -rf "$src"
fi

echo "install-clients: versions"
# tests/it/clients/docker.rs prefers Debian's CLI, the one paired with dockerd.
if [[ -x /usr/bin/docker ]]; then /usr/bin/docker --version; else docker --version; fi
dockerd --version
containerd --version
ctr --version
podman --version
skopeo --version
"$TOOLS_BIN/imgpkg" version
for bin in crane oras crictl; do
    # The module version `go install` embedded (crictl prints none itself).
    echo "$bin $("$GO" version -m "$TOOLS_BIN/$bin" | awk '$1 == "mod" { print $2 "@" $3; exit }')"
done
