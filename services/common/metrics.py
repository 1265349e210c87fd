"""Prometheus metrics shared by the consumers (``/metrics`` itself is served by ``web``).

Every container takes its ``CollectorRegistry`` as an argument (a fresh one per test);
names follow ``<service>_<noun>_<unit>`` in base units, and no label is unbounded
(never a task id; partitions are bounded by the topic's partition count). The label
values every consumer can produce are created at zero up front, so a dashboard's
``rate()`` shows 0 instead of "no data" before the first event.

The names are a contract with ``deploy/observability/`` (dashboard and alert rules) and
``docs/observability.md``: rename nothing without changing those too.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "CONSUMER_DEAD_LETTER_REASONS",
    "DURATION_BUCKETS",
    "REBALANCE_EVENTS",
    "RECORD_RESULTS",
    "ConsumerMetrics",
]

#: Seconds, from sub-millisecond to the sender's 15 s timeout and beyond.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip  # one row of bucket bounds reads better than sixteen

#: ``{service}_records_total`` results.
RECORD_RESULTS = ("ok", "dead_lettered", "retried")
#: ``{service}_rebalances_total`` events.
REBALANCE_EVENTS = ("assigned", "revoked")
#: The dead-letter reasons every consumer exports from the start: the loop's own for any
#: record. The wrapper's ``invalid_task_id`` and the handlers' reasons appear when first used.
CONSUMER_DEAD_LETTER_REASONS = ("undecodable", "processing_failed")


class ConsumerMetrics:
    """What every consumer reports: records by result, duration, commits, rebalances, lag,
    halted partitions."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records = Counter(
            f"{service}_records_total",
            "Records handled, by result (ok, dead_lettered, retried).",
            ["topic", "result"],
            registry=registry,
        )
        self.processing = Histogram(
            f"{service}_record_processing_seconds",
            "Time to handle one record, retries included, until its offset may be committed.",
            ["topic"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{service}_dead_letters_total",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.commit_failures = Counter(
            f"{service}_commit_failures_total",
            "Offset commits that failed (the record will be handled again).",
            registry=registry,
        )
        self.rebalances = Counter(
            f"{service}_rebalances_total",
            "Partition rebalances, by event (assigned, revoked).",
            ["event"],
            registry=registry,
        )
        self.lag = Gauge(
            f"{service}_consumer_lag_records",
            "High watermark minus the next offset to handle, per assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.ready = Gauge(
            f"{service}_ready",
            "1 when the consumer is connected and its topics exist, else 0 "
            "(refreshed at every scrape and every /readyz).",
            registry=registry,
        )
        self.halted = Gauge(
            f"{service}_halted_partitions",
            "Partitions stopped at a record no known schema decodes: paused, not committed "
            "past, until revoked or restarted (docs/observability.md#partition-halted).",
            registry=registry,
        )
        for event in REBALANCE_EVENTS:
            self.rebalances.labels(event)
        for reason in CONSUMER_DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)

    def prime_topics(self, topics: Iterable[str]) -> None:
        """Create the per-topic series at zero (records by result, processing duration)."""
        for topic in topics:
            for result in RECORD_RESULTS:
                self.records.labels(topic, result)
            self.processing.labels(topic)
