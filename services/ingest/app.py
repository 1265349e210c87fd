"""The ingest as an aiohttp application: its settings, resources and routes, wired once.

Each concern lives in its own module and is plugged in here: ``publish`` (the Kafka
producer), ``claims`` (the dedupe store), ``handler`` (the callback's path), ``readiness``,
``lifecycle`` (what SIGTERM changes); ``services.common.http`` answers errors as JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.common.http import json_errors
from services.common.settings import Settings
from services.common.web import READINESS, REGISTRY, SETTINGS, add_ops_routes

from .budget import BUFFER_BUDGET, BufferBudget
from .claims import setup_dedupe
from .handler import CLOCK, receive_callback, setup_handler
from .lifecycle import LIFECYCLE, Lifecycle
from .metrics import INGEST_METRICS, IngestMetrics
from .publish import setup_publishing
from .readiness import readiness

__all__ = ["CALLBACK_PATH", "create_app"]

CALLBACK_PATH: Final = "/callbacks/suno/midi"


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The ingest as an aiohttp application; ``clock`` is the wall clock signatures use."""
    app = web.Application(
        client_max_size=settings.ingest.max_body_bytes,
        middlewares=[json_errors],
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry or CollectorRegistry()
    app[INGEST_METRICS] = IngestMetrics(app[REGISTRY])
    app[LIFECYCLE] = Lifecycle()
    app[CLOCK] = clock
    app[BUFFER_BUDGET] = BufferBudget(
        settings.ingest.max_buffered_bytes,
        app[INGEST_METRICS],
        settings.ingest.retry_after_seconds,
    )
    # In this order: the handler needs the publisher and the dedupe store.
    setup_publishing(app)
    setup_dedupe(app)
    setup_handler(app)
    app[READINESS] = readiness(app)
    add_ops_routes(app)
    app.router.add_post(CALLBACK_PATH, receive_callback)
    return app
