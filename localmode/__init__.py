"""Local mode: the pieces that stand in for a cluster on one machine (real Redis and Prometheus
processes, the event router, the Serving stand-in). Used by `make demo` and the tests."""
