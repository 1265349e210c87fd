"""The tracker as an aiohttp application: the registry, the provider client, the publisher,
the consumer and the background loops as ``cleanup_ctx`` resources, and its HTTP API.

Several replicas run side by side on one registry: submissions are claimed once per
request, polls are leased per task, and the provider's rate limit is one shared log in
PostgreSQL, so adding a replica never adds a second provider task or exceeds the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.common.consumer import ConsumerLoop
from services.common.errors import ConfigError
from services.common.http import json_errors
from services.common.settings import Settings, TrackerSettings
from services.common.web import (
    PUBLISHER,
    READINESS,
    REGISTRY,
    SETTINGS,
    add_ops_routes,
    publisher_ctx,
)

from .api import MAX_REQUEST_BYTES, setup_api
from .metrics import TrackerMetrics
from .provider import ProviderClient
from .ratelimit import PostgresRateLimiter
from .reconcile import PollSettings, Reconciler
from .registry import REGISTRY as TASKS
from .registry import TaskState, setup_registry
from .submit import WAKE_SUBMITTER, submit_request
from .track import Tracking, tracking_handler

__all__ = ["CLIENT", "METRICS", "WAKE_SUBMITTER", "create_app", "replica_name"]

log = structlog.get_logger(__name__)

CLIENT = web.AppKey("provider_client", ProviderClient)
METRICS = web.AppKey("tracker_metrics", TrackerMetrics)
CONSUMER = web.AppKey("tracker_consumer", ConsumerLoop)

#: Seconds between rounds of each background loop.
SUBMIT_EVERY = 5.0
RECONCILE_EVERY = 5.0
REFRESH_EVERY = 10.0


def replica_name() -> str:
    """Who holds a claim or a lease, in the registry: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_settings(tracker: TrackerSettings) -> None:
    """Refuse to start without what the tracker cannot work without."""
    missing = [
        name
        for name, value in (
            ("DATABASE_URL", tracker.database_url),
            ("SUNO_API_KEY", tracker.api_key),
            ("TRACKER_CALLBACK_URL", tracker.callback_url),
        )
        if value is None or not (value if isinstance(value, str) else value.get()).strip()
    ]
    callback = tracker.callback_url or ""
    if callback and not callback.startswith(("https://", "http://")):
        raise ConfigError(f"TRACKER_CALLBACK_URL must be an http(s) URL, not {callback!r}")
    if missing:
        raise ConfigError(
            f"the tracker needs {', '.join(missing)}: the registry's PostgreSQL URL, the "
            "provider's API key and our public callback URL (the ingest's)"
        )


def create_app(
    settings: Settings, *, registry: CollectorRegistry | None = None, owner: str | None = None
) -> web.Application:
    """The tracker for ``settings``; ``owner`` names this replica in claims and leases."""
    tracker = settings.tracker
    check_settings(tracker)
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    metrics = TrackerMetrics(registry or CollectorRegistry())
    app[METRICS] = metrics
    app[REGISTRY] = metrics.registry
    app[WAKE_SUBMITTER] = asyncio.Event()
    me = owner or replica_name()
    topics = settings.kafka.topics
    metrics.consumer.prime_topics([topics.requests, topics.callbacks, topics.notes])

    assert tracker.database_url is not None
    setup_registry(app, tracker.database_url.get())
    app.cleanup_ctx.append(_client_ctx)
    app.cleanup_ctx.append(
        publisher_ctx("tracker", [topics.callbacks, topics.requests, topics.dlq])
    )
    app.cleanup_ctx.append(_consumer_ctx)
    app.cleanup_ctx.append(_loops_ctx(me))
    add_ops_routes(app)
    setup_api(app)
    app[READINESS] = _ready(app)
    return app


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    tracker = app[SETTINGS].tracker
    limiter = PostgresRateLimiter(
        app[TASKS].pool, tracker.rate_limit_requests, tracker.rate_limit_window_seconds
    )
    async with aiohttp.ClientSession() as session:
        app[CLIENT] = ProviderClient(
            session, tracker, limiter=limiter, metrics=app[METRICS].provider
        )
        yield


