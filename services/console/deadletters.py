"""The console's dead-letter indexer: every record of the dead-letter topic, one row of
the registry's ``dead_letters`` table, so the console shows them per task and filters on
them without reading Kafka at each request.

It runs the project's :class:`~services.common.consumer.ConsumerLoop` in its own group
(``CONSOLE_DLQ_GROUP_ID``): an offset is committed only once its row is written, and a
record indexed twice (a rebalance, a restart before the commit) finds its row there. The
console serves its pages without Kafka, so the indexer starts in the background and keeps
trying until the broker answers; readiness never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web
from aiokafka.structs import ConsumerRecord

from services.archiver.dlq import DeadLetterRecord
from services.common.consumer import ConsumerLoop, RecordHandler
from services.common.errors import Transient
from services.common.kafka import Publisher, ensure_topics
from services.common.metrics import ConsumerMetrics
from services.common.settings import KafkaSettings
from services.common.web import REGISTRY, SETTINGS
from services.tracker.registry import Registry, registry_errors

from .api import REGISTRY as TASKS

__all__ = ["dead_letter_row", "index_handler", "indexer_ctx"]

log = structlog.get_logger(__name__)

#: Seconds between attempts to reach Kafka while it is away (doubling up to the last).
_START_BACKOFF = (1.0, 30.0)
#: Seconds between refreshes of the indexer's readiness gauge.
_READY_EVERY = 10.0

_INSERT = """
INSERT INTO dead_letters (
    dlq_topic, dlq_partition, dlq_offset, dlq_timestamp, task_id, reason, error,
    source_topic, source_partition, source_offset, source_timestamp, consumer_group,
    failed_at, headers, value_bytes, value_sha256
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO NOTHING
"""


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL; another producer's header might."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _int(value: str | None, bits: int) -> int | None:
    """A number that fits its column (``integer``: 32 bits, ``bigint``: 64), else NULL."""
    try:
        number = None if value is None else int(value)
    except ValueError:
        return None
    return number if number is not None and -(2 ** (bits - 1)) <= number < 2 ** (bits - 1) else None


def _time(value: str | None) -> datetime | None:
    """An ISO time (``dlq.failed_at``) or epoch milliseconds (``dlq.source.timestamp``)."""
    if value is None:
        return None
    with contextlib.suppress(ValueError, OverflowError, OSError):
        if value.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def dead_letter_row(record: ConsumerRecord[bytes, bytes]) -> tuple[object, ...]:
    """The ``dead_letters`` row of ``record``. Never fails: a header that is missing or
    unreadable (a record some other producer wrote) is a NULL column."""
    letter = DeadLetterRecord.from_record(record)
    value = letter.value or b""
    key = _text(letter.key.decode("utf-8", "replace")) if letter.key else None
    headers = {name: _text(letter.header(name)) for name, _ in letter.headers}
    return (
        letter.topic,
        letter.partition,
        letter.offset,
        letter.timestamp,
        key,
        _text(letter.reason),
        _text(letter.header("dlq.error")),
        _text(letter.source_topic),
        _int(letter.header("dlq.source.partition"), 32),
        _int(letter.header("dlq.source.offset"), 64),
        _time(letter.header("dlq.source.timestamp")),
        _text(letter.header("dlq.consumer.group")),
        _time(letter.header("dlq.failed_at")),
        orjson.dumps(headers).decode(),
        len(value),
        hashlib.sha256(value).hexdigest(),
    )


def index_handler(registry: Registry) -> RecordHandler:
    """Write each record's row. Every failure is :class:`Transient`, retried until it
    passes: a dead letter of this consumer would land on the very topic it reads."""

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            async with registry_errors("index a dead letter"):
                await registry.pool.execute(_INSERT, *dead_letter_row(record))
        except Exception as exc:
            raise Transient(f"dead letter not indexed: {exc}") from exc

    return handle


async def indexer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The indexer, started in the background (Kafka may be away), stopped on the way out."""
    settings = app[SETTINGS]
    metrics = ConsumerMetrics("console_dlq", app[REGISTRY])
    metrics.prime_topics([settings.kafka.topics.dlq])
    loop = ConsumerLoop(
        settings=settings.kafka,
        role="console-dlq",
        group_id=settings.console.dlq_group_id,
        topics=[settings.kafka.topics.dlq],
        handler=index_handler(app[TASKS]),
        # Never started, never used: the handler raises only Transient, so nothing is
        # ever dead-lettered from here.
        publisher=Publisher(settings.kafka, "console-dlq"),
        metrics=metrics,
        unknown_schema="halt",
    )
    running = asyncio.create_task(_run(loop, settings.kafka), name="console-dlq-indexer")
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await loop.stop()


async def _run(loop: ConsumerLoop, kafka: KafkaSettings) -> None:
    """Start ``loop`` once Kafka answers, then keep its ``console_dlq_ready`` gauge fresh
    (the console's readiness does not ask Kafka, so no probe refreshes it)."""
    delay, longest = _START_BACKOFF
    while True:
        try:
            # As every service does at start: a consumer subscribed to a topic that does
            # not exist yet would only notice it at its next metadata refresh (minutes).
            await ensure_topics(kafka, "console-dlq", [kafka.topics.dlq])
            await loop.start()
            log.info("dlq_indexer_started")
            break
        except Exception as exc:  # KafkaUnavailableError mostly: try again, never give up
            log.warning("dlq_indexer_waiting_for_kafka", error=str(exc), retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, longest)
    while True:
        await loop.ready()
        await asyncio.sleep(_READY_EVERY)
