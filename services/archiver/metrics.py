"""The archiver's Prometheus metrics: the consumer's common set plus what archiving adds."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from services.common.metrics import ConsumerMetrics

__all__ = ["STORAGE_OPERATIONS", "ArchiverMetrics"]

#: The values of ``archiver_storage_errors_total{operation}`` (bounded, like every label).
STORAGE_OPERATIONS = ("exists", "put_sidecar", "put_body", "cleanup")


class ArchiverMetrics:
    """Everything the archiver reports; one instance per registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumer = ConsumerMetrics("archiver", registry)
        self.written_bytes = Counter(
            "archiver_written_bytes",
            "Bytes of raw callback bodies and sidecars written to storage.",
            registry=registry,
        )
        self.storage_errors = Counter(
            "archiver_storage_errors",
            "Storage operations that failed (the record is retried, never committed).",
            ["operation"],
            registry=registry,
        )
        self.archived = Counter(
            "archiver_archived",
            "Callback events archived, by outcome: new, or existing (a repeat: no-op).",
            ["outcome"],
            registry=registry,
        )
        self.replayed = Counter(
            "archiver_replayed",
            "Replayed callback events (re-published by the replay command) this archiver saw.",
            registry=registry,
        )
        for outcome in ("new", "existing"):
            self.archived.labels(outcome)
        for operation in STORAGE_OPERATIONS:
            self.storage_errors.labels(operation)
