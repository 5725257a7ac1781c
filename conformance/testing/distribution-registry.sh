#!/usr/bin/env bash
# Test-only stand-in for airdock: runs Debian's docker-registry (CNCF
# Distribution 2.8) with the same inputs run.sh gives airdock, so the runner
# itself can be exercised before airdock serves. Distribution 2.8 fails many
# checks (no referrers, no sha512, ...): that is expected.
#
#   apt-get install -y docker-registry
#   REGISTRY_CMD=conformance/testing/distribution-registry.sh conformance/run.sh
#
# run.sh exports CONF_ADDR (127.0.0.1:PORT), CONF_DATA_DIR and CONF_SPARSE (0/1).
# This script must exec the server so that run.sh can stop it by its PID.
set -euo pipefail

: "${CONF_ADDR:?}" "${CONF_DATA_DIR:?}"
bin=${DOCKER_REGISTRY_BIN:-$(command -v docker-registry || true)}
if [[ -z $bin ]]; then
  echo "docker-registry not found (apt-get install -y docker-registry)" >&2
  exit 127
fi

mkdir -p "$CONF_DATA_DIR/storage"
cat >"$CONF_DATA_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $CONF_DATA_DIR/storage
  delete:
    enabled: true
http:
  addr: $CONF_ADDR
EOF
# --sparse has no equivalent in Distribution; CONF_SPARSE is ignored.
exec "$bin" serve "$CONF_DATA_DIR/config.yml"
