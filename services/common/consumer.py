"""The consumer loop both consumers run: decode, handle, dead-letter or retry, commit.

Handlers hold the business logic only: ``async def handle(event: CallbackEvent) -> None``.
Everything around it is decided here, in one place (the faststream way).
:func:`callback_handler` decodes the record, binds the event's log context and refuses
task ids no file can be named after; :class:`ConsumerLoop` then acts on the exception the
handler raises (the tree in :mod:`services.common.errors`):

- :class:`~services.common.errors.DeadLetter` (reason its own),
  :class:`~services.common.errors.CodecError` (``undecodable``), a task id that breaks
  :data:`~services.common.keys.TASK_ID_RULE` (``invalid_task_id``), an event the ingest
  accepted unsigned where the consumer requires verified ones (``unverified``): the record
  goes to the dead-letter topic with headers saying why and where from; the loop moves on.
- :class:`~services.common.errors.Transient`, :class:`~services.common.errors.StorageError`,
  :class:`~services.common.errors.PublishError` (storage full, Kafka briefly away):
  retried with exponential backoff for as long as it takes; the offset is not committed
  meanwhile.
- anything else: retried ``max_attempts`` times, then dead-lettered as ``processing_failed``.

An offset is committed only after its record's effects are durable, one record at a time,
so a committed offset always means done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from .errors import (
    CodecError,
    DeadLetter,
    NotStartedError,
    PublishError,
    StorageError,
    Transient,
)
from .events import CallbackEvent
from .kafka import Publisher, client_options, start_client
from .keys import TASK_ID_RULE, is_valid_task_id
from .metrics import ConsumerMetrics
from .settings import KafkaSettings

# DeadLetter and Transient are defined in .errors; named here too, where they used to be.
__all__ = [
    "ConsumerLoop",
    "DeadLetter",
    "EventHandler",
    "RecordHandler",
    "Transient",
    "callback_handler",
]

log = structlog.get_logger(__name__)

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
EventHandler = Callable[[CallbackEvent], Awaitable[None]]

#: Retried with backoff for as long as it takes: trouble that passes without a code change.
_TRANSIENT = (Transient, StorageError, PublishError)

_ERROR_HEADER_LIMIT = 1000


#: Why an unverified event is refused, in its dead-letter record.
UNVERIFIED: Final = (
    "the ingest accepted this callback unsigned (INGEST_ALLOW_UNSIGNED); this consumer "
    "requires verified events (PROCESSOR_REQUIRE_VERIFIED)"
)


def callback_handler(handle: EventHandler, *, require_verified: bool = False) -> RecordHandler:
    """Run ``handle`` on each record's :class:`CallbackEvent`, so no handler decodes,
    binds log context or checks the task id or the signature status itself.

    ``require_verified``: an event not marked ``VERIFIED`` is dead-lettered (``unverified``)
    before ``handle`` sees it: anyone who knows a task id could have sent it.
    """

    async def handle_record(record: ConsumerRecord[bytes, bytes]) -> None:
        event = CallbackEvent.decode(record.value or b"")  # CodecError: undecodable
        # Bound until the record is done, so the loop's retry and dead-letter lines name it.
        structlog.contextvars.bind_contextvars(
            task_id=event.task_id, delivery_key=event.delivery_key
        )
        if not is_valid_task_id(event.task_id):
            # The ingest refuses such ids; another producer's record must not stall the
            # partition on a file name the storage cannot hold.
            raise DeadLetter("invalid_task_id", TASK_ID_RULE)
        if require_verified and event.signature != "VERIFIED":
            raise DeadLetter("unverified", UNVERIFIED)
        await handle(event)

    return handle_record


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._loop.metrics.rebalances.labels("revoked").inc()
        for tp in revoked:
            self._loop.forget(tp)
        if revoked:
            log.info(
                "partitions_revoked",
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop.metrics.rebalances.labels("assigned").inc()
        if assigned:
            log.info(
                "partitions_assigned",
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            )


class ConsumerLoop:
    """Runs ``handler`` over ``topics`` for consumer group ``group_id`` until stopped."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        role: str,
        group_id: str,
        topics: Sequence[str],
        handler: RecordHandler,
        publisher: Publisher,
        metrics: ConsumerMetrics,
        max_attempts: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        max_poll_records: int = 50,
    ) -> None:
        self._settings = settings
        self._role = role
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._publisher = publisher
        self.metrics = metrics
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_poll_records = max_poll_records
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_offset: dict[TopicPartition, int] = {}
        self._topics_seen_at = 0.0

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self._settings, self._role),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self._settings.max_message_bytes,
            fetch_max_bytes=max(52_428_800, self._settings.max_message_bytes),
            max_poll_records=self._max_poll_records,
        )
        consumer.subscribe(self._topics, listener=_Listener(self))
        await start_client(consumer, self._settings)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"{self._role}-consumer")

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - bounds the drain
        """Finish the record in hand, commit it, leave the group."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                log.warning("consumer_stop_timeout", timeout=timeout)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        self.metrics.ready.set(0)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise NotStartedError(f"the {self._role} consumer is not started; call start()")
        return self._consumer

    async def ready(self) -> bool:
        """Started, loop alive, and every topic known to the cluster."""
        if self._consumer is None or self._task is None or self._task.done():
            self.metrics.ready.set(0)
            return False
        try:
            async with asyncio.timeout(2.0):
                known = await self._consumer.topics()
        except (TimeoutError, KafkaError, OSError):
            self.metrics.ready.set(0)
            return False
        ok = all(topic in known for topic in self._topics)
        self.metrics.ready.set(1 if ok else 0)
        return ok

    def forget(self, tp: TopicPartition) -> None:
        self._next_offset.pop(tp, None)
        with contextlib.suppress(KeyError):
            self.metrics.lag.remove(tp.topic, str(tp.partition))

    # the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self.consumer
        backoff = self._backoff_initial
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for record in records:
                        if self._stopping.is_set() or tp not in consumer.assignment():
                            break
                        await self._process(tp, record)
                await self._update_lag()
                backoff = self._backoff_initial
            except Exception as exc:  # the loop must outlive any one failure
                log.error("consumer_loop_error", error=repr(exc))
                await self._rewind()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _rewind(self) -> None:
        """Go back to the committed offsets: records fetched but not done must come again,
        so no later commit can pass over them."""
        consumer = self.consumer
        for tp in consumer.assignment():
            with contextlib.suppress(KafkaError):
                committed = await consumer.committed(tp)
                if committed is None:
                    # Nothing committed yet: start over as auto_offset_reset=earliest would.
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
            self._next_offset.pop(tp, None)

    async def _process(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        started = time.perf_counter()
        # The record in hand is the next to be done: lag counts it until it is committed.
        self._next_offset[tp] = record.offset
        # A log context of this record's own, dropped when it is done: what was bound for
        # one record (task id, delivery key) must not leak onto the next one's lines.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            topic=record.topic, partition=record.partition, offset=record.offset
        )
        try:
            done = await self._handle_with_policy(record)
            if not done:
                return  # stopping: leave the offset uncommitted
            self.metrics.processing.labels(record.topic).observe(time.perf_counter() - started)
            await self._commit(tp, record.offset + 1)
        finally:
            structlog.contextvars.clear_contextvars()

    async def _handle_with_policy(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle, retry or dead-letter one record; ``False`` when stopped before done."""
        attempt = 0
        backoff = self._backoff_initial
        while True:
            attempt += 1
            try:
                await self._handler(record)
            except DeadLetter as exc:
                return await self._dead_letter(record, exc.reason, str(exc))
            except CodecError as exc:
                return await self._dead_letter(record, "undecodable", str(exc))
            except _TRANSIENT as exc:
                log.warning("record_retry", error=str(exc), attempt=attempt, transient=True)
            except Exception as exc:
                if attempt >= self._max_attempts:
                    log.error("record_failed", error=repr(exc), attempts=attempt)
                    return await self._dead_letter(record, "processing_failed", repr(exc))
                log.warning("record_retry", error=repr(exc), attempt=attempt, transient=False)
            else:
                self.metrics.records.labels(record.topic, "ok").inc()
                return True
            self.metrics.records.labels(record.topic, "retried").inc()
            # A record held by retries must show as growing lag, not a frozen gauge.
            with contextlib.suppress(KafkaError):
                await self._update_lag()
            if not await self._sleep(backoff):
                return False
            backoff = min(backoff * 2, self._backoff_max)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: str
    ) -> bool:
        headers = [
            *((k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")),
            ("dlq.reason", reason.encode()),
            ("dlq.error", error[:_ERROR_HEADER_LIMIT].encode("utf-8", "replace")),
            ("dlq.source.topic", record.topic.encode()),
            ("dlq.source.partition", str(record.partition).encode()),
            ("dlq.source.offset", str(record.offset).encode()),
            ("dlq.source.timestamp", str(record.timestamp).encode()),
            ("dlq.consumer.group", self._group_id.encode()),
            ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        backoff = self._backoff_initial
        while True:
            try:
                await self._publisher.publish(
                    self._settings.topics.dlq,
                    key=record.key or b"",
                    value=record.value or b"",
                    headers=headers,
                    timeout=30.0,
                )
                break
            except PublishError as exc:
                log.error("dead_letter_publish_failed", error=str(exc))
                if not await self._sleep(backoff):
                    return False
                backoff = min(backoff * 2, self._backoff_max)
        self.metrics.records.labels(record.topic, "dead_lettered").inc()
        self.metrics.dead_letters.labels(reason).inc()
        log.warning("record_dead_lettered", reason=reason, error=error[:200])
        return True

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self.consumer.commit({tp: offset})
        except KafkaError as exc:  # CommitFailedError among them
            # The partition moved to another member: it will handle the record again,
            # which is safe because every effect is idempotent.
            self.metrics.commit_failures.inc()
            log.warning("commit_failed", error=repr(exc))
            return
        self._next_offset[tp] = offset

    async def _update_lag(self) -> None:
        consumer = self.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = self._next_offset.get(tp)
            if position is None:
                try:
                    position = await consumer.position(tp)
                except KafkaError:
                    continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; ``False`` when asked to stop meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False
