"""The archiver service: callback event -> raw body + sidecar, durably -> commit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.common.consumer import DeadLetter, RecordHandler, Transient
from services.common.consumer_app import STORAGE, create_consumer_app
from services.common.errors import StorageError
from services.common.events import CallbackEvent
from services.common.settings import Settings
from services.common.storage import LocalStorage, Storage

from .archive import RAW_PREFIX, ArchiveStorageError, InvalidEventError, archive_event
from .metrics import ArchiverMetrics

__all__ = ["ARCHIVER_METRICS", "create_app", "remove_stale_temporaries"]

log = structlog.get_logger(__name__)

ARCHIVER_METRICS = web.AppKey("archiver_metrics", ArchiverMetrics)


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    metrics = ArchiverMetrics(registry or CollectorRegistry())

    def build_handler(app: web.Application) -> RecordHandler:
        async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
            event = CallbackEvent.decode(record.value or b"")  # CodecError: dead letter
            structlog.contextvars.bind_contextvars(
                task_id=event.task_id, delivery_key=event.delivery_key
            )
            try:
                outcome, written = await archive_event(app[STORAGE], event)
            except InvalidEventError as exc:
                raise DeadLetter(exc.reason, str(exc)) from exc
            except ArchiveStorageError as exc:
                metrics.storage_errors.labels(exc.operation).inc()
                log.error("archive_write_failed", operation=exc.operation, error=str(exc))
                raise Transient(str(exc)) from exc
            metrics.archived.labels(outcome).inc()
            if event.replay:
                metrics.replayed.inc()
            metrics.written_bytes.inc(written)
            log.info(
                "callback_archived", outcome=outcome, size=len(event.body), replay=event.replay
            )

        return handle

    app = create_consumer_app(
        settings,
        role="archiver",
        group_id=settings.archiver.group_id,
        metrics=metrics.consumer,
        build_handler=build_handler,
    )
    app[ARCHIVER_METRICS] = metrics

    async def cleanup_ctx(app: web.Application) -> AsyncIterator[None]:
        await remove_stale_temporaries(app[STORAGE], metrics)
        yield

    # After the storage is open, before the consumer starts.
    app.cleanup_ctx.insert(1, cleanup_ctx)
    return app


async def remove_stale_temporaries(storage: Storage, metrics: ArchiverMetrics) -> int:
    """Remove temporary files a killed archiver left in ``raw/`` (local storage only).

    Failing to clean is logged, never fatal: listings ignore temporary files anyway.
    """
    if not isinstance(storage, LocalStorage):
        return 0
    try:
        removed = await storage.remove_temporary_files(RAW_PREFIX.rstrip("/"))
    except StorageError as exc:
        metrics.storage_errors.labels("cleanup").inc()
        log.error("temporary_cleanup_failed", error=str(exc))
        return 0
    if removed:
        log.info("temporary_files_removed", count=len(removed))
    return len(removed)
