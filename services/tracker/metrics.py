"""The tracker's Prometheus metrics; each container takes its ``CollectorRegistry``.

Names follow ``tracker_<noun>_<unit>`` and are a contract with the dashboard and alert
rules; every label value is created at zero up front, so ``rate()`` shows 0 before the
first request instead of "no data".
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.metrics import DURATION_BUCKETS

__all__ = [
    "PROVIDER_ENDPOINTS",
    "PROVIDER_OUTCOMES",
    "RATE_LIMIT_WAIT_BUCKETS",
    "ProviderEndpoint",
    "ProviderMetrics",
    "ProviderOutcome",
]

#: The provider calls the tracker makes, as the ``endpoint`` label.
ProviderEndpoint = Literal["generate", "record_info"]
PROVIDER_ENDPOINTS: Final[tuple[ProviderEndpoint, ...]] = get_args(ProviderEndpoint)

#: What one HTTP request to the provider came to: ``unknown`` is a ``generate`` whose effect
#: we cannot know, ``bad_answer`` an answer that is not the documented shape.
ProviderOutcome = Literal[
    "ok",
    "rate_limited",
    "maintenance",
    "server_error",
    "network_error",
    "permanent",
    "unknown",
    "bad_answer",
]
PROVIDER_OUTCOMES: Final[tuple[ProviderOutcome, ...]] = get_args(ProviderOutcome)

#: Seconds: none, a slot freed within the window (10 s by default), several windows.
RATE_LIMIT_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class ProviderMetrics:
    """What the provider client reports: requests by outcome, their duration, and the time
    spent waiting for the shared rate limit."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "tracker_provider_requests_total",
            "HTTP requests to the provider (each retry counts), by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "tracker_provider_request_duration_seconds",
            "Time of one HTTP request to the provider, rate-limit wait excluded.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rate_limit_wait = Histogram(
            "tracker_rate_limit_wait_seconds",
            "Time a provider request waited for the rate limit shared by all replicas.",
            buckets=RATE_LIMIT_WAIT_BUCKETS,
            registry=registry,
        )
        for endpoint in PROVIDER_ENDPOINTS:
            self.duration.labels(endpoint)
            for outcome in PROVIDER_OUTCOMES:
                self.requests.labels(endpoint, outcome)
