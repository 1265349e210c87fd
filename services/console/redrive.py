"""``POST /api/v1/tasks/{id}/redrive``: a task's dead letters re-sent to their source topic
by the archiver's own redrive (:mod:`services.archiver.dlq`), from the console.

The registry's ``dead_letters`` rows say where each record is on the dead-letter topic;
the bytes are read back from there. What makes a redrive send a dead letter at most once
is the archiver's: the source topic is scanned for the ``dlq.redriven_from`` headers of
earlier copies (made by the console or by ``suno-archiver dlq redrive``). The row then
records when and by whom, for the timeline. Two redrives of one task must not both scan
before either sends, on any replica: a PostgreSQL advisory lock per task serializes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

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
from services.common.http import http_error, try_again
from services.common.kafka import Publisher
from services.common.web import SETTINGS
from services.tracker.registry import Registry, Task, registry_errors

from .api import REGISTRY
from .auth import OPERATORS
from .queries import dead_letters

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["REDRIVE_LOCKS", "redrive"]

log = structlog.get_logger(__name__)

#: The first key of the per-task redrive locks (the registry's task-id locks use 14, the
#: dead-letter count 16).
REDRIVE_LOCKS = 17

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
        async with _task_locked(registry, task) as conn:
            await _redrive(request.app, connect, chosen, Marker(conn, operator), sent, skipped)
    except (PublishError, KafkaError) as exc:
        log.error("redrive_failed", task_id=task.task_id, sent=len(sent), error=str(exc))
        return try_again(
            "kafka_unavailable",
            f"Kafka did not answer ({len(sent)} of {len(chosen)} dead letters redriven; "
            "redriving again sends none twice)",
        )
    log.info("task_redriven", task_id=task.task_id, redriven=len(sent), skipped=len(skipped))
    return web.json_response({"redriven": sent, "skipped": skipped}, status=202)


@contextlib.asynccontextmanager
async def _task_locked(
    registry: Registry, task: Task
) -> AsyncIterator[PoolConnectionProxy[Record]]:
    """Waits for, then holds, the task's redrive lock, on every replica: one connection's
    session lock, not a transaction's, so that no transaction stays open while Kafka is
    read and written (seconds at worst). PostgreSQL drops it if the console dies (its
    connection ends), and the pool's reset of a released connection unlocks all, should
    the unlock below never run. The connection is the redrive's for its registry writes."""
    async with registry_errors("lock the task for a redrive"), registry.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", REDRIVE_LOCKS, str(task.pk))
        try:
            yield conn
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock($1, hashtext($2))", REDRIVE_LOCKS, str(task.pk)
            )


@dataclass(frozen=True, slots=True)
class Marker:
    """Records on a dead letter's row that it was redriven (by ``operator``, or found
    redriven before when ``None``), on the lock's connection."""

    conn: PoolConnectionProxy[Record]
    operator: str | None

    async def mark(self, row: Record, *, sent: bool) -> None:
        async with registry_errors("record a redrive"):
            await self.conn.execute(_MARK, row["id"], self.operator if sent else None)


async def _redrive(
    app: web.Application,
    connect: Callable[[], Awaitable[Publisher]],
    rows: list[Record],
    marker: Marker,
    sent: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
) -> None:
    """Read ``rows``' records back, then send per source topic what was not sent before."""
    kafka = app[SETTINGS].kafka
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
                await marker.mark(row, sent=False)
                continue
            await redrive_one(publisher, letter)
            await marker.mark(row, sent=True)
            sent.append(_item(row, source_topic=topic))
            log.info("dead_letter_redriven", dlq=letter.redrive_id, topic=topic)
