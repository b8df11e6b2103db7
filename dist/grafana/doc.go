// Package grafana holds the Grafana dashboard for tapes-host (tapes.json);
// its test checks that the dashboard is well formed and that a real
// Prometheus parses every query in it.
package grafana
