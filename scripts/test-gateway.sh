#!/usr/bin/env bash
# test-gateway.sh: the gateway suite (e2e/traefik): a real Traefik v3.7.13 configured from
# deploy/traefik in front of a real wsgate configured from deploy/base, Go clients and headless
# Chromium in front, a recording upstream behind. Safe on a fresh machine and idempotent: the
# same browser setup as scripts/test-js.sh (Debian chromium, `npm ci` in clients/js when its lock
# file changed), Traefik built once and cached by scripts/build-traefik.sh (cold: minutes), wsgate
# built into a temporary directory (set WSGATE_BIN to test a binary you built yourself).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
js="$root/clients/js"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "test-gateway: installing Debian chromium"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# npm ci when the installed tree does not match the committed lock file (the stamp test-js.sh keeps).
stamp="$js/node_modules/.wsgate-lock.sha256"
want="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "test-gateway: npm ci"
  (cd "$js" && npm ci --no-audit --no-fund)
  echo "$want" >"$stamp"
fi

TRAEFIK_BIN="$("$root/scripts/build-traefik.sh" | tail -n 1)"
export TRAEFIK_BIN
echo "test-gateway: $("$TRAEFIK_BIN" version | awk '/Version:/ {print "traefik " $2}') ($TRAEFIK_BIN)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -z "${WSGATE_BIN:-}" ]; then
  (cd "$root" && go build -o "$tmp/wsgate" ./cmd/wsgate)
  WSGATE_BIN="$tmp/wsgate"
fi
export WSGATE_BIN

cd "$root"
go test -race -count=1 -timeout 10m ./e2e/traefik
