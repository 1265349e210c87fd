"""The console as an aiohttp application: the registry's pool, the storage and the Kafka
publisher as ``cleanup_ctx`` resources, the read API, the actions, the pages, and the ops
routes.

It reads the registry (``DATABASE_URL``, whose schema it migrates like every registry
client) and the storage the processor and the archiver write (the storage settings); its
only writes are the operators' actions (records published to Kafka) and the
dead-letter indexer, which copies the dead-letter topic into the registry
(:mod:`.deadletters`). Any number of replicas can run; none holds state of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from services.common.errors import ConfigError
from services.common.http import json_errors
from services.common.settings import Settings
from services.common.storage import open_storage
from services.common.web import READINESS, REGISTRY, SETTINGS, add_ops_routes
from services.tracker.registry import Registry

from .actions import setup_actions
from .api import REGISTRY as TASKS
from .api import STORAGE, setup_api
from .deadletters import indexer_ctx
from .health import setup_health
from .pages import security_headers, setup_pages

__all__ = ["POOL_SIZE", "create_app"]

#: Connections one console holds at most: reads are short, a handful serves many users.
POOL_SIZE = 5


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The console for ``settings``; ``registry`` collects its metrics (a fresh one if not
    given). Refuses to start without ``DATABASE_URL``."""
    url = settings.tracker.database_url
    if url is None or not url.get().strip():
        raise ConfigError("the console needs DATABASE_URL: the task registry's PostgreSQL URL")
    app = web.Application(middlewares=[security_headers, json_errors])
    app[SETTINGS] = settings
    app[REGISTRY] = registry or CollectorRegistry()
    ready = Gauge(
        "console_ready",
        "1 while the task registry answers, else 0 (refreshed at every scrape and /readyz).",
        registry=app[REGISTRY],
    )
    app.cleanup_ctx.append(_registry_ctx(url.get()))
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(indexer_ctx)
    add_ops_routes(app)
    setup_api(app, settings.console)
    setup_actions(app)
    setup_health(app, settings.console)
    setup_pages(app)
    app[READINESS] = _ready(app, ready)
    return app


def _registry_ctx(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[TASKS] = await Registry.connect(url, min_size=1, max_size=POOL_SIZE)
        try:
            yield
        finally:
            await app[TASKS].close()

    return ctx


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_storage(app[SETTINGS].storage) as storage:
        app[STORAGE] = storage
        yield


def _ready(app: web.Application, gauge: Gauge) -> Callable[[], Awaitable[bool]]:
    """Ready while the registry answers: without it no page has anything to show. Kafka
    is not asked: the pages work without it, only dead letters arrive late."""

    async def ready() -> bool:
        answered = False
        if TASKS in app:
            try:
                await app[TASKS].ping()
                answered = True
            except Exception:  # away, or refusing: not ready either way
                answered = False
        gauge.set(1 if answered else 0)
        return answered

    return ready
