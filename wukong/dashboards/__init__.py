"""Grafana dashboards and alert rules as code, built with grafana-foundation-sdk."""
