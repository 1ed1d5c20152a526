#!/usr/bin/env bash
# make bench: wsgate against a direct connection, a raw TCP relay, nginx, HAProxy and Traefik for the
# proxy figures, and against rueidis alone and Centrifugo for the Redis fan-out, all on loopback in one
# run. Installs redis-server, nginx-light and haproxy from apt when missing, builds (and caches) the
# pinned Traefik and Centrifugo, builds wsgate from this tree, runs the bench module and prints the
# tables; docs/bench/ gets results.json, chart.png and README.md.
#
#   ./scripts/bench.sh                # full run: ~20 minutes on 2 cores, plus cold peer builds
#   BENCH_QUICK=1 ./scripts/bench.sh  # ~4 minute smoke run (same as ./scripts/bench.sh -quick)
#   ./scripts/bench.sh -profile DIR   # CPU/heap profiles of wsgate's Handler
# BENCH_FLAGS adds flags, e.g. BENCH_FLAGS=-phases=latency,load make bench.
# TRAEFIK_BIN / CENTRIFUGO_BIN point at prebuilt binaries instead of the build scripts.
# A peer whose build fails is skipped, with a note in docs/bench/README.md; the rest still runs.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

apt_pkgs=()
command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || apt_pkgs+=(haproxy)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "bench: installing ${apt_pkgs[*]} from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  # Debian starts the packaged services; the bench runs its own instances
  # on free ports and wants the cores to itself.
  if command -v service >/dev/null; then
    for svc in nginx haproxy; do
      if [[ " ${apt_pkgs[*]} " == *" $svc"* ]]; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
    done
  fi
fi
export PATH="$PATH:/usr/sbin"

# The pinned peers, built once and cached under ~/.cache/wsgate/ (cold: Traefik ~6-7 min, Centrifugo
# ~3-5 min). Each script prints the binary's path on its last stdout line.
peer() { # peer NAME SCRIPT: prints the binary path, or nothing when the build is missing or fails
  local name=$1 script=$2 out
  if [ ! -x "$script" ]; then
    echo "bench: $script is missing: the $name figures are skipped" >&2
    return 0
  fi
  if out=$("$script"); then
    tail -n1 <<<"$out"
  else
    echo "bench: $script failed: the $name figures are skipped" >&2
  fi
}
traefik=${TRAEFIK_BIN:-$(peer Traefik scripts/build-traefik.sh)}
centrifugo=${CENTRIFUGO_BIN:-$(peer Centrifugo scripts/build-centrifugo.sh)}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "bench: building wsgate and the bench tool"
nice -n 10 go build -o "$tmp/wsgate" ./cmd/wsgate
(cd bench && nice -n 10 go build -o "$tmp/bench" .)

flags=("$@")
if [ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ]; then flags+=(-quick); fi
if [ -n "${BENCH_FLAGS:-}" ]; then
  read -r -a extra <<<"$BENCH_FLAGS"
  flags+=("${extra[@]}")
fi
cmdline="make bench"
[ ${#flags[@]} -gt 0 ] && cmdline="./scripts/bench.sh ${flags[*]}"
cd bench
"$tmp/bench" -wsgate "$tmp/wsgate" -traefik "$traefik" -centrifugo "$centrifugo" -out ../docs/bench \
  -command "$cmdline" ${flags[@]+"${flags[@]}"}
