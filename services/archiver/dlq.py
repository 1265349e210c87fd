"""Dead letters read back, filtered, and re-sent to the topic they came from, once each.

The consumers dead-letter a record with headers saying why and where from
(:func:`services.common.consumer.ConsumerLoop._dead_letter`). A redrive publishes the
record's key and value unchanged to ``dlq.source.topic``, with the headers it had there
and two more: :data:`REDRIVEN_FROM` (``<dlq topic>/<partition>/<offset>``, the dead
letter's identity) and :data:`REDRIVEN_AT`.

Idempotence: before sending, the source topic is read from the oldest selected dead letter
onward and every :data:`REDRIVEN_FROM` found there is a dead letter already redriven. The
copy *is* the record of the redrive: there is no second write (a marker topic, committed
offsets) that a crash between the two could leave out of step, so a redrive cut short and
run again never sends a dead letter twice and never skips one it did not send. The source
topic keeps records for 7 days, the dead-letter topic 30: when the source topic no longer
holds everything since the oldest selected dead letter, the scan cannot prove anything, and
the redrive refuses unless forced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from services.common.errors import CommandError, PublishError
from services.common.kafka import Publisher, client_options, start_client
from services.common.settings import KafkaSettings

__all__ = [
    "REDRIVEN_AT",
    "REDRIVEN_FROM",
    "DeadLetterRecord",
    "DlqFilters",
    "already_redriven",
    "read_dead_letters",
    "read_dead_letters_at",
    "redrive_one",
]

REDRIVEN_FROM = "dlq.redriven_from"
REDRIVEN_AT = "dlq.redriven_at"

#: How far before a dead letter its copy's timestamp may be (clocks of different hosts).
CLOCK_SKEW = timedelta(hours=1)

_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION in a metadata answer


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, with its ``dlq.*`` headers read."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> DeadLetterRecord:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            key=record.key,
            value=record.value,
            headers=tuple((name, bytes(value or b"")) for name, value in record.headers or ()),
        )

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[-1].decode("utf-8", "replace") if values else None

    @property
    def ref(self) -> str:
        """``partition/offset``: how the commands name a dead letter."""
        return f"{self.partition}/{self.offset}"

    @property
    def redrive_id(self) -> str:
        """The :data:`REDRIVEN_FROM` value its copy carries."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def reason(self) -> str | None:
        return self.header("dlq.reason")

    @property
    def source_topic(self) -> str | None:
        return self.header("dlq.source.topic") or None

    def source(self) -> str:
        where = [self.header(f"dlq.source.{part}") for part in ("topic", "partition", "offset")]
        return "/".join(part or "?" for part in where)

    def kept_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record had on its source topic (the consumer's are ``dlq.*``)."""
        return [(name, value) for name, value in self.headers if not name.startswith("dlq.")]

    def summary(self) -> dict[str, Any]:
        return {
            "dlq": self.ref,
            "timestamp": self.timestamp.isoformat(),
            "reason": self.reason,
            "error": self.header("dlq.error"),
            "source": self.source(),
            "source_timestamp": self.header("dlq.source.timestamp"),
            "consumer_group": self.header("dlq.consumer.group"),
            "failed_at": self.header("dlq.failed_at"),
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "size_bytes": len(self.value or b""),
        }


@dataclass(frozen=True)
class DlqFilters:
    """Which dead letters: any of ``reasons``, from ``source_topic``, dead-lettered in
    [``since``, ``until``), at any of ``offsets`` (partition, offset). Empty = any."""

    reasons: frozenset[str] = frozenset()
    source_topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    offsets: frozenset[tuple[int, int]] = frozenset()

    def matches(self, record: DeadLetterRecord) -> bool:
        return (
            (not self.reasons or record.reason in self.reasons)
            and (self.source_topic is None or record.source_topic == self.source_topic)
            and (self.since is None or record.timestamp >= self.since)
            and (self.until is None or record.timestamp < self.until)
            and (not self.offsets or (record.partition, record.offset) in self.offsets)
        )


async def read_dead_letters(settings: KafkaSettings, filters: DlqFilters) -> list[DeadLetterRecord]:
    """Every dead letter on ``KAFKA_TOPIC_DLQ`` matching ``filters``, by partition and offset."""
    topic = settings.topics.dlq
    partitions = await topic_partitions(settings, topic)
    if partitions is None:
        raise CommandError(f"the dead-letter topic {topic} does not exist on the cluster")
    since_ms = None if filters.since is None else int(filters.since.timestamp() * 1000)
    found = []
    async with _reader(settings, "dlq-reader") as consumer:
        async for record in _records(consumer, partitions, since_ms):
            letter = DeadLetterRecord.from_record(record)
            if filters.matches(letter):
                found.append(letter)
    return sorted(found, key=lambda letter: (letter.partition, letter.offset))


async def read_dead_letters_at(
    settings: KafkaSettings, places: Iterable[tuple[str, int, int]], *, wait_seconds: float = 10.0
) -> dict[tuple[str, int, int], DeadLetterRecord]:
    """The dead letters at ``places`` (topic, partition, offset) still on their topic, by
    place; a place retention emptied is absent. Each read waits at most ``wait_seconds``
    seconds (:class:`PublishError` beyond: the broker does not answer)."""
    wanted = sorted(set(places))
    found: dict[tuple[str, int, int], DeadLetterRecord] = {}
    if not wanted:
        return found
    partitions = sorted({TopicPartition(topic, partition) for topic, partition, _ in wanted})
    async with _reader(settings, "dlq-reader") as consumer:
        consumer.assign(partitions)
        try:
            async with asyncio.timeout(wait_seconds):
                beginnings = await consumer.beginning_offsets(partitions)
                ends = await consumer.end_offsets(partitions)
            for place in wanted:
                tp = TopicPartition(place[0], place[1])
                if beginnings[tp] <= place[2] < ends[tp]:
                    consumer.seek(tp, place[2])
                    async with asyncio.timeout(wait_seconds):
                        record = await consumer.getone(tp)
                    if record.offset == place[2]:
                        found[place] = DeadLetterRecord.from_record(record)
        except (KafkaError, TimeoutError) as exc:
            raise PublishError(f"cannot read dead letters from Kafka: {exc!r}") from exc
    return found


async def already_redriven(
    settings: KafkaSettings, topic: str, letters: Sequence[DeadLetterRecord], *, force: bool
) -> set[str]:
    """The :data:`REDRIVEN_FROM` values on ``topic`` since the oldest of ``letters`` was
    dead-lettered (less :data:`CLOCK_SKEW`).

    Raises :class:`CommandError` when retention removed records of that time from
    ``topic`` (unless ``force``: a copy could have gone with them), or when ``topic`` does
    not exist.
    """
    partitions = await topic_partitions(settings, topic)
    if partitions is None:
        raise CommandError(f"the source topic {topic} does not exist on the cluster")
    oldest = min(letter.timestamp for letter in letters) - CLOCK_SKEW
    since_ms = int(oldest.timestamp() * 1000)
    seen: set[str] = set()
    async with _reader(settings, "dlq-redrive-check") as consumer:
        lost = await _lost_history(consumer, partitions, since_ms)
        if lost and not force:
            raise CommandError(
                f"cannot tell which dead letters were redriven already: {topic} partition(s) "
                f"{', '.join(map(str, lost))} no longer hold records from {oldest:%Y-%m-%d %H:%M} "
                "UTC on (retention); select newer dead letters with --since, or --force"
            )
        async for record in _records(consumer, partitions, since_ms):
            for name, value in record.headers or ():
                if name == REDRIVEN_FROM and value is not None:
                    seen.add(bytes(value).decode("utf-8", "replace"))
    return seen


async def redrive_one(
    publisher: Publisher,
    letter: DeadLetterRecord,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Publish ``letter`` to its source topic, key and value unchanged, marked as a redrive."""
    topic = letter.source_topic
    if topic is None:
        raise CommandError(f"dead letter {letter.ref} has no dlq.source.topic header")
    await publisher.publish(
        topic,
        key=letter.key or b"",
        value=letter.value or b"",
        headers=[
            *letter.kept_headers(),
            (REDRIVEN_FROM, letter.redrive_id.encode()),
            (REDRIVEN_AT, now().isoformat().encode()),
        ],
        timeout=30.0,
    )


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition] | None:
    """The topic's partitions, from fresh metadata; ``None`` when the topic does not exist."""
    admin = AIOKafkaAdminClient(**client_options(settings, "dlq-admin"))
    await start_client(admin, settings)
    try:
        (described,) = await admin.describe_topics([topic])
    except KafkaError as exc:
        raise PublishError(f"cannot describe topic {topic}: {exc}") from exc
    finally:
        await admin.close()
    if described["error_code"] == _UNKNOWN_TOPIC:
        return None
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


@contextlib.asynccontextmanager
async def _reader(settings: KafkaSettings, role: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group: it reads and never commits."""
    consumer = AIOKafkaConsumer(
        **client_options(settings, role),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.max_message_bytes,
        fetch_max_bytes=max(52_428_800, settings.max_message_bytes),
    )
    await start_client(consumer, settings)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _starts(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], since_ms: int | None
) -> dict[TopicPartition, int]:
    """Per partition, the first offset at or after ``since_ms`` (the end when none is)."""
    partitions = list(partitions)
    ends = await consumer.end_offsets(partitions)
    if since_ms is None:
        beginnings: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        return beginnings
    found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    return {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in partitions}


async def _lost_history(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int
) -> list[int]:
    """Partitions whose deleted records may have been at or after ``since_ms``: the first
    record kept there is the first of the window (or none is), and some were deleted."""
    beginnings = await consumer.beginning_offsets(partitions)
    starts = await _starts(consumer, partitions, since_ms)
    return [tp.partition for tp in partitions if 0 < beginnings[tp] == starts[tp]]


async def _records(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int | None
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of ``partitions`` from ``since_ms`` to the end as it was when called."""
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions)
    for tp, offset in (await _starts(consumer, partitions, since_ms)).items():
        consumer.seek(tp, offset)
    pending = set(partitions)
    while pending:
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
        if not pending:
            break
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
