"""The operational HTTP surface every service shares: health, readiness, metrics.

Each service is an aiohttp application built by a factory; its resources are acquired and
released in ``cleanup_ctx`` generators, so clean-up runs if and only if start-up finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .kafka import Publisher, ensure_topics
from .settings import Settings

__all__ = [
    "PUBLISHER",
    "READINESS",
    "REGISTRY",
    "SETTINGS",
    "add_ops_routes",
    "metrics_handler",
    "publisher_ctx",
]

log = structlog.get_logger(__name__)

#: How long one readiness check may run before its gauge is left as it was.
_READINESS_TIMEOUT = 3.0
#: How long a scrape waits for that check: a slow dependency must never make the scrape
#: itself time out (tests scrape with a 1 s timeout), or every series of the target vanishes.
_SCRAPE_WAIT = 0.25

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
PUBLISHER = web.AppKey("publisher", Publisher)
READINESS: web.AppKey[Callable[[], Awaitable[bool]]] = web.AppKey("readiness")


def add_ops_routes(app: web.Application) -> None:
    """``/healthz`` (the process), ``/readyz`` (its dependencies), ``/metrics``."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        check = request.app.get(READINESS)
        if check is not None and await check():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not_ready"}, status=503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(app[REGISTRY]))


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """Serve ``registry`` in the text exposition format.

    Each scrape starts a readiness check (unless one is still running) and waits for it a
    short while, so the readiness gauges (``{service}_ready``, ``ingest_kafka_ready``) are
    as fresh as the scrape even where no probe calls /readyz. A check that is slow, fails
    or hangs never delays or fails the scrape: it goes on in the background and sets its
    gauge when it ends, and the scrape reports the last value.
    """
    in_flight: asyncio.Task[None] | None = None

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight
        if in_flight is None or in_flight.done():
            in_flight = asyncio.create_task(_refresh_readiness(request.app))
        await asyncio.wait({in_flight}, timeout=_SCRAPE_WAIT)
        body = generate_latest(registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    return handle


async def _refresh_readiness(app: web.Application) -> None:
    check = app.get(READINESS)
    if check is None:
        return
    try:
        async with asyncio.timeout(_READINESS_TIMEOUT):
            await check()
    except Exception as exc:  # a scrape must never fail because a dependency is down
        log.warning("readiness_check_failed", error=repr(exc))


def publisher_ctx(
    role: str, topics: Sequence[str], *, flush_timeout: float = 10.0
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that ensures ``topics`` exist and fit our records, then starts a
    publisher; on the way out the publisher flushes within ``flush_timeout`` seconds."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        await ensure_topics(settings.kafka, role, topics)
        publisher = Publisher(settings.kafka, role)
        await publisher.start()
        app[PUBLISHER] = publisher
        try:
            yield
        finally:
            await publisher.stop(flush_timeout)

    return ctx
