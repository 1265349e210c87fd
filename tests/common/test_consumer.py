"""The shared consumer loop on a real broker: commit after work, dead-letter, retry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.common.consumer import (
    ConsumerLoop,
    DeadLetter,
    RecordHandler,
    Transient,
    callback_handler,
)
from services.common.errors import PublishError, StorageError
from services.common.events import CallbackEvent, sha256_hex
from services.common.kafka import Publisher
from services.common.keys import TASK_ID_RULE
from services.common.metrics import ConsumerMetrics
from services.common.settings import Settings

from ..helpers import committed_offsets, eventually, read_topic

pytestmark = pytest.mark.kafka


def make_loop(
    settings: Settings,
    publisher: Publisher,
    handler: RecordHandler,
    registry: CollectorRegistry,
    concurrency: int = 1,
) -> ConsumerLoop:
    return ConsumerLoop(
        settings=settings.kafka,
        role="test",
        group_id=settings.processor.group_id,
        topics=[settings.kafka.topics.callbacks],
        handler=handler,
        publisher=publisher,
        metrics=ConsumerMetrics("test", registry),
        backoff_initial=0.05,
        backoff_max=0.2,
        concurrency=concurrency,
    )


class TestConsumerLoop:
    async def test_dead_letters_carry_the_why_and_the_where(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A DeadLetter lands on the DLQ with its reason and source; the loop goes on."""
        topics = settings.kafka.topics
        handled: list[bytes] = []

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            if record.value == b"poison":
                raise DeadLetter("invalid_callback", "not a callback")
            handled.append(record.value or b"")

        registry = CollectorRegistry()
        loop = make_loop(settings, publisher, handler, registry)
        for value in (b"poison", b"good"):
            await publisher.publish(topics.callbacks, key=b"same-key", value=value, timeout=10)
        await loop.start()
        try:
            await eventually(lambda: handled == [b"good"], what="the good record")
            [dead] = await read_topic(settings.kafka.bootstrap_servers, topics.dlq, 1)
        finally:
            await loop.stop()
        headers = {k: v.decode() for k, v in dead.headers}
        assert dead.value == b"poison" and dead.key == b"same-key"
        assert headers["dlq.reason"] == "invalid_callback"
        assert headers["dlq.error"] == "not a callback"
        assert headers["dlq.source.topic"] == topics.callbacks
        assert headers["dlq.source.offset"] == "0"
        assert headers["dlq.consumer.group"] == settings.processor.group_id
        assert (
            registry.get_sample_value("test_dead_letters_total", {"reason": "invalid_callback"})
            == 1
        )
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 2

    async def test_undecodable_records_are_dead_lettered(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A handler's CodecError sends the record to the DLQ as undecodable."""
        from services.common.events import CallbackEvent

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            CallbackEvent.decode(record.value or b"")

        loop = make_loop(settings, publisher, handler, CollectorRegistry())
        await publisher.publish(
            settings.kafka.topics.callbacks, key=b"k", value=b"\x00garbage", timeout=10
        )
        await loop.start()
        try:
            [dead] = await read_topic(
                settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 1
            )
        finally:
            await loop.stop()
        assert dict(dead.headers)["dlq.reason"] == b"undecodable"

    async def test_unexpected_errors_are_retried_then_dead_lettered(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A bug is tried max_attempts times, then dead-lettered as processing_failed."""
        attempts = 0

        async def handler(_record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal attempts
            attempts += 1
            raise ZeroDivisionError("bug")

        registry = CollectorRegistry()
        loop = make_loop(settings, publisher, handler, registry)
        await publisher.publish(settings.kafka.topics.callbacks, key=b"k", value=b"v", timeout=10)
        await loop.start()
        try:
            [dead] = await read_topic(
                settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 1
            )
        finally:
            await loop.stop()
        assert attempts == 3
        assert dict(dead.headers)["dlq.reason"] == b"processing_failed"
        topic = settings.kafka.topics.callbacks
        assert (
            registry.get_sample_value("test_records_total", {"topic": topic, "result": "retried"})
            == 2
        )

    async def test_transient_errors_hold_the_offset_until_they_pass(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """While the handler fails transiently, nothing is committed; then exactly once."""
        failing = True
        calls = 0

        async def handler(_record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal calls
            calls += 1
            if failing:
                raise Transient("disk full")

        loop = make_loop(settings, publisher, handler, CollectorRegistry())
        await publisher.publish(settings.kafka.topics.callbacks, key=b"k", value=b"v", timeout=10)
        await loop.start()
        try:
            await eventually(lambda: calls >= 5, what="several retries")
            assert await committed_offsets(settings, settings.processor.group_id) == {}
            failing = False
            await eventually(
                lambda: committed_offsets(settings, settings.processor.group_id), what="the commit"
            )
        finally:
            await loop.stop()
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 1
        assert (
            await read_topic(
                settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 1, timeout=2
            )
            == []
        )

    async def test_stop_finishes_the_record_in_hand(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """stop() waits for the running handler, commits it, and handles nothing more."""
        started = asyncio.Event()
        release = asyncio.Event()
        handled: list[bytes] = []

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            started.set()
            await release.wait()
            handled.append(record.value or b"")

        loop = make_loop(settings, publisher, handler, CollectorRegistry())
        for value in (b"1", b"2", b"3"):
            await publisher.publish(
                settings.kafka.topics.callbacks, key=b"k", value=value, timeout=10
            )
        await loop.start()
        await asyncio.wait_for(started.wait(), 30)
        stopping = asyncio.create_task(loop.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done()
        release.set()
        await stopping
        assert handled == [b"1"]
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 1

    async def test_log_context_does_not_leak_between_records(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """What a handler binds for one record is gone when the next record is handled."""
        import structlog

        seen: list[dict[str, object]] = []

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            seen.append(structlog.contextvars.get_contextvars())
            structlog.contextvars.bind_contextvars(task_id=(record.value or b"").decode())

        loop = make_loop(settings, publisher, handler, CollectorRegistry())
        for value in (b"first", b"second"):
            await publisher.publish(
                settings.kafka.topics.callbacks, key=b"k", value=value, timeout=10
            )
        await loop.start()
        try:
            await eventually(lambda: len(seen) == 2, what="both records")
        finally:
            await loop.stop()
        assert "task_id" not in seen[1]
        assert seen[1]["offset"] == 1

    async def test_lag_grows_while_a_record_is_retried(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A record stuck in transient retries shows as lag, not as a frozen gauge."""

        async def handler(_record: ConsumerRecord[bytes, bytes]) -> None:
            raise Transient("storage away")

        registry = CollectorRegistry()
        loop = make_loop(settings, publisher, handler, registry)
        topic = settings.kafka.topics.callbacks
        for value in (b"1", b"2", b"3"):
            await publisher.publish(topic, key=b"same", value=value, timeout=10)

        def lag() -> float:
            return sum(
                registry.get_sample_value(
                    "test_consumer_lag_records", {"topic": topic, "partition": str(p)}
                )
                or 0
                for p in range(settings.kafka.partitions)
            )

        await loop.start()
        try:
            await eventually(lambda: lag() == 3, what="lag of 3 while the first record is held")
        finally:
            await loop.stop()

    async def test_a_loop_failure_rewinds_to_the_committed_offsets(
        self, settings: Settings, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Records fetched before a loop-level failure are handled again, none skipped."""
        handled: list[bytes] = []

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            handled.append(record.value or b"")

        loop = make_loop(settings, publisher, handler, CollectorRegistry())
        for value in (b"1", b"2", b"3"):
            await publisher.publish(
                settings.kafka.topics.callbacks, key=b"k", value=value, timeout=10
            )
        real_process = loop._process
        failed = False

        async def fail_once(
            handful: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        ) -> None:
            # The loop itself fails (not the handler) before the first record is handled.
            nonlocal failed
            if not failed:
                failed = True
                raise RuntimeError("loop failure")
            await real_process(handful)

        monkeypatch.setattr(loop, "_process", fail_once)
        await loop.start()
        try:
            await eventually(lambda: len(handled) >= 3, what="all three records")
        finally:
            await loop.stop()
        assert handled == [b"1", b"2", b"3"]
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 3


BODY = b'{"code": 200}'


def callback_value(task_id: str) -> bytes:
    return CallbackEvent(
        task_id=task_id, received_at=datetime.now(UTC), body=BODY, body_sha256=sha256_hex(BODY)
    ).encode()


def keys_on_partitions(settings: Settings, count: int, *, same: bool) -> list[bytes]:
    """``count`` distinct keys the default partitioner puts on one partition (``same``), or
    each on a partition of its own."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(settings.kafka.partitions))
    chosen: dict[int, list[bytes]] = {}
    for key in (f"key-{i}".encode() for i in range(10_000)):
        chosen.setdefault(DefaultPartitioner()(key, partitions, partitions), []).append(key)
    if same:
        return chosen[0][:count]
    return [keys[0] for keys in list(chosen.values())[:count]]


class TestConcurrency:
    @pytest.mark.parametrize(
        ("same", "committed"), [(True, [3]), (False, [1, 1, 1])], ids=["one", "three"]
    )
    async def test_records_are_handled_at_once(
        self, settings: Settings, publisher: Publisher, same: bool, committed: list[int]
    ) -> None:
        """With concurrency 3, three records, of one partition or one on each of three, are
        in the handler together, and each partition is committed past its own."""
        in_handler = 0
        all_in = asyncio.Event()

        async def handler(_record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal in_handler
            in_handler += 1
            if in_handler == 3:
                all_in.set()
            await all_in.wait()  # one record at a time would never get past this

        loop = make_loop(settings, publisher, handler, CollectorRegistry(), concurrency=3)
        for key in keys_on_partitions(settings, 3, same=same):
            await publisher.publish(
                settings.kafka.topics.callbacks, key=key, value=b"v", timeout=10
            )

        async def committed_everywhere() -> bool:
            offsets = await committed_offsets(settings, settings.processor.group_id)
            return sorted(offsets.values()) == committed

        await loop.start()
        try:
            await eventually(committed_everywhere, what=f"commits {committed}")
        finally:
            await loop.stop()

    async def test_a_record_retried_holds_back_the_commit_of_later_ones(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """Records after one still retried are done but not committed: a committed offset
        means every record before it is done."""
        failing = True
        handled: list[bytes] = []

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            if record.value == b"1" and failing:
                raise Transient("disk full")
            handled.append(record.value or b"")

        loop = make_loop(settings, publisher, handler, CollectorRegistry(), concurrency=3)
        keys = keys_on_partitions(settings, 3, same=True)
        for key, value in zip(keys, (b"1", b"2", b"3"), strict=True):
            await publisher.publish(
                settings.kafka.topics.callbacks, key=key, value=value, timeout=10
            )
        await loop.start()
        try:
            await eventually(lambda: sorted(handled) == [b"2", b"3"], what="the later records")
            await asyncio.sleep(0.5)  # several retries of the first
            assert await committed_offsets(settings, settings.processor.group_id) == {}
            failing = False
            await eventually(
                lambda: committed_offsets(settings, settings.processor.group_id),
                what="the commit",
            )
        finally:
            await loop.stop()
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 3
        assert sorted(handled) == [b"1", b"2", b"3"]

    async def test_records_of_one_key_go_in_turn(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A task's callbacks never race: one key's records are handled in order, alone."""
        in_handler = 0
        seen: list[tuple[bytes, int]] = []

        async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal in_handler
            in_handler += 1
            seen.append((record.value or b"", in_handler))
            await asyncio.sleep(0.05)
            in_handler -= 1

        loop = make_loop(settings, publisher, handler, CollectorRegistry(), concurrency=3)
        for value in (b"1", b"2", b"3"):
            await publisher.publish(
                settings.kafka.topics.callbacks, key=b"k", value=value, timeout=10
            )
        await loop.start()
        try:
            await eventually(lambda: len(seen) == 3, what="the three records")
        finally:
            await loop.stop()
        assert seen == [(b"1", 1), (b"2", 1), (b"3", 1)]


class TestCallbackHandler:
    """The wrapper's policy, around handlers that know nothing of it."""

    async def test_undecodable_and_invalid_task_ids_never_reach_the_handler(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """Bytes that are no callback event, and a task id no file can be named after,
        are dead-lettered by the wrapper; the handler sees the good event only."""
        topics = settings.kafka.topics
        seen: list[str] = []

        async def handle(event: CallbackEvent) -> None:
            seen.append(event.task_id)

        registry = CollectorRegistry()
        loop = make_loop(settings, publisher, callback_handler(handle), registry)
        for value in (b"\x00garbage", callback_value("a" * 81), callback_value("good")):
            await publisher.publish(topics.callbacks, key=b"k", value=value, timeout=10)
        await loop.start()
        try:
            await eventually(lambda: seen == ["good"], what="the good event")
            dead = await read_topic(settings.kafka.bootstrap_servers, topics.dlq, 2)
        finally:
            await loop.stop()
        headers = [{k: v.decode() for k, v in r.headers} for r in dead]
        assert [h["dlq.reason"] for h in headers] == ["undecodable", "invalid_task_id"]
        assert headers[1]["dlq.error"] == TASK_ID_RULE
        for reason in ("undecodable", "invalid_task_id"):
            assert registry.get_sample_value("test_dead_letters_total", {"reason": reason}) == 1
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 3

    @pytest.mark.parametrize("error", [StorageError("disk full"), PublishError("no broker")])
    async def test_storage_and_kafka_failures_are_retried_until_they_pass(
        self, settings: Settings, publisher: Publisher, error: Exception
    ) -> None:
        """A StorageError or PublishError from the handler holds the offset and is retried
        for as long as it lasts (past max_attempts), never dead-lettered."""
        failing = True
        calls = 0
        contexts: list[dict[str, object]] = []

        async def handle(_event: CallbackEvent) -> None:
            nonlocal calls
            calls += 1
            contexts.append(structlog.contextvars.get_contextvars())
            if failing:
                raise error

        registry = CollectorRegistry()
        loop = make_loop(settings, publisher, callback_handler(handle), registry)
        topic = settings.kafka.topics.callbacks
        await publisher.publish(topic, key=b"k", value=callback_value("t-1"), timeout=10)
        await loop.start()
        try:
            # Past max_attempts (3): a bug would have been dead-lettered by now.
            await eventually(lambda: calls >= 5, what="retries past max_attempts")
            assert await committed_offsets(settings, settings.processor.group_id) == {}
            failing = False
            await eventually(
                lambda: committed_offsets(settings, settings.processor.group_id), what="the commit"
            )
        finally:
            await loop.stop()
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 1
        retried = {"topic": topic, "result": "retried"}
        assert registry.get_sample_value("test_records_total", retried) == calls - 1
        assert (
            await read_topic(
                settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 1, timeout=2
            )
            == []
        )
        assert {c["task_id"] for c in contexts} == {"t-1"}
        assert {c["delivery_key"] for c in contexts} == {f"t-1:{sha256_hex(BODY)}"}


class TestEnsureTopics:
    async def test_creates_the_topics_as_declared(self, settings: Settings) -> None:
        """Missing topics are created with the declared partitions and size limit."""
        from aiokafka.admin import AIOKafkaAdminClient

        from services.common.kafka import ensure_topics

        topics = settings.kafka.topics
        await ensure_topics(settings.kafka, "test", [topics.callbacks, topics.dlq])
        await ensure_topics(settings.kafka, "test", [topics.callbacks])  # idempotent
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topics.callbacks])
        finally:
            await admin.close()
        assert len(described["partitions"]) == settings.kafka.partitions

    async def test_refuses_a_topic_too_small_for_our_records(self, settings: Settings) -> None:
        """An operator's topic with a smaller max.message.bytes stops start-up with a reason."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        from services.common.errors import ConfigError
        from services.common.kafka import ensure_topics

        topic = settings.kafka.topics.callbacks
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "1048588"})]
            )
        finally:
            await admin.close()
        with pytest.raises(ConfigError, match=r"max.message.bytes of .*1048588"):
            await ensure_topics(settings.kafka, "test", [topic])

    async def test_missing_topics_with_creation_off_name_the_fix(self, settings: Settings) -> None:
        """KAFKA_CREATE_TOPICS=false and no topic: a ConfigError, not a hang at run time."""
        from dataclasses import replace

        from services.common.errors import ConfigError
        from services.common.kafka import ensure_topics

        kafka = replace(settings.kafka, create_topics=False)
        with pytest.raises(ConfigError, match="KAFKA_CREATE_TOPICS is false"):
            await ensure_topics(kafka, "test", [kafka.topics.notes])
