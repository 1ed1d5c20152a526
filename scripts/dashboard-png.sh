#!/usr/bin/env bash
# dashboard-png.sh: regenerates docs/dashboard.png, the chart's Grafana dashboard drawn from real
# Prometheus query results. It runs the tools/obscheck test with a longer load (OBSCHECK_LOAD,
# default 60s), which writes every panel's query_range results as JSON, then draws them with
# matplotlib (Debian python3-matplotlib, installed when missing). Not part of `make test`; the
# PNG is committed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
py=/usr/bin/python3 # Debian's, with python3-matplotlib; not a pyenv or venv python first on PATH
if ! "$py" -c 'import matplotlib' 2>/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
command -v prometheus >/dev/null || ./scripts/test-observability.sh
WSGATE_DASHBOARD_OUT="$tmp/dashboard-data.json" OBSCHECK_LOAD="${OBSCHECK_LOAD:-60s}" \
  go test -count=1 -tags observability -timeout 10m -run TestDashboardAgainstRealPrometheus ./tools/obscheck
"$py" scripts/dashboard-png.py "$tmp/dashboard-data.json" docs/dashboard.png
echo "dashboard-png: wrote docs/dashboard.png"
