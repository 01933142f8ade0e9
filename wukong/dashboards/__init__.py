"""Grafana dashboards and Prometheus alert rules as code.

Development only (the `devtools` extra brings grafana-foundation-sdk): the
operator never imports this package; `wukong dashboards render` writes the
results under `dashboards/` and the dashboards into `rendered/` here (package
data), `wukong deploy render` copies them into the chart, and unit tests fail
when the committed files are stale. `wukong diagnose` reads the shipped copy
with the modules that need no SDK (`promql`, `reading`, `shipped`).

- `cancel_storm`: "Wukong / Cancel storm" (`wukong-cancel-storm`), reconciles,
  cancellations, the deadline, requeue lateness, the workqueue, the API client
  and leadership;
- `node_cancellations`: "Wukong / Node cancellations"
  (`wukong-node-cancellations`), what the eBPF node agent saw per node, pod,
  runtime and reason, and what its counts cover (processes traced, events lost);
- `builders`: panels, rows, variables and the dashboard settings they share;
- `promql`: the expressions they are built from, and reading expressions back
  (series names, grouping labels, Grafana variables) for the checks;
- `render`: every dashboard as `<uid>.json`;
- `reading`: the panels and queries of a rendered dashboard;
- `shipped`: the rendered dashboards the package ships, read without the SDK;
- `alerts`: the alert rules, rendered to `wukong-alerts.rules.yaml`.

Every query reads only metric families of the contract (docs/contract.md,
`wukong.metrics.definitions`), filters by the dashboard's template variables
and uses `$__rate_interval`, never a fixed range, so the panels stay right for
any scrape interval.
"""
