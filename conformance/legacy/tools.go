//go:build tools

// Package legacy only pins the Ginkgo-era OCI conformance suite so that
// `go test -c github.com/opencontainers/distribution-spec/conformance`
// can be built from this module. It is never compiled on its own.
package legacy

import _ "github.com/opencontainers/distribution-spec/conformance"
