"""`wukong demo` and the cancel-storm drill, on real local parts.

- `stack`: control plane add-ons, the operator process, latency proxy, OTLP
  receiver, Prometheus and the simulated infrastructure;
- `samples`: the Wukongs the demo applies;
- `telemetry`: trace summaries and dashboard panel readings;
- `diagnosis`: naming a storm's cause from them;
- `drill`: a rolling restart and three scripted faults, each diagnosed;
- `demo`: the demo flow (its command line is `wukong.cli.demo`).
"""
