#!/usr/bin/env bash
# test-js.sh: the browser client's suites (clients/js/test): unit tests against
# a fake server, the client against a real `wsgate demo`, the demo page in
# headless Chromium, the React hook on an esbuild-bundled React 19 page
# against `wsgate serve` with the example FastAPI service, and the npm
# package installed into a fresh project and type-checked with tsc.
# Safe on a fresh machine and idempotent: it installs Debian's chromium, and
# (through test-python.sh --deps-only) redis-server and the Python packages
# the FastAPI service needs, when missing; runs `npm ci` when node_modules is
# missing or older than package-lock.json; and builds wsgate into a temporary
# directory (set WSGATE_BIN to test a binary you built yourself).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
js="$root/clients/js"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "test-js: installing Debian chromium"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

"$root/scripts/test-python.sh" --deps-only

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "test-js: Node.js 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

# npm ci when the installed tree does not match the committed lock file.
stamp="$js/node_modules/.wsgate-lock.sha256"
want="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "test-js: npm ci"
  (cd "$js" && npm ci --no-audit --no-fund)
  echo "$want" >"$stamp"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -z "${WSGATE_BIN:-}" ]; then
  echo "test-js: go build ./cmd/wsgate"
  (cd "$root" && go build -o "$tmp/wsgate" ./cmd/wsgate)
  WSGATE_BIN="$tmp/wsgate"
fi
export WSGATE_BIN

# One suite file at a time: the machine has two cores, and the real-process
# suites start and stop wsgate on their own ports.
cd "$js"
node --test --test-concurrency=1 --test-timeout=300000 test/*.test.mjs
