#!/usr/bin/env bash
# make bench: wsgate against a direct connection, a raw TCP relay, nginx and
# rueidis alone, all on loopback in one run. Installs redis-server and
# nginx-light from apt when missing, builds wsgate from this tree, runs the
# bench module and prints the table; docs/bench/ gets results.json,
# chart.png and README.md.
#
#   ./scripts/bench.sh            # full run, under ~10 minutes on 2 cores
#   ./scripts/bench.sh -quick     # ~1 minute smoke run
#   ./scripts/bench.sh -profile DIR   # CPU/heap profiles of wsgate's Handler
# BENCH_FLAGS adds flags, e.g. BENCH_FLAGS=-quick make bench.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

apt_pkgs=()
command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx-light)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "bench: installing ${apt_pkgs[*]} from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  # Debian starts the packaged services; the bench runs its own instances
  # on free ports and wants the cores to itself.
  if [[ " ${apt_pkgs[*]} " == *" nginx-light "* ]] && command -v service >/dev/null; then
    $SUDO service nginx stop >/dev/null 2>&1 || true
  fi
fi
export PATH="$PATH:/usr/sbin"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "bench: building wsgate and the bench tool"
go build -o "$tmp/wsgate" ./cmd/wsgate
(cd bench && go build -o "$tmp/bench" .)

flags=("$@")
if [ -n "${BENCH_FLAGS:-}" ]; then
  read -r -a extra <<<"$BENCH_FLAGS"
  flags+=("${extra[@]}")
fi
cmdline="make bench"
[ ${#flags[@]} -gt 0 ] && cmdline="./scripts/bench.sh ${flags[*]}"
cd bench
"$tmp/bench" -wsgate "$tmp/wsgate" -out ../docs/bench -command "$cmdline" ${flags[@]+"${flags[@]}"}
