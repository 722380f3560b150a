"""The placement's counters (prometheus-client, default registry): every move between tiers and
every pre-load, by outcome, and the models on each tier. Labelled by namespace, not by model, so
that a fleet of thousands of models does not become thousands of series; the decision event
names the model of each move and pre-load."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MOVES = Counter("scale_placement_moves_total",
                "Model moves between the pool and a dedicated Service, by target tier and outcome "
                "(applied, waiting for the target to be ready, dry_run, failed)", ["namespace", "to", "outcome"])
PRELOADS = Counter("scale_placement_preloads_total",
                   "Model pre-loads into the pool, by outcome (loaded, failed, deferred while the pool has no "
                   "ready pod, dry_run)", ["namespace", "outcome"])
MODELS = Gauge("scale_placement_models", "Models routed to each tier, as last read", ["namespace", "tier"])
