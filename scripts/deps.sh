#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian machine, and nothing
# when it is already there: redis-server (Go bridge tests), chromium (browser
# test), helm (chart tests, via go install) and node modules (JS client).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

apt_pkgs=()
command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
[ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)
command -v node >/dev/null || apt_pkgs+=(nodejs npm)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "deps: installing ${apt_pkgs[*]} from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi
echo "deps: redis-server $(redis-server --version | awk '{print $3}'), chromium $([ -x /usr/bin/chromium ] && echo ok), node $(node --version)"
