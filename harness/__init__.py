"""Benchmarks and checks around the service, never installed in the gateway image.

The verbs are `python -m harness.<name>` behind a `make` target (bench_gateway, bench_all, bench_interceptor,
tracing_check, replay, otlp_receiver): they start real servers (Triton, the gateway, the KServe transformer, an
OTLP receiver), drive them, and write `reports/`. What they share lives once, and the integration tests use it
too: `processes` (starting and stopping the gateway and the transformer), `workload` (the synthetic traffic
and its requests), `load` (the load generator), `stats` (medians, intervals, the JSON report). Nothing in
`gateway` or `training` (its serving core included) imports this package.
"""
