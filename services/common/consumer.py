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
- :class:`~services.common.errors.UnknownSchemaError` (a schema fingerprint nobody here
  knows): as each app says (``unknown_schema``): ``dead_letter`` (``unknown_schema``), or
  ``halt``: the partition stops at that record, uncommitted and paused, the
  ``<service>_halted_partitions`` gauge counts it, until the partition is revoked or the
  service restarts with a schema that reads it.

An offset is committed only after the effects of its record and of every record before it
are durable, so a committed offset always means done. With ``concurrency`` above 1,
up to that many records of a polled batch are handled at once, taken a partition at a
time (their storage writes and publishes overlap instead of waiting for each other's
fsyncs; records of one key, one task's callbacks, still go one after the other, in order),
and one commit goes, per partition, past the longest run of them from its first that is
done; a record still retried holds its partition's back.

A record that takes long (retries through an outage) must not cost the group membership:
after ``KAFKA_MAX_POLL_INTERVAL_SECONDS`` without a poll aiokafka leaves the group and
another member would handle the same record in parallel. So the record runs in a task of
its own while the loop keeps polling with every partition paused (aiokafka counts a member
idle only between ``getmany`` calls). A rebalance waits for the record in hand (bounded):
its running attempt may finish and commit, no further attempt starts, and past the bound
it is abandoned uncommitted, all before the partition moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

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
    UnknownSchemaError,
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
    "UnknownSchemaPolicy",
    "callback_handler",
]

log = structlog.get_logger(__name__)

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
EventHandler = Callable[[CallbackEvent], Awaitable[None]]

#: Retried with backoff for as long as it takes: trouble that passes without a code change.
_TRANSIENT = (Transient, StorageError, PublishError)

_ERROR_HEADER_LIMIT = 1000

#: What a consumer does with a record whose schema fingerprint it does not know.
UnknownSchemaPolicy = Literal["halt", "dead_letter"]
#: How one record's handling ended: committed, left uncommitted, or its partition stopped.
_Outcome = Literal["done", "abandoned", "halted"]

#: The longest a rebalance waits for the record in hand before abandoning it.
_REVOKE_WAIT_MAX = 30.0


