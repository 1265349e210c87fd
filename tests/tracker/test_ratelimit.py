"""The shared rate limit: two replicas together never exceed it, checked in the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from services.tracker.ratelimit import PostgresRateLimiter
from services.tracker.registry import Registry

pytestmark = pytest.mark.postgres


@pytest.fixture(name="pools")
async def fixture_pools(database_url: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two replicas' pools on one migrated database."""
    registries = [await Registry.connect(database_url, max_size=5) for _ in range(2)]
    try:
        yield [registry.pool for registry in registries]
    finally:
        for registry in registries:
            await registry.close()


async def grants(pool: asyncpg.Pool, name: str = "suno-api") -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT granted_at, owner, waited_seconds FROM provider_calls WHERE limiter = $1"
        " ORDER BY granted_at",
        name,
    )


async def busiest_window(pool: asyncpg.Pool, window: float, name: str = "suno-api") -> int:
    """The most grants any window of ``window`` seconds starting at a grant holds."""
    count = await pool.fetchval(
        """
        SELECT max((SELECT count(*) FROM provider_calls later
                    WHERE later.limiter = first.limiter
                      AND later.granted_at >= first.granted_at
                      AND later.granted_at < first.granted_at + make_interval(secs => $2)))
        FROM provider_calls first WHERE first.limiter = $1
        """,
        name,
        window,
    )
    return int(count)


class TestPostgresRateLimiter:
    async def test_two_replicas_together_stay_under_the_limit(
        self, pools: list[asyncpg.Pool]
    ) -> None:
        """Two limiters on two pools firing three times the limit at once: every call is
        granted, no window holds more than the limit, and the excess waited."""
        requests, window = 5, 1.0
        limiters = [
            PostgresRateLimiter(pool, requests, window, owner=f"replica-{i}")
            for i, pool in enumerate(pools)
        ]
        waits = await asyncio.gather(*(limiters[i % 2].acquire() for i in range(3 * requests)))
        rows = await grants(pools[0])
        assert len(rows) == 3 * requests
        assert {row["owner"] for row in rows} == {"replica-0", "replica-1"}
        assert await busiest_window(pools[0], window) == requests
        # Spread over at least three windows: the 11th grant came two windows after the 1st.
        assert rows[2 * requests]["granted_at"] - rows[0]["granted_at"] >= timedelta(
            seconds=2 * window
        )
        assert sum(1 for wait in waits if wait > 0) >= 2 * requests
        assert sorted(waits)[:requests] == [0.0] * requests

    async def test_a_smaller_limit_holds_from_its_first_window(
        self, pools: list[asyncpg.Pool]
    ) -> None:
        """Lowered from 4 to 2 (a new configuration rolled out) right after calls that
        used the slots it drops: those calls still count against the new limit."""
        window = 0.5
        old = PostgresRateLimiter(pools[0], 4, window)
        await asyncio.gather(*(old.acquire() for _ in range(2)))  # slots 0 and 1
        await asyncio.sleep(window)
        await asyncio.gather(*(old.acquire() for _ in range(2)))  # 2 and 3, now dropped
        new = PostgresRateLimiter(pools[1], 2, window)
        waits = await asyncio.gather(*(new.acquire() for _ in range(2)))
        assert all(wait > 0 for wait in waits)
        assert await pools[0].fetchval("SELECT count(*) FROM rate_limit_slots") == 2
        rows = await grants(pools[0])
        assert rows[4]["granted_at"] - rows[2]["granted_at"] >= timedelta(seconds=window)

    async def test_limiters_of_different_names_do_not_share(
        self, pools: list[asyncpg.Pool]
    ) -> None:
        """Each name is its own limit (one per provider account, say)."""
        first = PostgresRateLimiter(pools[0], 2, 60.0, name="a")
        second = PostgresRateLimiter(pools[0], 2, 60.0, name="b")
        waits = [await limiter.acquire() for limiter in (first, second, first, second)]
        assert waits == [0.0] * 4

    def test_a_limit_needs_a_positive_size(self, pools: list[asyncpg.Pool]) -> None:
        with pytest.raises(ValueError, match="requests >= 1"):
            PostgresRateLimiter(pools[0], 0, 1.0)


async def test_a_slot_counts_from_the_end_of_its_request(pools: list[asyncpg.Pool]) -> None:
    """A request held through ``slot()`` restamps its slot when its answer is in, so the
    next use of that slot is a window after the provider had surely seen the request."""
    limiter = PostgresRateLimiter(pools[0], requests=1, window=60.0)
    async with limiter.slot() as waited:
        assert waited == 0.0
        (grant,) = await grants(pools[0])
        await asyncio.sleep(0.05)
        ended = await pools[0].fetchval("SELECT clock_timestamp()")
    used_at = await pools[0].fetchval("SELECT used_at FROM rate_limit_slots WHERE slot = 0")
    assert used_at > ended > grant["granted_at"]
