"""The application factory shared by the consumers: health and metrics over HTTP, the
storage, the publisher and the consumer loop as ``cleanup_ctx`` resources, and the handler
wrapped in the one consumer policy of :mod:`.consumer`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .consumer import ConsumerLoop, EventHandler, UnknownSchemaPolicy, callback_handler
from .metrics import ConsumerMetrics
from .settings import Settings
from .storage import Storage, open_storage
from .web import PUBLISHER, READINESS, REGISTRY, SETTINGS, add_ops_routes, publisher_ctx

__all__ = ["CONSUMER", "STORAGE", "create_consumer_app"]

STORAGE = web.AppKey("storage", Storage)
CONSUMER = web.AppKey("consumer", ConsumerLoop)


def create_consumer_app(
    settings: Settings,
    *,
    role: str,
    group_id: str,
    metrics: ConsumerMetrics,
    build_handler: Callable[[web.Application], EventHandler],
    unknown_schema: UnknownSchemaPolicy,
    produces: tuple[str, ...] = (),
    require_verified: bool = False,
) -> web.Application:
    """An app whose consumer runs ``build_handler(app)`` on each callback event.

    ``build_handler`` is called once the storage and the publisher are open; the handler it
    returns sees decoded events with valid task ids only (and verified ones only, with
    ``require_verified``), and raises to retry or dead-letter. ``unknown_schema`` says what
    the consumer does with an event of a schema it does not know (see :mod:`.consumer`):
    each app states it, the loop applies it.
    """
    app = web.Application()
    app[SETTINGS] = settings
    metrics.prime_topics([settings.kafka.topics.callbacks])
    app[REGISTRY] = metrics.registry
    topics = settings.kafka.topics

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_storage(settings.storage) as storage:
            app[STORAGE] = storage
            yield

    async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
        loop = ConsumerLoop(
            settings=settings.kafka,
            role=role,
            group_id=group_id,
            topics=[topics.callbacks],
            handler=callback_handler(build_handler(app), require_verified=require_verified),
            publisher=app[PUBLISHER],
            metrics=metrics,
            unknown_schema=unknown_schema,
            concurrency=settings.kafka.consumer_concurrency,
        )
        await loop.start()
        app[CONSUMER] = loop
        try:
            yield
        finally:
            await loop.stop()

    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(publisher_ctx(role, [topics.callbacks, *produces, topics.dlq]))
    app.cleanup_ctx.append(consumer_ctx)

    async def ready() -> bool:
        loop = app.get(CONSUMER)
        return loop is not None and await loop.ready()

    app[READINESS] = ready
    add_ops_routes(app)
    return app
