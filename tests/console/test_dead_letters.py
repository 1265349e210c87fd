"""Dead letters in the console, end to end on the session broker and a real registry: a
real consumer loop dead-letters bad records, the console's indexer writes them to the
registry, and the list, its filter, the summary and the timeline show them."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import aiohttp
import pytest
from aiokafka.structs import ConsumerRecord

from services.common.kafka import Publisher
from services.common.settings import Settings
from services.console.deadletters import index_handler

from ..helpers import eventually
from .conftest import BAD_RECORD, Console, dead_letter, indexed, unique

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

TASKS = "/api/v1/tasks"


async def get(console: Console, path: str, **params: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(console.url + path, params=params) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


class TestIndexer:
    async def test_a_dead_letter_shows_in_list_filter_summary_and_timeline(
        self, settings: Settings, publisher: Publisher, dlq_console: Console
    ) -> None:
        """A record the consumer loop dead-letters is a row, counts on its task, passes
        the filter and is an event of the task's timeline with its headers."""
        console = dlq_console
        struck = console.completed_task()
        spared = console.completed_task()
        [record] = await dead_letter(settings, publisher, [struck.task_id.encode()])
        await indexed(console, 1)

        row = await console.arun(console.registry.pool.fetchrow("SELECT * FROM dead_letters"))
        assert row["task_id"] == struck.task_id
        assert row["reason"] == "undecodable"
        assert row["source_topic"] == settings.kafka.topics.callbacks
        assert row["consumer_group"] == settings.processor.group_id
        assert (row["dlq_partition"], row["dlq_offset"]) == (record.partition, record.offset)
        assert row["value_bytes"] == len(BAD_RECORD)
        assert row["value_sha256"] == hashlib.sha256(BAD_RECORD).hexdigest()

        listed = (await get(console, TASKS, has_dead_letters="true"))["tasks"]
        assert [(t["task_id"], t["dead_letters"]) for t in listed] == [(struck.task_id, 1)]
        clean = (await get(console, TASKS, has_dead_letters="false"))["tasks"]
        assert [(t["task_id"], t["dead_letters"]) for t in clean] == [(spared.task_id, 0)]

        shown = await get(console, f"{TASKS}/{struck.request_id}")
        assert shown["task"]["dead_letters"] == 1
        [event] = [e for e in shown["timeline"] if e["kind"] == "dead_letter"]
        assert "undecodable" in event["summary"]
        assert settings.processor.group_id in event["summary"]
        detail = event["detail"]
        assert detail["reason"] == "undecodable"
        assert detail["source_topic"] == settings.kafka.topics.callbacks
        assert detail["source_offset"] == 0
        assert detail["headers"]["dlq.consumer.group"] == settings.processor.group_id
        assert detail["headers"]["dlq.failed_at"] == event["at"]

        async def ready_gauge() -> bool | None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(console.url + "/metrics") as response,
            ):
                return True if "console_dlq_ready 1.0" in await response.text() else None

        await eventually(ready_gauge, what="console_dlq_ready 1")

    async def test_the_same_record_indexed_twice_is_one_row(
        self, settings: Settings, publisher: Publisher, dlq_console: Console
    ) -> None:
        """A record indexed again (redelivered after a rebalance, a restart) is no second
        row and no second count."""
        console = dlq_console
        task = console.completed_task()
        [record] = await dead_letter(settings, publisher, [task.task_id.encode()])
        await indexed(console, 1)
        handle = index_handler(console.registry)
        await console.arun(handle(record))
        await console.arun(handle(record))
        assert await indexed(console, 1) == 1
        shown = await get(console, f"{TASKS}/{task.task_id}")
        assert shown["task"]["dead_letters"] == 1

    async def test_a_dead_letter_before_its_task_counts_once_the_task_comes(
        self, settings: Settings, publisher: Publisher, dlq_console: Console
    ) -> None:
        """A callback dead-lettered before the tracker records its task (or keyed by a
        request id) counts on the task once it is there."""
        console = dlq_console
        early = unique("task")
        await dead_letter(settings, publisher, [early.encode()])
        await indexed(console, 1)
        task = await asyncio.to_thread(console.completed_task, task_id=early)
        await asyncio.to_thread(console.completed_task)  # one without
        listed = (await get(console, TASKS, has_dead_letters="true"))["tasks"]
        assert [(t["task_id"], t["dead_letters"]) for t in listed] == [(task.task_id, 1)]
        shown = await get(console, f"{TASKS}/{task.task_id}")
        assert shown["task"]["dead_letters"] == 1
        assert [e["kind"] for e in shown["timeline"]].count("dead_letter") == 1

    async def test_a_record_of_another_producer_is_indexed_as_far_as_it_reads(
        self, console: Console
    ) -> None:
        """Keyless, with headers missing, out of range or not text: a row with NULLs there,
        never a record retried forever."""
        headers = [
            ("dlq.reason", b"bad\x00reason"),
            ("dlq.source.partition", b"99999999999"),
            ("dlq.source.offset", b"x"),
            ("dlq.source.timestamp", b"9" * 30),
            ("dlq.failed_at", b"yesterday"),
            ("other", b"\xff"),
        ]
        record = ConsumerRecord("dlq", 2, 7, 1796070000000, 0, None, b"", None, 0, 0, headers)
        await console.arun(index_handler(console.registry)(record))
        row = await console.arun(console.registry.pool.fetchrow("SELECT * FROM dead_letters"))
        assert row["task_id"] is None and row["reason"] == "bad\ufffdreason"
        assert row["source_partition"] is None and row["source_offset"] is None
        assert row["source_timestamp"] is None and row["failed_at"] is None
        assert row["source_topic"] is None and row["consumer_group"] is None
        assert json.loads(row["headers"])["other"] == "\ufffd"
        assert row["value_sha256"] == hashlib.sha256(b"").hexdigest()
