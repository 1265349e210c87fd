"""The archiver service: callback event -> raw body + sidecar, durably -> commit."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.common.consumer import RecordHandler, Transient
from services.common.consumer_app import STORAGE, create_consumer_app
from services.common.errors import StorageError
from services.common.events import CallbackEvent
from services.common.metrics import ConsumerMetrics
from services.common.settings import Settings

from .archive import metadata_key, raw_key, sidecar

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    metrics = ConsumerMetrics("archiver", registry or CollectorRegistry())

    def build_handler(app: web.Application) -> RecordHandler:
        async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
            event = CallbackEvent.decode(record.value or b"")
            structlog.contextvars.bind_contextvars(
                task_id=event.task_id, delivery_key=event.delivery_key
            )
            storage = app[STORAGE]
            key = raw_key(event.task_id, event.body_sha256)
            try:
                # Sidecar first: a body present means its metadata is too.
                await storage.put(metadata_key(event.task_id, event.body_sha256), sidecar(event))
                await storage.put(key, event.body)
            except StorageError as exc:
                raise Transient(str(exc)) from exc
            log.info("callback_archived", size=len(event.body), replay=event.replay)

        return handle

    return create_consumer_app(
        settings,
        role="archiver",
        group_id=settings.archiver.group_id,
        metrics=metrics,
        build_handler=build_handler,
    )
