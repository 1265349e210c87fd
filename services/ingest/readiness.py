"""What ``/readyz`` answers for the ingest: send me callbacks, or send them elsewhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from services.common.errors import PipelineError
from services.common.web import PUBLISHER, SETTINGS

from .lifecycle import LIFECYCLE
from .metrics import INGEST_METRICS

__all__ = ["readiness"]


def readiness(app: web.Application) -> Callable[[], Awaitable[bool]]:
    """Ready = not draining, producer connected, callbacks topic present."""

    async def ready() -> bool:
        metrics = app[INGEST_METRICS]
        publisher = app.get(PUBLISHER)
        kafka_ok = False
        if publisher is not None and publisher.started:
            try:
                missing = await publisher.missing_topics([app[SETTINGS].kafka.topics.callbacks])
                kafka_ok = not missing
            except PipelineError:
                kafka_ok = False
        metrics.kafka_ready.set(1 if kafka_ok else 0)
        return kafka_ok and not app[LIFECYCLE].draining

    return ready
