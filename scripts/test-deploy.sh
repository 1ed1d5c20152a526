#!/usr/bin/env bash
# test-deploy.sh: offline checks of the Kubernetes delivery (tools/deploycheck): the Dockerfile
# and .dockerignore, the Helm chart (lint --strict, every ci/*-values.yaml rendered for Kubernetes
# 1.31 and strictly decoded, bad values refused, the sidecar host example), the kustomize manifests
# in deploy/, and `wsgate validate` on every config they carry. No cluster, no Docker, no network
# beyond the Go module proxy.
#
# Safe on a fresh machine and idempotent: it installs the pinned helm with `go install` when the
# one in $(go env GOPATH)/bin is missing or a different version, and builds wsgate into a temporary
# directory (set WSGATE_BIN to test a binary you built yourself).
set -euo pipefail

HELM_VERSION=v3.22.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
  gobin="$(go env GOPATH)/bin"
fi
export PATH="$gobin:$PATH"

# A go-installed helm reports only "v3.22" itself; the module version in its build info is exact.
installed="$(go version -m "$gobin/helm" 2>/dev/null | awk '$1 == "mod" && $2 == "helm.sh/helm/v3" {print $3}' || true)"
if [ "$installed" != "$HELM_VERSION" ]; then
  echo "test-deploy: installing helm $HELM_VERSION (go install, a few minutes)"
  GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
echo "test-deploy: helm $HELM_VERSION ($(command -v helm))"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -z "${WSGATE_BIN:-}" ]; then
  # Same compile flags as `make build`, so TestMakeBuild reuses the build cache.
  CGO_ENABLED=0 go build -trimpath -o "$tmp/wsgate" ./cmd/wsgate
  WSGATE_BIN="$tmp/wsgate"
fi
# Absolute, because the tests run from tools/deploycheck.
WSGATE_BIN="$(cd "$(dirname "$WSGATE_BIN")" && pwd)/$(basename "$WSGATE_BIN")"
export WSGATE_BIN
echo "test-deploy: $("$WSGATE_BIN" version)"

cd tools/deploycheck
unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
  echo "test-deploy: gofmt needed: $unformatted" >&2
  exit 1
fi
go vet ./...
go test -count=1 ./...
