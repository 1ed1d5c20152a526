// Package obscheck checks the chart's dashboard and alerts against a real Prometheus scraping a
// real wsgate under load. Its tests carry the build tag "observability" and need prometheus,
// promtool and redis-server: run them with scripts/test-observability.sh (make test-observability).
package obscheck
