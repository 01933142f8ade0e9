"""Naming the cause of a live incident from the telemetry an operator exports.

One concept per module:

- `rules`: the rules that turn signals (cancellations by reason, API latency
  against its baseline, leadership, restarts) into one cause; the drill and
  `wukong diagnose` both apply them;
- `prometheus`: instant queries and alerts over Prometheus' HTTP API;
- `panels`: the cancel-storm dashboard's panels, run against Prometheus;
- `jaeger`: traces read back from Jaeger's query API;
- `split`: where a slow API call's time went (outside the API server, in
  admission, in storage), from its joined trace;
- `live`: the signals of a live cluster gathered from Prometheus (and Jaeger);
- `report`: what `wukong diagnose` prints, and its exit status.
"""
