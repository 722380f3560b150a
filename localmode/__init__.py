"""Local mode: the pieces that stand in for a cluster on one machine (real Redis and Prometheus
processes, Prometheus back-filled with a week of history, the event router, the Serving
stand-in). Used by `make demo`, the benchmarks and the tests."""
