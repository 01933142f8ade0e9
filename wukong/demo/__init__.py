"""`wukong demo` and the cancel-storm drill, on real local parts.

- `stack`: control plane add-ons, the operator process, latency proxy, Jaeger,
  Prometheus and the simulated infrastructure;
- `samples`: the Wukongs the demo applies;
- `telemetry`: trace summaries, the signals `wukong.diagnose.rules` reads;
- `drill`: a rolling restart and three scripted faults, each diagnosed by the
  rules `wukong diagnose` applies;
- `demo`: the demo flow (its command line is `wukong.cli.demo`).
"""
