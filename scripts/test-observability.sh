#!/usr/bin/env bash
# test-observability.sh: the chart's alerts and dashboard against real Prometheus tools.
#   1. promtool check rules + promtool test rules (tools/obscheck/rules.test.yaml: each alert
#      fires on a crafted series and stays quiet on a healthy one);
#   2. tools/obscheck: a real Prometheus scrapes a real wsgate (with redis-server, a JWKS
#      endpoint and an echo upstream) under a small load of WebSocket clients, loads the alert
#      rules, and every query of the dashboard must return data through its HTTP API.
# The trace tests (real OTLP receivers) are Go tests of cmd/wsgate and run in `make test-go`.
#
# Safe on a fresh Debian machine: installs the `prometheus` package (it ships promtool) and
# redis-server from apt when missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
pkgs=()
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || pkgs+=(prometheus)
command -v redis-server >/dev/null || pkgs+=(redis-server)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "test-observability: installing ${pkgs[*]} from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
echo "test-observability: $(prometheus --version 2>&1 | head -1)"

promtool check rules charts/wsgate/files/prometheus-rules.yaml
promtool test rules tools/obscheck/rules.test.yaml
go test -race -count=1 -tags observability -timeout 5m ./tools/obscheck
