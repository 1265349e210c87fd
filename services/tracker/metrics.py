"""The tracker's Prometheus metrics; each container takes its ``CollectorRegistry``.

Names follow ``tracker_<noun>_<unit>`` and are a contract with the dashboard and alert
rules; every label value is created at zero up front, so ``rate()`` shows 0 before the
first request instead of "no data".
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import DURATION_BUCKETS, ConsumerMetrics

__all__ = [
    "PROVIDER_ENDPOINTS",
    "PROVIDER_OUTCOMES",
    "RATE_LIMIT_WAIT_BUCKETS",
    "TASK_STATES",
    "ProviderEndpoint",
    "ProviderMetrics",
    "ProviderOutcome",
    "TrackerMetrics",
]

#: The registry's task states, as the ``state`` label (services.tracker.registry.TaskState).
TASK_STATES: Final = ("requested", "submitted", "completed", "failed", "empty", "expired")

#: How one submission ended (services.tracker.submit.SubmitResult).
SubmitOutcome = Literal["submitted", "not_claimed", "rejected", "unknown", "deferred"]
SUBMIT_OUTCOMES: Final[tuple[SubmitOutcome, ...]] = get_args(SubmitOutcome)

#: What one poll of record-info found: the task's outcome, or why there was none.
PollOutcome = Literal["pending", "completed", "empty", "failed", "not_found", "error"]
POLL_OUTCOMES: Final[tuple[PollOutcome, ...]] = get_args(PollOutcome)

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


class TrackerMetrics:
    """Everything the tracker reports: its consumer's metrics, the provider client's, the
    registry's picture (refreshed from PostgreSQL), submissions and polls."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumer = ConsumerMetrics("tracker", registry)
        self.provider = ProviderMetrics(registry)
        self.tasks = Gauge(
            "tracker_tasks",
            "Tasks in the registry, by state (all replicas see the same numbers).",
            ["state"],
            registry=registry,
        )
        self.oldest_open_age = Gauge(
            "tracker_oldest_open_task_age_seconds",
            "Age of the oldest task not yet completed, failed, empty or expired (0: none).",
            registry=registry,
        )
        self.at_risk = Gauge(
            "tracker_tasks_at_risk",
            "Open tasks within TRACKER_EXPIRY_WARNING_DAYS of the provider's retention: their "
            "result is lost unless it arrives or a poll gets it before then.",
            registry=registry,
        )
        self.submissions_unknown = Gauge(
            "tracker_submissions_unknown",
            "Requests whose submission outcome nobody knows (a crash or an uncertain answer "
            "between the provider and our write): never resubmitted on our own.",
            registry=registry,
        )
        self.submissions = Counter(
            "tracker_submissions_total",
            "Submission attempts by this replica, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.polls = Counter(
            "tracker_polls_total",
            "record-info polls by this replica, by what they found.",
            ["outcome"],
            registry=registry,
        )
        self.recovered = Counter(
            "tracker_recovered_by_poll_total",
            "Finished results a poll fetched and sent down the pipeline (no callback had).",
            registry=registry,
        )
        self.last_round = Gauge(
            "tracker_reconcile_last_round_timestamp_seconds",
            "When this replica's reconciler last finished a round (a stalled one stops).",
            registry=registry,
        )
        self.registry_up = Gauge(
            "tracker_registry_up",
            "1 when the last refresh of the registry's numbers reached PostgreSQL.",
            registry=registry,
        )
        for state in TASK_STATES:
            self.tasks.labels(state)
        for outcome in SUBMIT_OUTCOMES:
            self.submissions.labels(outcome)
        for poll in POLL_OUTCOMES:
            self.polls.labels(poll)
