"""The provider's rate limit, held by all tracker replicas together through PostgreSQL.

A sliding log of ``requests`` slots per limiter: a call takes the slot used longest ago
(``FOR UPDATE SKIP LOCKED``, so replicas never queue behind one another) and may go when
that slot's last use is at least one window old by the database's clock; otherwise it
waits the difference and tries again. Any ``requests + 1`` grants thus share a slot, and
two uses of one slot are a window apart: no window ever holds more than ``requests``.
Each grant is also a ``provider_calls`` row, from which that can be checked.

Why not a token bucket in Redis: the tracker already depends on PostgreSQL and nothing
else of its own; one fewer server to run, secure and fail over. A few hundred
single-row transactions a minute are nothing to PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .registry import registry_errors

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import Pool

__all__ = ["PostgresRateLimiter"]

#: How long to wait when every slot is locked by another caller at that instant.
_BUSY_WAIT = 0.005
#: Grants between two prunings of ``provider_calls`` rows older than a day.
_PRUNE_EVERY = 1000


class PostgresRateLimiter:
    """At most ``requests`` grants per ``window`` seconds across every limiter of the same
    ``name`` sharing the database (the registry's pool: migrated, so the tables exist)."""

    def __init__(
        self,
        pool: Pool[Record],
        requests: int,
        window: float,
        *,
        name: str = "suno-api",
        owner: str = "tracker",
    ) -> None:
        if requests < 1 or window <= 0:
            raise ValueError(
                f"a rate limit needs requests >= 1 and window > 0: {requests}/{window}"
            )
        self._pool = pool
        self.requests = requests
        self.window = window
        self.name = name
        self.owner = owner
        self._sized = False
        self._grants = 0

    async def acquire(self) -> float:
        """Return once a provider call may go; the seconds spent waiting for it (0.0 when a
        slot was free at once)."""
        if not self._sized:
            await self._resize()
        waited = 0.0
        while (wait := await self._try(waited)) is not None:
            started = time.monotonic()
            await asyncio.sleep(wait)
            waited += time.monotonic() - started
        self._grants += 1
        if self._grants % _PRUNE_EVERY == 0:
            await self._prune()
        return waited

    async def _try(self, waited: float) -> float | None:
        """Take a slot (``None``) or say how long to wait before the next try."""
        async with (
            registry_errors("take a rate limit slot"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            slot = await conn.fetchrow(
                """
                SELECT slot,
                    extract(epoch FROM used_at - clock_timestamp())::float8 + $3 AS wait
                FROM rate_limit_slots
                WHERE limiter = $1 AND slot < $2
                ORDER BY used_at, slot
                LIMIT 1
                FOR UPDATE SKIP LOCKED
                """,
                self.name,
                self.requests,
                self.window,
            )
            if slot is None:
                return _BUSY_WAIT
            if slot["wait"] > 0:
                return float(slot["wait"])
            await conn.execute(
                """
                WITH taken AS (
                    UPDATE rate_limit_slots SET used_at = clock_timestamp()
                    WHERE limiter = $1 AND slot = $2
                    RETURNING used_at
                )
                INSERT INTO provider_calls (limiter, granted_at, owner, waited_seconds)
                SELECT $1, used_at, $3, $4 FROM taken
                """,
                self.name,
                slot["slot"],
                self.owner,
                waited,
            )
        return None

    async def _resize(self) -> None:
        """Make the slots match ``requests``. Shrinking keeps the newest use of the slots
        it drops on the others, so the smaller limit holds from the first window on."""
        async with (
            registry_errors("size the rate limiter"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(
                "INSERT INTO rate_limit_slots (limiter, slot)"
                " SELECT $1, generate_series(0, $2 - 1) ON CONFLICT DO NOTHING",
                self.name,
                self.requests,
            )
            await conn.execute(
                """
                WITH gone AS (
                    DELETE FROM rate_limit_slots WHERE limiter = $1 AND slot >= $2
                    RETURNING used_at
                )
                UPDATE rate_limit_slots
                SET used_at = GREATEST(used_at, (SELECT max(used_at) FROM gone))
                WHERE limiter = $1 AND slot < $2 AND EXISTS (SELECT 1 FROM gone)
                """,
                self.name,
                self.requests,
            )
        self._sized = True

    async def _prune(self) -> None:
        async with registry_errors("prune the provider call log"):
            await self._pool.execute(
                "DELETE FROM provider_calls WHERE limiter = $1"
                " AND granted_at < now() - interval '1 day'",
                self.name,
            )
