"""The task list's queries run on indexes at scale: on 100 000 generated tasks, no plan
reads the whole table or sorts it (EXPLAIN, not a stopwatch: plans do not flake with load).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devenv.console_seed import bulk_tasks_sql
from services.console.queries import Cursor, TaskFilter, list_sql
from services.tracker.registry import Registry, TaskState

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROWS = 100_000
#: Tasks with a dead letter (migration 0005's triggers count them into ``tasks``).
DEAD_LETTERED = 200
LIMIT = 50

GENERATE = bulk_tasks_sql(ROWS, dead_lettered=DEAD_LETTERED)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


MIDDLE = Cursor(datetime(2026, 11, 15, 12, tzinfo=UTC), 50_000)
CASES = {
    "first page": (TaskFilter(), None),
    "a page further": (TaskFilter(), MIDDLE),
    "one state": (TaskFilter(state=TaskState.FAILED), MIDDLE),
    "a time range": (
        TaskFilter(
            since=datetime(2026, 11, 3, tzinfo=UTC), until=datetime(2026, 11, 4, tzinfo=UTC)
        ),
        MIDDLE,
    ),
    # Prefixes of generated ids (task 7's, request 8's), short and long.
    "a task id prefix": (TaskFilter(q=md5("t7")[:3]), None),
    "a whole task id": (TaskFilter(q=md5("t7")), None),
    "a request id prefix": (TaskFilter(q=f"req-{md5('r8')[:4]}"), None),
    "a state and a prefix": (TaskFilter(state=TaskState.COMPLETED, q=md5("t8")[:4]), MIDDLE),
    "with dead letters": (TaskFilter(has_dead_letters=True), MIDDLE),
    "a state with dead letters": (
        TaskFilter(state=TaskState.FAILED, has_dead_letters=True),
        None,
    ),
    "without dead letters": (TaskFilter(has_dead_letters=False), MIDDLE),
}
#: The indexes the filter on dead letters must use: the few tasks that have some are not
#: found by reading the list of all of them.
DEAD_LETTERED_INDEXES = {"tasks_listing_dead_lettered", "tasks_listing_dead_lettered_by_state"}


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.fixture(name="big_registry")
async def fixture_big_registry(database_url: str) -> AsyncIterator[Registry]:
    registry = await Registry.connect(database_url)
    try:
        await registry.pool.execute(GENERATE)
        yield registry
    finally:
        await registry.close()


async def plan_of(registry: Registry, where: TaskFilter, cursor: Cursor | None) -> dict[str, Any]:
    sql, args = list_sql(where, cursor, LIMIT)
    text = await registry.pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    plan: dict[str, Any] = json.loads(text)[0]["Plan"]
    return plan


async def test_list_queries_use_indexes(big_registry: Registry) -> None:
    """Every filter combination: no sequential scan of the tasks, no sort of them, an
    index of migration 0004 (or 0005's, for tasks with dead letters) used."""
    for name, (where, cursor) in CASES.items():
        plan = await plan_of(big_registry, where, cursor)
        found = list(nodes(plan))
        summary = [(node["Node Type"], node.get("Index Name")) for node in found]
        print(f"{name}: {summary}")
        assert not any(
            node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "tasks"
            for node in found
        ), (name, summary)
        indexes = {node.get("Index Name") for node in found}
        assert indexes & {
            "tasks_listing",
            "tasks_listing_by_state",
            "tasks_task_id_prefix",
            "tasks_request_id_prefix",
            *DEAD_LETTERED_INDEXES,
        }, (name, summary)
        if where.has_dead_letters:
            assert indexes & DEAD_LETTERED_INDEXES, (name, summary)
        # The keyset order comes from the index: nothing to sort. Except the few tasks
        # with dead letters of one state, which the planner may rather read from the
        # partial index and sort: a sort of those only, never of the table.
        if where.q is None and not (where.has_dead_letters and where.state is not None):
            assert not any(node["Node Type"] == "Sort" for node in found), (name, summary)
