"""The ingest's Prometheus metrics: the names are the contract with the dashboards."""

from __future__ import annotations

from typing import Final, Literal, get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.callback import CALLBACK_KINDS
from services.common.metrics import DURATION_BUCKETS

__all__ = ["BODY_SIZE_BUCKETS", "INGEST_METRICS", "OUTCOMES", "IngestMetrics", "Outcome"]

Outcome = Literal[
    "accepted",
    "duplicate",
    "bad_signature",
    "stale_timestamp",
    "signature_reused",
    "too_large",
    "unsupported_media_type",
    "bad_request",
    "unavailable",
    "overloaded",
    "incomplete_body",
]

OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

#: 256 B .. 16 MiB in powers of four.
BODY_SIZE_BUCKETS: Final[tuple[float, ...]] = tuple(float(256 * 4**i) for i in range(9))


class IngestMetrics:
    """Every metric the ingest exports, registered in the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "ingest_requests_total",
            "Callback requests answered, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "ingest_request_duration_seconds",
            "Time from the request's arrival to its answer, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.publish_duration = Histogram(
            "ingest_publish_duration_seconds",
            "Time Kafka took to acknowledge (acks=all) one callback event, failures included.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.body_size = Histogram(
            "ingest_body_size_bytes",
            "Size of the callback bodies read (refused ones included).",
            buckets=BODY_SIZE_BUCKETS,
            registry=registry,
        )
        self.dedupe_errors = Counter(
            "ingest_dedupe_errors_total",
            "Dedupe store operations that failed (see ingest_dedupe_unavailable_total).",
            ["operation"],
            registry=registry,
        )
        self.dedupe_unavailable = Counter(
            "ingest_dedupe_unavailable_total",
            "Callbacks the dedupe store did not answer for, by what INGEST_DEDUPE_UNAVAILABLE "
            "made of them: accepted (published without dedupe) or refused (503).",
            ["action"],
            registry=registry,
        )
        self.dedupe_backend_up = Gauge(
            "ingest_dedupe_backend_up",
            "1 when the last dedupe store operation succeeded, else 0.",
            registry=registry,
        )
        self.publishes_in_flight = Gauge(
            "ingest_publishes_in_flight",
            "Callback events sent to Kafka and not yet acknowledged.",
            registry=registry,
        )
        self.buffered_bytes = Gauge(
            "ingest_buffered_bytes",
            "Bytes of callbacks held against INGEST_MAX_BUFFERED_BYTES: bodies being read or "
            "handled, events the producer has not finished with.",
            registry=registry,
        )
        self.kafka_ready = Gauge(
            "ingest_kafka_ready",
            "1 when the producer is connected and the callbacks topic exists, else 0.",
            registry=registry,
        )
        self.last_accepted = Gauge(
            "ingest_last_accepted_timestamp_seconds",
            "Unix time of the last callback accepted (acknowledged by Kafka).",
            registry=registry,
        )
        self.callbacks_by_kind = Counter(
            "ingest_callbacks_by_kind_total",
            "Callbacks accepted (acknowledged by Kafka), by the operation that sent them: "
            "midi, music_generation, separation, unknown.",
            ["kind"],
            registry=registry,
        )
        for kind in CALLBACK_KINDS:
            self.callbacks_by_kind.labels(kind)
        for outcome in OUTCOMES:
            # Export every outcome from the start so rate() sees a zero, not a gap.
            self.requests.labels(outcome)
            self.request_duration.labels(outcome)
        for operation in ("claim", "complete", "release", "wait", "ping"):
            self.dedupe_errors.labels(operation)
        for action in ("accepted", "refused"):
            self.dedupe_unavailable.labels(action)

    def answered(self, outcome: Outcome, seconds: float) -> None:
        self.requests.labels(outcome).inc()
        self.request_duration.labels(outcome).observe(seconds)


INGEST_METRICS = web.AppKey("ingest_metrics", IngestMetrics)
