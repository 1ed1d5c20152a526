#!/usr/bin/env bash
# test-python.sh: the Python package's suite (clients/python/tests) with
# pytest on Debian's /usr/bin/python3 (not a pyenv or venv python that may be
# first on PATH): the publisher against a real redis-server, a real wsgate
# process, and the example FastAPI service under uvicorn as wsgate's
# upstream. Safe on a fresh machine and idempotent: it installs the Debian
# packages it needs when missing (no PyPI), and builds wsgate into a
# temporary directory (set WSGATE_BIN to test a binary you built yourself).
# --deps-only installs and stops (test-js.sh uses it for its FastAPI page).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py=/usr/bin/python3

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# module:package pairs; a module that does not import means its package is missing.
need=()
[ -x "$py" ] || need+=(python3)
command -v redis-server >/dev/null || need+=(redis-server)
for pair in redis:python3-redis websockets:python3-websockets pytest:python3-pytest fastapi:python3-fastapi \
  uvicorn:python3-uvicorn httpx:python3-httpx jwt:python3-jwt cryptography:python3-cryptography setuptools:python3-setuptools; do
  if ! [ -x "$py" ] || ! "$py" -s -c "import ${pair%%:*}" 2>/dev/null; then need+=("${pair#*:}"); fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "test-python: installing ${need[*]} from apt"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--deps-only" ]; then exit 0; fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -z "${WSGATE_BIN:-}" ]; then
  echo "test-python: go build ./cmd/wsgate"
  (cd "$root" && go build -o "$tmp/wsgate" ./cmd/wsgate)
  WSGATE_BIN="$tmp/wsgate"
fi
export WSGATE_BIN

cd "$root/clients/python"
# -s: no user site-packages; no bytecode or pytest cache in the work tree.
PYTHONDONTWRITEBYTECODE=1 "$py" -s -m pytest -q -p no:cacheprovider "$@" tests
