"""Two members of one group on a real broker: a record is never handled by both.

A record retried through an outage longer than ``KAFKA_MAX_POLL_INTERVAL_SECONDS`` must
not cost its member the group, and a rebalance must wait for the record in hand (or
abandon it) before its partition moves on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.common.consumer import ConsumerLoop, RecordHandler
from services.common.errors import StorageError
from services.common.kafka import Publisher
from services.common.metrics import ConsumerMetrics
from services.common.settings import Settings

from ..helpers import committed_offsets, eventually

pytestmark = pytest.mark.kafka


def member(
    settings: Settings,
    publisher: Publisher,
    handler: RecordHandler,
    *,
    max_poll_interval: float,
) -> ConsumerLoop:
    """One member of the test's group, with a poll interval short enough to outlast."""
    return ConsumerLoop(
        settings=replace(settings.kafka, max_poll_interval_seconds=max_poll_interval),
        role="test",
        group_id=settings.processor.group_id,
        topics=[settings.kafka.topics.callbacks],
        handler=handler,
        publisher=publisher,
        metrics=ConsumerMetrics("test", CollectorRegistry()),
        backoff_initial=0.05,
        backoff_max=0.2,
    )


def revocations(loop: ConsumerLoop) -> float:
    return (
        loop.metrics.registry.get_sample_value("test_rebalances_total", {"event": "revoked"}) or 0
    )


class Outage:
    """A storage that fails while ``on``; counts, per record, the handlings that succeeded."""

    def __init__(self) -> None:
        self.on = False
        self.attempts = 0
        self.done: Counter[bytes] = Counter()

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.attempts += 1
        if self.on:
            raise StorageError("storage unavailable")
        self.done[record.value or b""] += 1


async def total_committed(settings: Settings) -> int:
    return sum((await committed_offsets(settings, settings.processor.group_id)).values())


def committed(settings: Settings, count: int) -> Callable[[], Awaitable[bool]]:
    """A probe: the group has committed ``count`` records in all."""

    async def probe() -> bool:
        return await total_committed(settings) == count

    return probe


class TestMembership:
    async def test_an_outage_longer_than_the_poll_interval_keeps_each_record_in_one_member(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """One member retries its partition's records through an outage three poll
        intervals long while the other idles: the first stays in the group, the idle one
        never takes the partition over, and each record is handled once."""
        poll_interval = 3.0
        outage = Outage()
        first = member(settings, publisher, outage.handle, max_poll_interval=poll_interval)
        second = member(settings, publisher, outage.handle, max_poll_interval=poll_interval)
        await first.start()
        await second.start()
        try:
            await eventually(
                lambda: first.consumer.assignment() and second.consumer.assignment(),
                what="both members assigned",
            )
            before = revocations(first) + revocations(second)
            outage.on = True
            values = [f"record-{n}".encode() for n in range(5)]
            for value in values:  # one key: one partition, one member busy, one idle
                await publisher.publish(
                    settings.kafka.topics.callbacks, key=b"one-task", value=value, timeout=10
                )
            await eventually(lambda: outage.attempts >= 4, what="retries under the outage")
            await asyncio.sleep(3 * poll_interval)  # the outage lasts past the poll interval
            outage.on = False
            # Nobody left the group: no partition moved while its record was held.
            assert revocations(first) + revocations(second) == before
            await eventually(
                lambda: set(outage.done) == set(values), timeout=60, what="every record handled"
            )
            await eventually(committed(settings, len(values)), what="every commit")
        finally:
            await first.stop()
            await second.stop()
        assert outage.done == Counter(dict.fromkeys(values, 1))

    async def test_a_rebalance_waits_for_the_record_in_hand(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """A member joins while the first handles a record: the rebalance waits, the first
        member finishes and commits it, and the newcomer never handles it."""
        started = asyncio.Event()
        release = asyncio.Event()
        handled: list[tuple[str, bytes]] = []

        def handler(name: str) -> RecordHandler:
            async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
                if record.value == b"slow":
                    started.set()
                    await release.wait()
                handled.append((name, record.value or b""))

            return handle

        first = member(settings, publisher, handler("first"), max_poll_interval=20.0)
        second = member(settings, publisher, handler("second"), max_poll_interval=20.0)
        await publisher.publish(
            settings.kafka.topics.callbacks, key=b"k", value=b"slow", timeout=10
        )
        await first.start()
        try:
            await asyncio.wait_for(started.wait(), 30)
            # start() returns once the member has joined, which the rebalance holds up.
            joining = asyncio.create_task(second.start())
            # The first count is the member's own first join (it revokes nothing).
            await eventually(lambda: revocations(first) >= 2, what="the rebalance to begin")
            # Given time to complete, the rebalance still waits for the record in hand
            # (it could fail to catch a broken wait on a stalled machine, never the reverse).
            await asyncio.sleep(1.0)
            assert not joining.done()
            release.set()
            await joining
            await eventually(lambda: second.consumer.assignment(), what="the newcomer's partitions")
            await publisher.publish(
                settings.kafka.topics.callbacks, key=b"k", value=b"after", timeout=10
            )
            await eventually(lambda: len(handled) >= 2, what="the next record")
        finally:
            await second.stop()
            await first.stop()
        assert [value for _name, value in handled].count(b"slow") == 1
        assert ("first", b"slow") in handled
        assert await total_committed(settings) == 2

    async def test_a_member_joining_during_an_outage_takes_the_record_over_once(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """The record in retries when its partition is revoked is abandoned uncommitted
        before the partition moves: after the outage it is handled once, not twice."""
        outage = Outage()
        outage.on = True
        first = member(settings, publisher, outage.handle, max_poll_interval=10.0)
        second = member(settings, publisher, outage.handle, max_poll_interval=10.0)
        await publisher.publish(
            settings.kafka.topics.callbacks, key=b"k", value=b"held", timeout=10
        )
        await first.start()
        try:
            await eventually(lambda: outage.attempts >= 3, what="retries under the outage")
            await second.start()
            await eventually(
                lambda: second.consumer.assignment() and first.consumer.assignment(),
                what="the partitions shared",
            )
            await eventually(lambda: outage.attempts >= 6, what="retries by the new owner")
            outage.on = False
            await eventually(lambda: outage.done, what="the record handled")
            await eventually(committed(settings, 1), what="the commit")
        finally:
            await second.stop()
            await first.stop()
        assert outage.done == Counter({b"held": 1})
