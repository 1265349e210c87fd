"""``POST /api/v1/tasks/{id}/redrive``: a task's dead letters re-sent to their source topic
by the archiver's own redrive (:mod:`services.archiver.dlq`), from the console.

The registry's ``dead_letters`` rows say where each record is on the dead-letter topic;
the bytes are read back from there. What makes a redrive send a dead letter at most once
is the archiver's: the source topic is scanned for the ``dlq.redriven_from`` headers of
earlier copies (made by the console or by ``suno-archiver dlq redrive``). The row then
records when and by whom, for the timeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from itertools import groupby
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError
from asyncpg import Record

from services.archiver.dlq import (
    DeadLetterRecord,
    already_redriven,
    read_dead_letters_at,
    redrive_one,
)
from services.common.errors import CommandError, PublishError
from services.common.http import RETRY_AFTER_SECONDS, http_error
from services.common.kafka import Publisher
from services.common.web import SETTINGS
from services.tracker.registry import Registry, Task, registry_errors

from .api import REGISTRY
from .auth import OPERATORS
from .queries import dead_letters

__all__ = ["REDRIVE_LOCK", "redrive"]

log = structlog.get_logger(__name__)

#: One redrive at a time in this process: two at once could both find a dead letter not
#: yet redriven and both send it.
REDRIVE_LOCK = web.AppKey("console_redrive_lock", asyncio.Lock)

_MARK = """
UPDATE dead_letters SET redriven_at = now(), redriven_by = $2
WHERE id = $1 AND redriven_at IS NULL
"""

Place = tuple[str, int, int]


def _place(row: Record) -> Place:
    return (row["dlq_topic"], row["dlq_partition"], row["dlq_offset"])


def _item(row: Record, **more: Any) -> dict[str, Any]:
    topic, partition, offset = _place(row)
    return {"id": row["id"], "dlq": f"{topic}/{partition}/{offset}", **more}


def _chosen(body: Any, rows: list[Record]) -> list[Record] | web.Response:
    """The rows the body names (``dead_letters``: row ids), else those not redriven yet."""
    wanted = body.get("dead_letters") if isinstance(body, dict) else None
    if wanted is None:
        return [row for row in rows if row["redriven_at"] is None]
    if not isinstance(wanted, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in wanted
    ):
        return http_error(400, "invalid_body", "dead_letters must be a list of dead letter ids")
    by_id = {row["id"]: row for row in rows}
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        return http_error(
            404, "unknown_dead_letter", f"no dead letter {unknown} on this task (see its timeline)"
        )
    return [by_id[i] for i in dict.fromkeys(wanted)]


async def redrive(
    request: web.Request, task: Task, connect: Callable[[], Awaitable[Publisher]]
) -> web.Response:
    """The chosen dead letters of the task, each onto its source topic at most once
    (``connect``: the started publisher of the console's actions)."""
    registry = request.app[REGISTRY]
    rows = await dead_letters(registry, task)
    if not rows:
        name = task.task_id or task.request_id
        return http_error(404, "no_dead_letters", f"task {name!r} has no dead letters")
    chosen = _chosen(orjson.loads(await request.read() or b"{}"), rows)
    if isinstance(chosen, web.Response):
        return chosen
    operator = request.app[OPERATORS].identify(request)
    sent: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    try:
        async with request.app[REDRIVE_LOCK]:
            await _redrive(request.app, connect, chosen, operator, sent, skipped)
    except (PublishError, KafkaError) as exc:
        log.error("redrive_failed", task_id=task.task_id, sent=len(sent), error=str(exc))
        return http_error(
            503,
            "kafka_unavailable",
            f"Kafka did not answer ({len(sent)} of {len(chosen)} dead letters redriven; "
            "redriving again sends none twice); try again in a few seconds",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.info("task_redriven", task_id=task.task_id, redriven=len(sent), skipped=len(skipped))
    return web.json_response({"redriven": sent, "skipped": skipped}, status=202)


async def _redrive(
    app: web.Application,
    connect: Callable[[], Awaitable[Publisher]],
    rows: list[Record],
    operator: str | None,
    sent: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
) -> None:
    """Read ``rows``' records back, then send per source topic what was not sent before."""
    kafka, registry = app[SETTINGS].kafka, app[REGISTRY]
    records = await read_dead_letters_at(kafka, map(_place, rows))
    ready: list[tuple[Record, DeadLetterRecord]] = []
    for row in rows:
        letter = records.get(_place(row))
        if letter is None:
            why = "the record is no longer on the dead-letter topic (retention removed it)"
            skipped.append(_item(row, code="gone", message=why))
        elif letter.source_topic is None:
            why = "the record has no dlq.source.topic header: nowhere to send it"
            skipped.append(_item(row, code="no_source_topic", message=why))
        else:
            ready.append((row, letter))
    if not ready:
        return
    publisher = await connect()
    ready.sort(key=lambda pair: pair[1].source_topic or "")
    for topic, pairs in groupby(ready, key=lambda pair: pair[1].source_topic or ""):
        group = list(pairs)
        try:
            seen = await already_redriven(
                kafka, topic, [letter for _, letter in group], force=False
            )
        except CommandError as exc:
            skipped.extend(_item(row, code="unprovable", message=str(exc)) for row, _ in group)
            continue
        for row, letter in group:
            if letter.redrive_id in seen:
                why = f"a copy of it is on {topic} already"
                skipped.append(_item(row, code="already_redriven", message=why))
                await _mark(registry, row, None)
                continue
            await redrive_one(publisher, letter)
            await _mark(registry, row, operator)
            sent.append(_item(row, source_topic=topic))
            log.info("dead_letter_redriven", dlq=letter.redrive_id, topic=topic)


async def _mark(registry: Registry, row: Record, operator: str | None) -> None:
    async with registry_errors("record a redrive"):
        await registry.pool.execute(_MARK, row["id"], operator)
