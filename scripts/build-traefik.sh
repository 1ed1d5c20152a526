#!/usr/bin/env bash
# build-traefik.sh: builds the pinned Traefik that the gateway suite (e2e/traefik) and the
# benchmarks run, once, and caches it under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/traefik-v3.7.13/traefik
# The last line on stdout is the binary's absolute path; progress goes to stderr; the exit status
# is non-zero when the build fails. A warm run only checks the cached binary's version.
#
# `go install github.com/traefik/traefik/v3/cmd/traefik@v3.7.13` is refused ("contains replace
# directives"), so the build happens in a throwaway module outside this repository that requires
# Traefik and copies its replace directives, with three fixes for what the Go module proxy does
# not serve (each step below says which). Cold, with empty Go module and build caches: 21 minutes of
# CPU (30 of wall time on two busy cores), ~430 modules downloaded; with the Go build cache warm,
# about a minute.
set -euo pipefail

TRAEFIK_VERSION=v3.7.13
# lego/v5 as pinned by Traefik v3.7.13's go.mod.
LEGO_VERSION=v5.4.1
# Traefik pins github.com/containous/go-http-auth v0.4.1-0.20260804094822-b975dcaa8c48, which the
# proxy does not serve; this older pseudo-version of the same fork has the API Traefik calls.
GO_HTTP_AUTH_FORK=v0.4.1-0.20200324110947-a37a7636d23e
# lego DNS providers whose SDK modules the proxy does not serve (403 "not available").
# ACME DNS challenges through these providers are missing from this build; nothing here uses ACME.
UNSERVED_LEGO_PROVIDERS=(edgedns huaweicloud oraclecloud sakuracloud ucloud yandexcloud)

cache="${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/traefik-$TRAEFIK_VERSION"
bin="$cache/traefik"

log() { echo "build-traefik: $*" >&2; }

# Warm: the cached binary reports the pinned version. (Its output is read whole first: `grep -q`
# would stop reading at the match, and the writer's SIGPIPE would fail the pipeline.)
if [ -x "$bin" ] && [[ "$("$bin" version 2>/dev/null)" =~ Version:\ +${TRAEFIK_VERSION#v}($'\n'|$) ]]; then
  echo "$bin"
  exit 0
fi

log "building Traefik $TRAEFIK_VERSION into $cache (cold: up to half an hour on two cores)"
mkdir -p "$cache"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

# Step 1: download Traefik's module and lego's, so their sources can be read and copied.
modcache="$(go env GOMODCACHE)"
go mod download "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" "github.com/go-acme/lego/v5@$LEGO_VERSION"
traefik_src="$modcache/github.com/traefik/traefik/v3@$TRAEFIK_VERSION"
lego_src="$modcache/github.com/go-acme/lego/v5@$LEGO_VERSION"

# Step 2: a stand-in for github.com/traefik/traefik/dynamic/ext. Traefik's go.mod replaces it with
# ./pkg/config/dynamic/ext, a nested module that the release's module zip leaves out. Traefik embeds
# its two types, both empty in the open-source build (they are extension points for Traefik Hub).
mkdir ext
cat >ext/go.mod <<'EOF'
module github.com/traefik/traefik/dynamic/ext

go 1.26.0
EOF
cat >ext/ext.go <<'EOF'
// Package ext stands in for Traefik's nested dynamic/ext module, absent from its module zip.
package ext

// HTTP is embedded in dynamic.HTTPConfiguration; empty in open-source Traefik.
type HTTP struct{}

// Router is embedded in dynamic.Router; empty in open-source Traefik.
type Router struct{}
EOF

# Step 3: a writable copy of lego without the providers whose SDKs are not served: delete their
# packages, and their import and `case` lines in the generated provider switch, so
# NewDNSChallengeProviderByName answers "unrecognized DNS provider" for them.
cp -R "$lego_src" lego
chmod -R u+w lego
gen=lego/providers/dns/zz_gen_dns_providers.go
for p in "${UNSERVED_LEGO_PROVIDERS[@]}"; do
  rm -rf "lego/providers/dns/$p"
  # The import line, then the `case "...":` line directly above `return p.NewDNSProvider()`.
  awk -v p="$p" '
    $0 == "\t\"github.com/go-acme/lego/v5/providers/dns/" p "\"" { next }
    held != "" { if ($0 == "\t\treturn " p ".NewDNSProvider()") { held = ""; next } print held; held = "" }
    /^\tcase / { held = $0; next }
    { print }
    END { if (held != "") print held }
  ' "$gen" >"$gen.new"
  mv "$gen.new" "$gen"
  if grep -q -e "providers/dns/$p\"" -e "return $p\.NewDNSProvider" "$gen"; then
    log "could not remove lego provider $p from $gen"
    exit 1
  fi
done

# Step 4: the throwaway module. It requires Traefik, copies Traefik's replace and exclude directives
# (a dependency's replaces do not apply to the module that requires it), and points the three
# unserved pieces at the local fixes above. `tool` makes `go mod tidy` resolve cmd/traefik's imports.
cat >go.mod <<EOF
module wsgate.local/traefik-build

go 1.26.0

require github.com/traefik/traefik/v3 $TRAEFIK_VERSION

tool github.com/traefik/traefik/v3/cmd/traefik

// Traefik: ./pkg/config/dynamic/ext, not in the module zip (step 2).
replace github.com/traefik/traefik/dynamic/ext => ./ext

// Traefik's Containous forks; go-http-auth at a served pseudo-version.
replace (
	github.com/abbot/go-http-auth => github.com/containous/go-http-auth $GO_HTTP_AUTH_FORK
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)

// lego without the unserved DNS providers (step 3).
replace github.com/go-acme/lego/v5 => ./lego

// Imported by Traefik's dependencies but provided by no module in its graph: pinned here, at the
// versions resolved when this script was written, so that tidy does not pick whatever is newest.
require (
	github.com/bytedance/gopkg v0.1.4
	github.com/bytedance/sonic/loader v0.5.3
	github.com/cloudwego/base64x v0.1.7
	github.com/twitchyliquid64/golang-asm v0.15.1
)

// Copied from Traefik: tencentcloud's monorepo makes this version an ambiguous import.
exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
EOF
grep -q 'gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59' "$traefik_src/go.mod" || {
  log "Traefik's go.mod no longer pins the containous/mux fork copied here; update this script"
  exit 1
}

# Step 5: resolve the module graph and write go.sum (downloads most of the modules on a cold cache).
log "go mod tidy"
nice -n 10 go mod tidy

# Step 6: build like Traefik's release: static, stamped with its version (`traefik version`).
log "go build cmd/traefik"
CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$work/traefik" \
  -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION#v}" \
  github.com/traefik/traefik/v3/cmd/traefik

# Step 7: move it into place atomically, so a concurrent or interrupted run never sees half a file.
mv "$work/traefik" "$bin.tmp.$$"
mv "$bin.tmp.$$" "$bin"
"$bin" version >&2
echo "$bin"
