"""The archiver service: callback event -> raw body + sidecar, durably -> commit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.common.consumer import EventHandler
from services.common.consumer_app import STORAGE, create_consumer_app
from services.common.errors import ArchiveStorageError, StorageError
from services.common.events import CallbackEvent
from services.common.settings import Settings
from services.common.storage import LocalStorage, Storage

from .archive import RAW_PREFIX, archive_event
from .metrics import ArchiverMetrics

__all__ = ["ARCHIVER_METRICS", "Archiver", "create_app", "remove_stale_temporaries"]

log = structlog.get_logger(__name__)

ARCHIVER_METRICS = web.AppKey("archiver_metrics", ArchiverMetrics)


class Archiver:
    """One callback event into the archive, durably.

    Decoding, the task-id check, the log context, retries and dead letters are the
    consumer wrapper's (:mod:`services.common.consumer`): an event :func:`archive_event`
    refuses is dead-lettered there, a storage failure retried there once counted here.
    """

    def __init__(self, *, storage: Storage, metrics: ArchiverMetrics) -> None:
        self._storage = storage
        self._metrics = metrics

    async def handle(self, event: CallbackEvent) -> None:
        try:
            outcome, written = await archive_event(self._storage, event)
        except ArchiveStorageError as exc:
            self._metrics.storage_errors.labels(exc.operation).inc()
            log.error("archive_write_failed", operation=exc.operation, error=str(exc))
            raise
        self._metrics.archived.labels(outcome).inc()
        if event.replay:
            self._metrics.replayed.inc()
        self._metrics.written_bytes.inc(written)
        log.info("callback_archived", outcome=outcome, size=len(event.body), replay=event.replay)


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    metrics = ArchiverMetrics(registry or CollectorRegistry())

    def build_handler(app: web.Application) -> EventHandler:
        return Archiver(storage=app[STORAGE], metrics=metrics).handle

    app = create_consumer_app(
        settings,
        role="archiver",
        group_id=settings.archiver.group_id,
        metrics=metrics.consumer,
        build_handler=build_handler,
        # The archive is the copy of last resort: never commit past a callback unarchived.
        unknown_schema="halt",
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