@dataclass(frozen=True, slots=True)
class _InHand:
    tps: frozenset[TopicPartition]
    task: asyncio.Task[None]


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
        # Before the partition moves: another member must never hold the same record.
        await self._loop.release(revoked)
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
        unknown_schema: UnknownSchemaPolicy = "dead_letter",
        max_attempts: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        max_poll_records: int = 50,
        concurrency: int = 1,
    ) -> None:
        self._settings = settings
        self._role = role
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._publisher = publisher
        self.metrics = metrics
        self._unknown_schema = unknown_schema
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_poll_records = max_poll_records
        self._concurrency = max(1, concurrency)
        self._max_poll_interval = settings.max_poll_interval_seconds
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        #: Set by stop() and by a revocation: the record in hand starts no new attempt.
        self._interrupt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_offset: dict[TopicPartition, int] = {}
        self._in_hand: _InHand | None = None
        self._halted: set[TopicPartition] = set()
        #: Bumped by every revocation: records fetched before it are not handled after it.
        self._generation = 0
        if unknown_schema == "dead_letter":
            metrics.dead_letters.labels("unknown_schema")

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        poll_ms = int(self._max_poll_interval * 1000)
        consumer = AIOKafkaConsumer(
            **client_options(self._settings, self._role),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self._settings.max_message_bytes,
            fetch_max_bytes=max(52_428_800, self._settings.max_message_bytes),
            max_poll_records=self._max_poll_records,
            max_poll_interval_ms=poll_ms,
            # As the Java client: the group waits this long for members to rejoin, which
            # covers the bounded wait for the record in hand at revocation.
            rebalance_timeout_ms=poll_ms,
            # A short poll interval (tests) still gets a few heartbeats within it.
            heartbeat_interval_ms=min(3000, poll_ms // 3),
        )
        consumer.subscribe(self._topics, listener=_Listener(self))
        await start_client(consumer, self._settings)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"{self._role}-consumer")

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - bounds the drain
        """Finish the record in hand, commit it, leave the group."""
        self._stopping.set()
        self._interrupt.set()
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
        self._halted.discard(tp)
        self.metrics.halted.set(len(self._halted))
        with contextlib.suppress(KeyError):
            self.metrics.lag.remove(tp.topic, str(tp.partition))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Let the record in hand finish or abandon it, before ``revoked`` move on.

        Its running attempt may finish (and commit: the member still owns the partition);
        no further attempt or backoff starts. Past the bound it is cancelled, uncommitted:
        the next owner handles it again, which is safe because every effect is idempotent.
        """
        self._generation += 1
        in_hand = self._in_hand
        if in_hand is None or not in_hand.tps & revoked:
            return
        self._interrupt.set()
        bound = min(_REVOKE_WAIT_MAX, self._max_poll_interval / 2)
        done, _ = await asyncio.wait({in_hand.task}, timeout=bound)
        if not done:
            log.warning(
                "record_abandoned",
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in in_hand.tps),
            )
            in_hand.task.cancel()
            await asyncio.wait({in_hand.task})

    # the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self.consumer
        backoff = self._backoff_initial
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=500)
                generation = self._generation
                pending = {tp: list(records) for tp, records in batch.items()}
                while pending and not self._stopping.is_set() and generation == self._generation:
                    handful = self._handful(pending)
                    if not handful:
                        break
                    await self._hold(handful)
                await self._update_lag()
                backoff = self._backoff_initial
            except Exception as exc:  # the loop must outlive any one failure
                log.error("consumer_loop_error", error=repr(exc))
                await self._rewind()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self._backoff_max)

    def _handful(
        self, pending: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Up to ``concurrency`` records to handle at once, taken from ``pending`` a
        partition at a time, each partition's from its next on (so each partition's are
        consecutive). Partitions halted or no longer assigned are dropped."""
        assignment = self.consumer.assignment()
        handful: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        room = self._concurrency
        while room and pending:
            for tp in list(pending):
                if tp in self._halted or tp not in assignment:
                    del pending[tp]
                    continue
                if not room:
                    break
                handful.setdefault(tp, []).append(pending[tp].pop(0))
                room -= 1
                if not pending[tp]:
                    del pending[tp]
        return handful

    async def _hold(
        self, handful: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Handle a handful of records in a task of their own while the loop keeps
        polling."""
        if not self._stopping.is_set():
            self._interrupt.clear()
        task = asyncio.create_task(self._process(handful))
        self._in_hand = _InHand(frozenset(handful), task)
        try:
            await self._poll_until(task)
        except asyncio.CancelledError:
            task.cancel()  # stop() gave up: the record must not outlive the loop
            raise
        finally:
            self._in_hand = None
        if not task.cancelled():
            task.result()  # a failure of the loop itself (not the handler's) propagates

    async def _poll_until(self, task: asyncio.Task[None]) -> None:
        """Poll, every partition paused, until ``task`` is done: aiokafka counts a member
        idle only between polls, so a long record (an outage's retries) keeps the member
        in its group instead of handing the same record to another member."""
        consumer = self.consumer
        paused = False
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._max_poll_interval / 4)
            if done:
                break
            paused = True
            consumer.pause(*consumer.assignment())
            try:
                stray = await consumer.getmany(timeout_ms=0)
            except KafkaError as exc:
                log.warning("keepalive_poll_failed", error=repr(exc))
                continue
            # Partitions assigned by a rebalance meanwhile are not paused yet: put their
            # records back, to come again once the record in hand is done.
            for stray_tp, records in stray.items():
                consumer.seek(stray_tp, records[0].offset)
                consumer.pause(stray_tp)
        if paused:
            consumer.resume(*(consumer.assignment() - self._halted))

    async def _rewind(self) -> None:
        """Go back to the committed offsets: records fetched but not done must come again,
        so no later commit can pass over them."""
        consumer = self.consumer
        for tp in consumer.assignment():
            if tp in self._halted:
                continue  # already at its stopped record
            with contextlib.suppress(KafkaError):
                committed = await consumer.committed(tp)
                if committed is None:
                    # Nothing committed yet: start over as auto_offset_reset=earliest would.
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
            self._next_offset.pop(tp, None)

    async def _process(
        self, handful: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Handle ``handful`` at once; commit, per partition, past those done from its
        first on."""
        records = [record for same_tp in handful.values() for record in same_tp]
        for tp, same_tp in handful.items():
            # Its first record in hand is the next to be done: lag counts it until committed.
            self._next_offset[tp] = same_tp[0].offset
        if len(records) == 1:
            outcomes = {id(records[0]): await self._attempt(records[0])}
        else:
            outcomes = await self._attempt_by_key(records)
        offsets = {}
        for tp, same_tp in handful.items():
            for record in same_tp:
                outcome = outcomes[id(record)]
                if outcome == "halted":
                    self._halt(tp, record.offset)
                if outcome != "done":
                    break  # stopping, revoked or halted: no commit past this record
                offsets[tp] = record.offset + 1
        if offsets:
            await self._commit(offsets)

    async def _attempt_by_key(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> dict[int, _Outcome]:
        """The records of each key in turn, in the partition's order (a task's callbacks
        never race each other), the keys at once; each record's outcome by ``id``,
        ``abandoned`` for those left unhandled behind one of their key that was not done."""
        outcomes: dict[int, _Outcome] = {id(record): "abandoned" for record in records}
        by_key: dict[tuple[str, int, bytes | None], list[ConsumerRecord[bytes, bytes]]] = {}
        for record in records:
            by_key.setdefault((record.topic, record.partition, record.key), []).append(record)

        async def in_turn(same_key: list[ConsumerRecord[bytes, bytes]]) -> None:
            for record in same_key:
                outcomes[id(record)] = await self._attempt(record)
                if outcomes[id(record)] != "done":
                    return

        # Each key in a task of its own, so each record has a log context of its own.
        await asyncio.gather(*(in_turn(same_key) for same_key in by_key.values()))
        return outcomes

    async def _attempt(self, record: ConsumerRecord[bytes, bytes]) -> _Outcome:
        started = time.perf_counter()
        # A log context of this record's own, dropped when it is done: what was bound for
        # one record (task id, delivery key) must not leak onto the next one's lines.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            topic=record.topic, partition=record.partition, offset=record.offset
        )
        try:
            outcome = await self._handle_with_policy(record)
            if outcome == "done":
                self.metrics.processing.labels(record.topic).observe(time.perf_counter() - started)
            return outcome
        finally:
            structlog.contextvars.clear_contextvars()

    def _halt(self, tp: TopicPartition, offset: int) -> None:
        """Stop ``tp`` at ``offset``: paused, positioned on the record, never committed past."""
        consumer = self.consumer
        if tp not in consumer.assignment():
            return  # revoked meanwhile: the next owner meets the record again
        self._halted.add(tp)
        consumer.pause(tp)
        consumer.seek(tp, offset)
        self.metrics.halted.set(len(self._halted))

    async def _handle_with_policy(self, record: ConsumerRecord[bytes, bytes]) -> _Outcome:
        """Handle, retry, dead-letter or halt on one record."""
        attempt = 0
        backoff = self._backoff_initial
        while True:
            attempt += 1
            try:
                await self._handler(record)
            except DeadLetter as exc:
                return await self._dead_letter(record, exc.reason, str(exc))
            except UnknownSchemaError as exc:
                if self._unknown_schema == "dead_letter":
                    return await self._dead_letter(record, "unknown_schema", str(exc))
                log.error(
                    "partition_halted",
                    reason="unknown_schema",
                    error=str(exc),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                return "halted"
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
                return "done"
            self.metrics.records.labels(record.topic, "retried").inc()
            # A record held by retries must show as growing lag, not a frozen gauge.
            with contextlib.suppress(KafkaError):
                await self._update_lag()
            if not await self._sleep(backoff):
                return "abandoned"
            backoff = min(backoff * 2, self._backoff_max)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: str
    ) -> _Outcome:
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
                    return "abandoned"
                backoff = min(backoff * 2, self._backoff_max)
        self.metrics.records.labels(record.topic, "dead_lettered").inc()
        self.metrics.dead_letters.labels(reason).inc()
        log.warning("record_dead_lettered", reason=reason, error=error[:200])
        return "done"

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailedError among them
            # The partition moved to another member: it will handle the record again,
            # which is safe because every effect is idempotent.
            self.metrics.commit_failures.inc()
            log.warning("commit_failed", error=repr(exc))
            return
        self._next_offset.update(offsets)

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
        """A backoff of the record in hand; ``False`` when stopping or revoked meanwhile."""
        try:
            await asyncio.wait_for(self._interrupt.wait(), seconds)
        except TimeoutError:
            return True
        return False
