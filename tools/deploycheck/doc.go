// Package deploycheck holds the offline checks for wsgate's Kubernetes delivery: the Dockerfile,
// the Helm chart in charts/wsgate and the kustomize manifests in deploy/. It is its own module so
// that Helm, Kubernetes and BuildKit dependencies stay out of wsgate's go.mod.
//
// Run it through scripts/test-deploy.sh, which installs a pinned helm when missing, builds wsgate
// and passes the binary in WSGATE_BIN so rendered configs are checked with `wsgate validate`.
package deploycheck
