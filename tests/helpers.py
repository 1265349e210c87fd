"""Small test helpers: waiting for effects, reading topics back with a plain consumer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.common.settings import Settings

T = TypeVar("T")

#: What every OpenAPI contract test checks of each answer against its document.
OPENAPI_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


async def eventually(
    probe: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def read_topic(
    bootstrap_servers: str, topic: str, count: int, *, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records from the start of ``topic`` with a throwaway consumer group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def committed_offsets(
    settings: Settings, group_id: str, topic: str | None = None
) -> dict[int, int]:
    """A group's committed offsets on ``topic`` (default: the callbacks topic), by partition."""
    topic = topic or settings.kafka.topics.callbacks
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


def service_environment(settings: Settings) -> dict[str, str]:
    """Variables that make a service subprocess's ``Settings.from_env()`` match ``settings``."""
    kafka = settings.kafka
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_CALLBACKS": kafka.topics.callbacks,
        "KAFKA_TOPIC_NOTES": kafka.topics.notes,
        "KAFKA_TOPIC_DLQ": kafka.topics.dlq,
        "KAFKA_TOPIC_PARTITIONS": str(kafka.partitions),
        "DATA_DIR": str(settings.storage.data_dir),
        "PROCESSOR_HOST": "127.0.0.1",
        "PROCESSOR_PORT": "0",
        "PROCESSOR_GROUP_ID": settings.processor.group_id,
        "PROCESSOR_REQUIRE_VERIFIED": str(settings.processor.require_verified).lower(),
        "PROCESSOR_PREVIEWS": settings.processor.previews,
        "INGEST_ALLOW_UNSIGNED": str(settings.ingest.allow_unsigned).lower(),
        "ARCHIVER_HOST": "127.0.0.1",
        "ARCHIVER_PORT": "0",
        "ARCHIVER_GROUP_ID": settings.archiver.group_id,
        "LOG_FORMAT": "json",
    }
