"""The console's operator actions (``POST /api/v1/tasks/{id}/replay`` and ``/redrive``)
and what the pages need to know about them (``GET /api/v1/console``), with the Kafka
publisher they use.

A replay is the archiver's own (:func:`services.archiver.replay.replay`): the task's
archived bodies, oldest first, re-published to the callbacks topic marked as replays (by
the operator who asked), so the processor renders them again and the tracker puts the
replay in the task's timeline. The publisher starts at the first action, not with the
console: pages and readiness never wait on Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from services.archiver.catalog import ArchiveEntry, Filters, scan
from services.archiver.replay import replay
from services.common.errors import PublishError
from services.common.http import http_error, try_again
from services.common.kafka import Publisher
from services.common.replays import ReplayMark
from services.common.web import SETTINGS
from services.tracker.registry import Task

from .api import API_PREFIX, STORAGE, with_task
from .auth import OPERATORS, Operators, action
from .redrive import redrive

__all__ = ["KAFKA", "PUBLISH_TIMEOUT_SECONDS", "ActionPublisher", "setup_actions"]

log = structlog.get_logger(__name__)

#: How long one replayed record may wait for Kafka's acknowledgement.
PUBLISH_TIMEOUT_SECONDS: Final = 10.0


class ActionPublisher:
    """The console's :class:`Publisher`, started by the first action that needs it (and
    again by the next one after a failed start)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._lock = asyncio.Lock()

    async def get(self) -> Publisher:
        """The started publisher; :class:`PublishError` when Kafka cannot be reached."""
        async with self._lock:
            if not self._publisher.started:
                await self._publisher.start()
        return self._publisher

    async def stop(self) -> None:
        await self._publisher.stop()


KAFKA = web.AppKey("console_kafka", ActionPublisher)


def setup_actions(app: web.Application) -> None:
    app[OPERATORS] = Operators.from_settings(app[SETTINGS].console)
    app.cleanup_ctx.append(_publisher_ctx)
    app.router.add_get(f"{API_PREFIX}/console", _console)
    app.router.add_post(f"{API_PREFIX}/tasks/{{id}}/replay", _replay)
    app.router.add_post(f"{API_PREFIX}/tasks/{{id}}/redrive", _redrive)


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    app[KAFKA] = ActionPublisher(Publisher(app[SETTINGS].kafka, "console"))
    try:
        yield
    finally:
        await app[KAFKA].stop()


async def _console(request: web.Request) -> web.Response:
    operators = request.app[OPERATORS]
    return web.json_response({"read_only": operators.read_only, "actions": operators.actions})


@action("replay")
@with_task
async def _replay(request: web.Request, task: Task) -> web.Response:
    """Every archived body of the task, oldest first, onto the callbacks topic as replays."""
    storage = request.app[STORAGE]
    entries: list[ArchiveEntry] = []
    if task.task_id is not None:
        async for found in scan(storage, Filters(task_id=task.task_id)):
            if isinstance(found, ArchiveEntry):
                entries.append(found)
            else:
                log.warning("replay_entry_skipped", problem=str(found))
    if not entries:
        return http_error(
            404, "no_body", f"no archived result body for task {task.task_id or task.request_id!r}"
        )
    entries.sort(key=ArchiveEntry.sort_key)
    sent: list[str] = []
    topic = request.app[SETTINGS].kafka.topics.callbacks
    try:
        publisher = await request.app[KAFKA].get()
        await replay(
            storage,
            publisher,
            topic,
            entries,
            on_sent=lambda entry: sent.append(entry.body_sha256),
            on_skipped=lambda _entry, why: log.warning("replay_entry_skipped", problem=why),
            timeout=PUBLISH_TIMEOUT_SECONDS,
            mark=ReplayMark(via="console", by=request.app[OPERATORS].identify(request)),
        )
    except PublishError as exc:
        log.error("replay_failed", task_id=task.task_id, sent=len(sent), error=str(exc))
        return try_again(
            "kafka_unavailable",
            f"Kafka did not acknowledge the replay ({len(sent)} of {len(entries)} bodies sent; "
            "replaying again is harmless)",
        )
    log.info("task_replayed", task_id=task.task_id, replayed=len(sent), topic=topic)
    return web.json_response({"replayed": len(sent), "bodies": sent}, status=202)


@action("redrive")
@with_task
async def _redrive(request: web.Request, task: Task) -> web.Response:
    """The task's dead letters onto their source topics (:mod:`services.console.redrive`)."""
    return await redrive(request, task, request.app[KAFKA].get)
