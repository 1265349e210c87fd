"""An event of a schema nobody here knows is never committed past silently.

Through real Kafka and the real apps: the archiver (the copy of last resort) stops that
partition, uncommitted, and says so; the processor dead-letters the event as
``unknown_schema`` and goes on.
"""

from __future__ import annotations

import os

import pytest
import structlog
from aiohttp.test_utils import TestServer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from services.archiver.app import create_app as create_archiver
from services.common.avro import MAGIC
from services.common.kafka import Publisher
from services.common.settings import Settings
from services.processor.app import create_app as create_processor

from ..archiver.support import bodies, make_event
from ..helpers import committed_offsets, eventually, read_topic

pytestmark = pytest.mark.kafka


def unknown_schema_value() -> bytes:
    """Single-object encoding with a fingerprint no schema in ``schemas/`` has."""
    return MAGIC + os.urandom(8) + b"\x02\x0ba payload nobody can read"


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the publisher's default partitioner sends ``key`` to."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def keys_on_two_partitions(partitions: int) -> tuple[bytes, bytes]:
    first = b"task-stopped"
    other = next(
        key
        for key in (f"task-{n}".encode() for n in range(1000))
        if partition_of(key, partitions) != partition_of(first, partitions)
    )
    return first, other


async def publish(publisher: Publisher, settings: Settings, key: bytes, value: bytes) -> None:
    await publisher.publish(settings.kafka.topics.callbacks, key=key, value=value, timeout=10)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class TestUnknownSchema:
    async def test_the_archiver_halts_the_partition_and_commits_nothing_past_it(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """The unknown event stops its partition (gauge, error line, no commit, no dead
        letter; the event behind it waits); the other partitions go on."""
        stopped_key, other_key = keys_on_two_partitions(settings.kafka.partitions)
        behind = make_event(stopped_key.decode())
        elsewhere = make_event(other_key.decode())
        await publish(publisher, settings, stopped_key, unknown_schema_value())
        await publish(publisher, settings, stopped_key, behind.encode())
        await publish(publisher, settings, other_key, elsewhere.encode())
        registry = CollectorRegistry()
        server = TestServer(create_archiver(settings, registry=registry), host="127.0.0.1")
        with structlog.testing.capture_logs() as logs:
            await server.start_server()
            try:
                await eventually(
                    lambda: sample(registry, "archiver_halted_partitions") == 1,
                    what="the partition halted",
                )
                await eventually(
                    lambda: elsewhere.body in bodies(settings.storage.data_dir).values(),
                    what="the other partition archived",
                )
                committed = await committed_offsets(settings, settings.archiver.group_id)
            finally:
                await server.close()
        assert behind.body not in bodies(settings.storage.data_dir).values()
        assert committed == {partition_of(other_key, settings.kafka.partitions): 1}
        halted = [line for line in logs if line["event"] == "partition_halted"]
        assert halted and halted[0]["log_level"] == "error"
        assert halted[0]["reason"] == "unknown_schema"
        assert halted[0]["partition"] == partition_of(stopped_key, settings.kafka.partitions)
        assert halted[0]["offset"] == 0
        dlq = settings.kafka.topics.dlq
        assert await read_topic(settings.kafka.bootstrap_servers, dlq, 1, timeout=2) == []

    async def test_the_processor_dead_letters_it_as_unknown_schema(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """The unknown event goes to the dead-letter topic with reason unknown_schema; the
        event behind it on the same partition is processed; both are committed."""
        value = unknown_schema_value()
        behind = make_event("task-behind")
        await publish(publisher, settings, b"task-behind", value)
        await publish(publisher, settings, b"task-behind", behind.encode())
        registry = CollectorRegistry()
        server = TestServer(create_processor(settings, registry=registry), host="127.0.0.1")
        await server.start_server()
        try:
            [dead] = await read_topic(
                settings.kafka.bootstrap_servers, settings.kafka.topics.dlq, 1
            )
            await eventually(
                lambda: sample(registry, "processor_tasks_total", state="complete") == 1,
                what="the event behind it processed",
            )
        finally:
            await server.close()
        headers = {k: v.decode() for k, v in dead.headers}
        assert dead.value == value
        assert headers["dlq.reason"] == "unknown_schema"
        assert "fingerprint" in headers["dlq.error"]
        assert sample(registry, "processor_dead_letters_total", reason="unknown_schema") == 1
        assert sample(registry, "processor_halted_partitions") == 0
        assert sum((await committed_offsets(settings, settings.processor.group_id)).values()) == 2
