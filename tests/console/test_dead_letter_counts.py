"""Migration 0005's count of dead letters on their tasks, under concurrency: a dead letter
and its task written by two transactions at once are counted once, whichever commits
first (each would miss the other's uncommitted row without the key's lock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.tracker.registry import Registry
from tests.helpers import eventually

from .conftest import unique

pytestmark = pytest.mark.postgres

TASK = (
    "INSERT INTO tasks (request_id, task_id, origin, state, created_at, updated_at)"
    " VALUES ($1, $2, 'tracker', 'submitted', now(), now())"
)
DEAD_LETTER = (
    "INSERT INTO dead_letters (dlq_topic, dlq_partition, dlq_offset, dlq_timestamp, task_id,"
    " headers, value_bytes, value_sha256) VALUES ('dlq', 0, 0, now(), $1, '{}', 0, '')"
)


@pytest.fixture(name="migrated")
async def fixture_migrated(database_url: str) -> AsyncIterator[str]:
    registry = await Registry.connect(database_url)  # migrates
    await registry.close()
    yield database_url


async def blocked(observer: asyncpg.Connection, pid: int) -> bool | None:
    """True once the backend ``pid`` waits for a lock."""
    waiting = await observer.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    )
    return True if waiting else None


@pytest.mark.parametrize("first", ["task", "dead_letter"])
async def test_concurrent_task_and_dead_letter_count_once(migrated: str, first: str) -> None:
    """The first writer holds its transaction open; the second waits for the key's lock,
    then sees the first's row: the task counts one dead letter."""
    key = unique("task")
    writes = {"task": (TASK, unique("req"), key), "dead_letter": (DEAD_LETTER, key)}
    second = "dead_letter" if first == "task" else "task"
    one, two, observer = [await asyncpg.connect(migrated) for _ in range(3)]
    try:
        transaction = one.transaction()
        await transaction.start()
        await one.execute(*writes[first])
        waiting = asyncio.create_task(two.execute(*writes[second]))
        await eventually(lambda: blocked(observer, two.get_server_pid()), what="a wait")
        await transaction.commit()
        await waiting
        count = await observer.fetchval("SELECT dead_letters FROM tasks WHERE task_id = $1", key)
        assert count == 1
    finally:
        for conn in (one, two, observer):
            await conn.close()
