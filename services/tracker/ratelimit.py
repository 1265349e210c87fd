"""The provider's rate limit, held by all tracker replicas together through PostgreSQL.

A sliding log of ``requests`` slots per limiter: a call takes the slot used longest ago
(``FOR UPDATE SKIP LOCKED``, so replicas never queue behind one another) and may go when
that slot's last use is at least one window old by the database's clock; otherwise it
waits the difference and tries again. Any ``requests + 1`` grants thus share a slot, and
two uses of one slot are a window apart: no window ever holds more than ``requests``.
Each grant is also a ``provider_calls`` row, from which that can be checked.

The provider counts a request when it arrives, which is after we grant it (the event
loop, the network). So a request made through :meth:`PostgresRateLimiter.slot` stamps its
slot again when its answer is in: the next use of that slot is a window after a moment
the provider had already seen the request, and its count holds too, whatever the transit.

Why not a token bucket in Redis: the tracker already depends on PostgreSQL and nothing
else of its own; one fewer server to run, secure and fail over. A few hundred
single-row transactions a minute are nothing to PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from .registry import registry_errors

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import Pool

__all__ = ["PostgresRateLimiter"]

log = structlog.get_logger(__name__)

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
        waited, _slot = await self._grant()
        return waited

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one request's place: entered when it may go (the seconds waited), left
        when its answer is in, which is when the slot's window starts again."""
        waited, slot = await self._grant()
        try:
            yield waited
        finally:
            await self._stamp(slot)

    async def _grant(self) -> tuple[float, int]:
        if not self._sized:
            await self._resize()
        waited = 0.0
        while isinstance(wait := await self._try(waited), float):
            started = time.monotonic()
            await asyncio.sleep(wait)
            waited += time.monotonic() - started
        self._grants += 1
        if self._grants % _PRUNE_EVERY == 0:
            await self._prune()
        return waited, wait

    async def _stamp(self, slot: int) -> None:
        """The request is over: its slot's window counts from now. If the database cannot
        be reached, the grant's own time stays (the limit then holds at our side only)."""
        try:
            async with registry_errors("restamp a rate limit slot"):
                await self._pool.execute(
                    "UPDATE rate_limit_slots SET used_at = greatest(used_at, clock_timestamp())"
                    " WHERE limiter = $1 AND slot = $2",
                    self.name,
                    slot,
                )
        except Exception as exc:  # the answer is in hand: never lose it over bookkeeping
            log.warning("rate_limit_restamp_failed", error=repr(exc))

    async def _try(self, waited: float) -> float | int:
        """Take a slot (its number) or say how long to wait before the next try (seconds)."""
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
            taken: int = slot["slot"]
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
        return taken

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
