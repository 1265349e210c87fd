"""Prometheus metrics shared by the consumers, and the ``/metrics`` endpoint.

Every container takes its ``CollectorRegistry`` as an argument (a fresh one per test);
names follow ``<service>_<noun>_<unit>`` in base units, and no label is unbounded
(never a task id; partitions are bounded by the topic's partition count).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["DURATION_BUCKETS", "ConsumerMetrics", "metrics_handler"]

#: Seconds, from sub-millisecond to the sender's 15 s timeout and beyond.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
)


class ConsumerMetrics:
    """What every consumer reports: records by result, duration, commits, rebalances, lag."""

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
            "1 when the consumer is connected and its topics exist, else 0.",
            registry=registry,
        )


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def handle(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    return handle
