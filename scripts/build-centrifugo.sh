#!/usr/bin/env bash
# build-centrifugo.sh: builds the pinned Centrifugo that `make bench` compares wsgate's fan-out with,
# once, and caches it under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/centrifugo-v6.9.1/centrifugo
# The last line on stdout is the binary's absolute path; progress goes to stderr; the exit status
# is non-zero when the build fails. A warm run only checks the cached binary's version.
#
# Centrifugo's go.mod has no replace directives, so this is a plain `go build` of its main package
# in a throwaway module outside this repository (so wsgate's go.mod never sees Centrifugo's
# dependencies). Cold: a few minutes on two cores, most of it downloading modules.
set -euo pipefail

CENTRIFUGO_VERSION=v6.9.1

cache="${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/centrifugo-$CENTRIFUGO_VERSION"
bin="$cache/centrifugo"

log() { echo "build-centrifugo: $*" >&2; }

# Warm: the cached binary reports the pinned version.
if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "${CENTRIFUGO_VERSION#v}"; then
  echo "$bin"
  exit 0
fi

log "building Centrifugo $CENTRIFUGO_VERSION into $cache (cold: a few minutes)"
mkdir -p "$cache"
# Step 1: a throwaway build directory inside the cache dir, removed on exit whatever happens.
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

# Step 2: the throwaway module: it only requires Centrifugo at the pinned version. `tool` makes
# `go mod tidy` resolve the imports of Centrifugo's main package (the module root).
cat >go.mod <<MOD
module wsgate.local/centrifugo-build

go 1.26

require github.com/centrifugal/centrifugo/v6 $CENTRIFUGO_VERSION

tool github.com/centrifugal/centrifugo/v6
MOD

# Step 3: resolve the module graph and write go.sum (downloads the dependencies on a cold cache);
# Centrifugo's own go.sum pins what tidy picks, since its go.mod lists every module it needs.
log "go mod tidy"
nice -n 10 go mod tidy

# Step 4: build like Centrifugo's release: static, stamped with its version (`centrifugo version`).
log "go build"
CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$work/centrifugo" \
  -ldflags "-s -w -X github.com/centrifugal/centrifugo/v6/internal/build.Version=${CENTRIFUGO_VERSION#v}" \
  github.com/centrifugal/centrifugo/v6

# Step 5: move it into place atomically, so a concurrent or interrupted run never sees half a file.
mv "$work/centrifugo" "$bin.tmp.$$"
mv "$bin.tmp.$$" "$bin"
"$bin" version >&2
echo "$bin"
