"""The counts by state (``GET /api/v1/counts``, the tracker's gauges) come from migration
0008's slot rows, kept by triggers: they must equal a plain COUNT(*) after every kind of
write to the tasks, many writers at once included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from devenv.console_seed import bulk_tasks_sql
from services.tracker.registry import OLDEST_OPEN_SQL, Registry, TaskState

pytestmark = [pytest.mark.postgres]


@pytest.fixture(name="registry")
async def fixture_registry(database_url: str) -> AsyncIterator[Registry]:
    registry = await Registry.connect(database_url, max_size=10)
    try:
        yield registry
    finally:
        await registry.close()


async def plain(registry: Registry) -> dict[TaskState, int]:
    rows = await registry.pool.fetch("SELECT state, count(*) FROM tasks GROUP BY state")
    counted = dict.fromkeys(TaskState, 0)
    counted.update({TaskState(row["state"]): row["count"] for row in rows})
    return counted


async def exact(registry: Registry) -> dict[TaskState, int]:
    counts = await registry.counts_by_state()
    assert counts == await plain(registry)
    return counts


async def test_counts_follow_every_write(registry: Registry) -> None:
    """Intents, submissions, transitions, an external task, a bulk insert, state changes
    by hand, deletes, a rolled-back insert and a truncate."""
    assert set((await exact(registry)).values()) == {0}
    for number in range(4):
        await registry.request(f"req-{number}", "source", None, "http://x/cb")
    await registry.submitted("req-0", "task-0", timedelta(minutes=1))
    await registry.submitted("req-1", "task-1", timedelta(minutes=1))
    await registry.transition("task-0", TaskState.COMPLETED)
    await registry.submission_rejected("req-2", "refused")
    now = datetime.now(UTC)
    await registry.record_delivery(
        "external-0", body_sha256="a" * 64, received_at=now, verified=True, source="callback"
    )
    counts = await exact(registry)
    assert counts[TaskState.SUBMITTED] == 2 and counts[TaskState.REQUESTED] == 1
    await registry.pool.execute(bulk_tasks_sql(2_000))
    await exact(registry)
    await registry.pool.execute("UPDATE tasks SET poll_count = poll_count + 1")
    await registry.pool.execute("UPDATE tasks SET state = state WHERE id % 5 = 0")
    await registry.pool.execute(
        "UPDATE tasks SET state = 'expired', expired_at = now() WHERE state = 'submitted'"
    )
    await exact(registry)
    await registry.pool.execute("DELETE FROM tasks WHERE id % 3 = 0")
    before = await exact(registry)
    async with registry.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO tasks (request_id, origin, state)"
                    " SELECT 'rolled-back-' || i, 'tracker', 'requested'"
                    " FROM generate_series(1, 10) AS i"
                )
                raise RuntimeError("roll back")
    assert await exact(registry) == before
    await registry.pool.execute("TRUNCATE tasks CASCADE")
    assert set((await exact(registry)).values()) == {0}


async def test_concurrent_writers_keep_them_exact(registry: Registry) -> None:
    """Two hundred task lives at once on ten connections (their slots spread), with
    deletes among them."""

    async def life(number: int) -> None:
        request = f"req-{number}"
        await registry.request(request, "source", None, "http://x/cb")
        await registry.submitted(request, f"task-{number}", timedelta(minutes=1))
        ending = (TaskState.COMPLETED, TaskState.FAILED, TaskState.EMPTY)[number % 3]
        await registry.transition(f"task-{number}", ending)
        if number % 7 == 0:
            await registry.pool.execute("DELETE FROM tasks WHERE request_id = $1", request)

    await asyncio.gather(*(life(number) for number in range(200)))
    counts = await exact(registry)
    assert sum(counts.values()) == 200 - len(range(0, 200, 7))
    slots = await registry.pool.fetchval("SELECT count(DISTINCT slot) FROM task_counts")
    assert slots == 32
    used = await registry.pool.fetchval(
        "SELECT count(DISTINCT slot) FROM task_counts WHERE tasks <> 0"
    )
    assert used > 1


async def test_oldest_open_reads_one_index_entry(registry: Registry) -> None:
    """The oldest open task's age is the first entry of the partial index of open tasks,
    not a scan of the tasks (EXPLAIN, not a stopwatch)."""
    await registry.pool.execute(bulk_tasks_sql(20_000))
    await registry.pool.execute("ANALYZE tasks")
    text = await registry.pool.fetchval(f"EXPLAIN (FORMAT JSON) {OLDEST_OPEN_SQL}")
    assert "tasks_open_by_creation" in text and "Seq Scan" not in text, text
    oldest = await registry.pool.fetchval(
        "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM tasks"
        " WHERE state = ANY(ARRAY['requested', 'submitted'])"
    )
    age = await registry.oldest_open_age()
    assert age is not None and oldest is not None
    assert oldest - 1 < age <= oldest + 1
