// Package deploy holds no Go code of its own: it owns the deployment files
// beside it (systemd unit, Grafana dashboard and provisioning, Prometheus
// scrape config and alert rules, the container build) and, in its tests, the
// checks that keep them true to the metrics registry and to each other.
package deploy