async def _consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    topics = settings.kafka.topics
    wake = app[WAKE_SUBMITTER]
    tracking = Tracking(
        registry=app[TASKS],
        topics=topics,
        callback_url=settings.tracker.callback_url or "",
        on_request=wake.set,
    )
    loop = ConsumerLoop(
        settings=settings.kafka,
        role="tracker",
        group_id=settings.tracker.group_id,
        topics=[topics.requests, topics.callbacks, topics.notes],
        handler=tracking_handler(tracking),
        publisher=app[PUBLISHER],
        metrics=app[METRICS].consumer,
        unknown_schema="dead_letter",
    )
    await loop.start()
    app[CONSUMER] = loop
    try:
        yield
    finally:
        await loop.stop()


def _loops_ctx(owner: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The submitter, the reconciler and the gauges' refresher, stopped together."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        tracker = app[SETTINGS].tracker
        reconciler = Reconciler(
            app[TASKS],
            app[CLIENT],
            app[PUBLISHER],
            app[SETTINGS].kafka.topics.callbacks,
            PollSettings(
                interval_seconds=tracker.poll_interval_seconds,
                max_interval_seconds=tracker.poll_max_interval_seconds,
                retention=timedelta(days=tracker.retention_days),
                lease_seconds=tracker.lease_seconds,
            ),
            owner=owner,
            metrics=app[METRICS],
        )
        tasks = [
            asyncio.create_task(_submitter(app, owner, stopping), name="tracker-submitter"),
            asyncio.create_task(
                reconciler.run_forever(
                    min(RECONCILE_EVERY, tracker.poll_interval_seconds), stopping
                ),
                name="tracker-reconciler",
            ),
            asyncio.create_task(_refresher(app, stopping), name="tracker-refresher"),
        ]
        try:
            yield
        finally:
            stopping.set()
            app[WAKE_SUBMITTER].set()
            _done, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return ctx


async def _submitter(app: web.Application, owner: str, stopping: asyncio.Event) -> None:
    """Submit every recorded request nobody has tried yet; woken by each new request."""
    wake = app[WAKE_SUBMITTER]
    while not stopping.is_set():
        wake.clear()
        try:
            await submit_pending(app, owner)
        except Exception as exc:  # the next round tries again
            log.error("submit_round_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), SUBMIT_EVERY)


async def submit_pending(app: web.Application, owner: str) -> int:
    """One round of submissions; how many requests were looked at."""
    tracker = app[SETTINGS].tracker
    requested = await app[TASKS].claimable(limit=50)
    for task in requested:
        if task.request_id is None:  # pragma: no cover - a requested row has its request id
            continue
        result = await submit_request(
            app[TASKS],
            app[CLIENT],
            task.request_id,
            owner=owner,
            callback_base=tracker.callback_url or "",
            poll_after_seconds=tracker.poll_after_seconds,
        )
        app[METRICS].submissions.labels(result.outcome).inc()
    return len(requested)


async def refresh_gauges(app: web.Application) -> None:
    """The registry's picture, as every replica sees it: tasks by state, the oldest open
    task, those at risk of expiring, submissions of unknown outcome."""
    tasks, metrics, tracker = app[TASKS], app[METRICS], app[SETTINGS].tracker
    counts = await tasks.counts_by_state()
    for state in TaskState:
        metrics.tasks.labels(state.value).set(counts.get(state, 0))
    metrics.oldest_open_age.set(await tasks.oldest_open_age() or 0)
    metrics.at_risk.set(
        await tasks.at_risk(
            timedelta(days=tracker.retention_days), timedelta(days=tracker.expiry_warning_days)
        )
    )
    metrics.submissions_unknown.set(len(await tasks.unknown_submissions()))


async def _refresher(app: web.Application, stopping: asyncio.Event) -> None:
    metrics = app[METRICS]
    while not stopping.is_set():
        try:
            await refresh_gauges(app)
            metrics.registry_up.set(1)
        except Exception as exc:  # PostgreSQL away: say so, try again
            metrics.registry_up.set(0)
            log.warning("registry_refresh_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), REFRESH_EVERY)


def _ready(app: web.Application) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        loop = app.get(CONSUMER)
        if loop is None or not await loop.ready() or TASKS not in app:
            return False
        try:
            await app[TASKS].ping()
        except Exception:
            return False
        return True

    return ready
