"""The operational HTTP surface every service shares: health, readiness, metrics.

Each service is an aiohttp application built by a factory; its resources are acquired and
released in ``cleanup_ctx`` generators, so clean-up runs if and only if start-up finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from .kafka import Publisher, ensure_topics
from .metrics import metrics_handler
from .settings import Settings

__all__ = [
    "PUBLISHER",
    "READINESS",
    "REGISTRY",
    "SETTINGS",
    "add_ops_routes",
    "publisher_ctx",
]

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
