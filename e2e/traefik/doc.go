// Package traefik holds the gateway suite: a real Traefik v3.7.13 (scripts/build-traefik.sh) in
// front of a real wsgate process, configured from deploy/traefik and deploy/base, with a
// recording upstream behind it and Go clients or headless Chromium in front. The tests run from
// `make test-gateway`, which builds both binaries and sets TRAEFIK_BIN and WSGATE_BIN.
package traefik
