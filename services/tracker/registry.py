"""The task registry: every MIDI task we know of and where it is in its life, in PostgreSQL.

A task is ``requested`` (our intent, recorded before the provider is called), then
``submitted`` (the provider gave it a task id, or its callback showed it to us), then
``completed``, ``failed``, ``empty`` or ``expired``. Every timestamp the registry writes
comes from the database's clock (``now()``), so replicas with skewed clocks agree; every
state change is also a ``task_transitions`` row, the console's timeline.

What the registry guarantees, by single statements and row locks rather than by care in
its callers: one intent per request id; at most one submission attempt per intent (an
attempt of unknown outcome is never started again on our own); one replica polling a
task at a time (leases taken ``FOR UPDATE SKIP LOCKED``); no state going backwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import asyncpg
from aiohttp import web

from services.common.errors import RegistryError, RegistryUnavailableError, UnknownTaskError
from services.common.replays import ReplayMark

from .migrate import migrate

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import Pool, PoolConnectionProxy

__all__ = [
    "OLDEST_OPEN_SQL",
    "REGISTRY",
    "Delivery",
    "DeliverySource",
    "Poll",
    "Registry",
    "Rendering",
    "Task",
    "TaskState",
    "Transition",
    "When",
    "registry_errors",
    "setup_registry",
    "task_from_row",
]

DeliverySource = Literal["callback", "poll"]


class TaskState(StrEnum):
    REQUESTED = "requested"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    EMPTY = "empty"
    EXPIRED = "expired"

    TERMINAL: ClassVar[frozenset[TaskState]]

    @property
    def rank(self) -> int:
        """Requested 0, submitted 1, any terminal state 2: states only move up."""
        return {"requested": 0, "submitted": 1}.get(self.value, 2)


TaskState.TERMINAL = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.EMPTY, TaskState.EXPIRED}
)
OPEN = ("requested", "submitted")
#: How old the oldest open task is. Its condition is the predicate of the partial index
#: tasks_open_by_creation, as written there (a parameter would not prove it), so min() is
#: that index's first entry, however many tasks there are.
OLDEST_OPEN_SQL = (
    "SELECT extract(epoch FROM now() - min(created_at))::float8 AS age FROM tasks"
    f" WHERE state IN ({', '.join(repr(state) for state in OPEN)})"
)


@dataclass(frozen=True)
class Task:
    pk: int
    request_id: str | None
    task_id: str | None
    source_task_id: str | None
    audio_id: str | None
    callback_url: str | None
    origin: Literal["tracker", "external"]
    state: TaskState
    created_at: datetime
    updated_at: datetime
    requested_at: datetime | None
    submitted_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    empty_at: datetime | None
    expired_at: datetime | None
    submit_started_at: datetime | None
    submit_owner: str | None
    submit_outcome: Literal["unknown", "rejected"] | None
    submit_reason: str | None
    next_poll_at: datetime | None
    poll_count: int
    last_polled_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None


@dataclass(frozen=True)
class Transition:
    task: int
    from_state: TaskState | None
    to_state: TaskState
    at: datetime
    reason: str | None


@dataclass(frozen=True)
class Delivery:
    task: int
    body_sha256: str
    source: DeliverySource
    received_at: datetime
    verified: bool
    first_seen_at: datetime


@dataclass(frozen=True)
class Poll:
    task: int
    at: datetime
    owner: str
    outcome: str
    detail: str | None


_TASK_COLUMNS = tuple(f.name for f in fields(Task) if f.name != "pk")


def task_from_row(row: Record) -> Task:
    """A ``tasks`` row (``SELECT *``; other columns are ignored) as a :class:`Task`."""
    values: dict[str, Any] = {name: row[name] for name in _TASK_COLUMNS}
    values["state"] = TaskState(row["state"])
    return Task(pk=row["id"], **values)


def _transition(row: Record) -> Transition:
    old = row["from_state"]
    return Transition(
        row["task"],
        TaskState(old) if old else None,
        TaskState(row["to_state"]),
        row["at"],
        row["reason"],
    )


# Errors that mean "not now": the server is away, restarting, full, or chose a victim.
_RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # Raised instead of a connection error when the server vanished mid-protocol.
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
)


@contextlib.asynccontextmanager
async def registry_errors(what: str) -> AsyncIterator[None]:
    """Convert the driver's errors where they enter: ours say whether to retry."""
    try:
        yield
    except _RETRYABLE as exc:
        raise RegistryUnavailableError(f"the task registry could not {what}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise RegistryError(f"the task registry refused to {what}: {exc}") from exc


#: The first key of the per-task-id advisory locks (two-key locks never meet the migration's
#: one-key lock: PostgreSQL keeps the two key spaces apart).
_TASK_ID_LOCKS = 14

When = datetime | timedelta


def _when(value: When | None) -> tuple[timedelta | None, datetime | None]:
    """A time given as a delay (from the database's clock) or as a time, as the two
    parameters :func:`_at` reads."""
    if isinstance(value, timedelta):
        return value, None
    return None, value


def _at(first: int) -> str:
    """SQL for the time that parameters ``$first`` and ``$first+1`` (from :func:`_when`)
    name: now() plus the delay, or the time, or NULL."""
    return f"COALESCE(now() + ${first}::interval, ${first + 1}::timestamptz)"


_INSERT_TRANSITION = """
INSERT INTO task_transitions (task, from_state, to_state, at, reason)
VALUES ($1, $2, $3, COALESCE($4, now()), $5)
"""


class Rendering(NamedTuple):
    """What the processor made of a replayed body (its notes event)."""

    body_sha256: str
    rendered_at: datetime
    state: str
    note_count: int
    midi_written: bool


class Registry:
    """The registry over an asyncpg pool; :meth:`connect` migrates the schema first."""

    def __init__(self, pool: Pool[Record]) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> Registry:
        async with registry_errors("connect"):
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        try:
            async with registry_errors("migrate its schema"), pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @property
    def pool(self) -> Pool[Record]:
        """The pool, shared with the rate limiter (one set of connections per replica)."""
        return self._pool

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        """Raise :class:`RegistryUnavailableError` unless the database answers (readiness)."""
        await self._one("answer a ping", "SELECT 1")

    @contextlib.asynccontextmanager
    async def _tx(self, what: str) -> AsyncIterator[PoolConnectionProxy[Record]]:
        async with registry_errors(what), self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def _one(self, what: str, query: str, *args: object) -> Record | None:
        async with registry_errors(what):
            return await self._pool.fetchrow(query, *args)

    async def _all(self, what: str, query: str, *args: object) -> list[Record]:
        async with registry_errors(what):
            return await self._pool.fetch(query, *args)

    # -- submission ----------------------------------------------------------------------

    async def request(
        self,
        request_id: str,
        source_task_id: str,
        audio_id: str | None,
        callback_url: str,
    ) -> tuple[Task, bool]:
        """Record the intent to submit; the same ``request_id`` again returns the first row
        (``created`` False), whatever the other arguments say."""
        async with self._tx("record a request") as conn:
            row = await conn.fetchrow(
                """
                WITH new AS (
                    INSERT INTO tasks (request_id, source_task_id, audio_id, callback_url,
                                       origin, state, requested_at)
                    VALUES ($1, $2, $3, $4, 'tracker', 'requested', now())
                    ON CONFLICT (request_id) DO NOTHING
                    RETURNING *
                ), logged AS (
                    INSERT INTO task_transitions (task, from_state, to_state, reason)
                    SELECT id, NULL, 'requested', 'requested' FROM new
                )
                SELECT * FROM new
                """,
                request_id,
                source_task_id,
                audio_id,
                callback_url,
            )
            if row is not None:
                return task_from_row(row), True
            existing = await conn.fetchrow("SELECT * FROM tasks WHERE request_id = $1", request_id)
        if existing is None:  # pragma: no cover - rows with a request id are never deleted
            raise RegistryError(f"request {request_id!r} conflicted with a row that is gone")
        return task_from_row(existing), False

    async def claim_submission(self, request_id: str, owner: str) -> Task | None:
        """Mark the intent as being submitted by ``owner``, if no attempt was ever started;
        ``None`` otherwise. Whoever gets a task calls the provider; nobody else ever does."""
        row = await self._one(
            "claim a submission",
            """
            UPDATE tasks SET submit_started_at = now(), submit_owner = $2, updated_at = now()
            WHERE request_id = $1 AND state = 'requested' AND submit_started_at IS NULL
            RETURNING *
            """,
            request_id,
            owner,
        )
        return task_from_row(row) if row is not None else None

    async def claimable(self, limit: int) -> list[Task]:
        """Requests no attempt was ever started for, oldest first: what the submitter
        claims next (each claim still goes through :meth:`claim_submission`)."""
        rows = await self._all(
            "list claimable requests",
            "SELECT * FROM tasks WHERE state = 'requested' AND submit_started_at IS NULL"
            " ORDER BY created_at, id LIMIT $1",
            limit,
        )
        return [task_from_row(row) for row in rows]

    async def submitted(self, request_id: str, task_id: str, first_poll_at: When) -> Task:
        """The provider answered with ``task_id``: the intent becomes a submitted task, first
        polled at ``first_poll_at`` (a time, or a delay from the database's now) unless
        its callback ends it before."""
        async with self._tx("record a submission") as conn:
            intent = await self._intent(conn, request_id)
            if intent["task_id"] == task_id:  # a retry, or healed by its callback already
                row = await conn.fetchrow(
                    f"UPDATE tasks SET next_poll_at = COALESCE(next_poll_at, {_at(2)})"
                    " WHERE id = $1 AND state = 'submitted' RETURNING *",
                    intent["id"],
                    *_when(first_poll_at),
                )
                return task_from_row(row or intent)
            if intent["task_id"] is not None or intent["state"] != "requested":
                raise RegistryError(
                    f"request {request_id!r} is {intent['state']} with task "
                    f"{intent['task_id']!r}: it cannot take task {task_id!r}"
                )
            row = await _link(conn, intent, task_id, first_poll_at, "submitted")
        return task_from_row(row)

    @staticmethod
    async def _intent(conn: PoolConnectionProxy[Record], request_id: str) -> Record:
        row = await conn.fetchrow(
            "SELECT * FROM tasks WHERE request_id = $1 FOR UPDATE", request_id
        )
        if row is None:
            raise UnknownTaskError(f"no task has request id {request_id!r}")
        return row

    async def release_submission(self, request_id: str) -> bool:
        """The provider certainly created no task (it refused before acting, or was never
        reached): the intent may be claimed again. Returns whether it was released."""
        row = await self._one(
            "release a submission",
            """
            UPDATE tasks SET submit_started_at = NULL, submit_owner = NULL, updated_at = now()
            WHERE request_id = $1 AND state = 'requested' AND submit_outcome IS NULL
            RETURNING id
            """,
            request_id,
        )
        return row is not None

    async def reopen_submission(self, request_id: str) -> bool:
        """An operator checked with the provider that an intent of unknown outcome made no
        task: it may be claimed (and submitted) again. Returns whether it was reopened."""
        row = await self._one(
            "reopen a submission",
            """
            UPDATE tasks SET submit_started_at = NULL, submit_owner = NULL,
                submit_outcome = NULL, submit_reason = NULL, updated_at = now()
            WHERE request_id = $1 AND state = 'requested' AND task_id IS NULL
              AND submit_started_at IS NOT NULL
            RETURNING id
            """,
            request_id,
        )
        return row is not None

    async def submission_rejected(self, request_id: str, reason: str) -> Task:
        """The provider refused the task for good (400, 401, 402, 404, 413): it failed."""
        async with self._tx("record a rejection") as conn:
            intent = await self._intent(conn, request_id)
            if intent["state"] != "requested":
                return task_from_row(intent)
            row = await conn.fetchrow(
                """
                UPDATE tasks SET state = 'failed', failed_at = now(), updated_at = now(),
                    submit_outcome = 'rejected', submit_reason = $2
                WHERE id = $1 RETURNING *
                """,
                intent["id"],
                reason,
            )
            await conn.execute(
                _INSERT_TRANSITION, intent["id"], "requested", "failed", None, reason
            )
        assert row is not None
        return task_from_row(row)

    async def submission_unknown(self, request_id: str, reason: str) -> Task:
        """Whether the provider created a task cannot be known (a timeout after sending):
        the intent is never claimed again; its callback may still heal it."""
        row = await self._one(
            "record an unknown outcome",
            """
            UPDATE tasks SET submit_outcome = 'unknown', submit_reason = $2, updated_at = now()
            WHERE request_id = $1 AND state = 'requested' RETURNING *
            """,
            request_id,
            reason,
        )
        if row is None:
            return await self._by_request(request_id)
        return task_from_row(row)

    async def unknown_submissions(
        self, stale_after: timedelta = timedelta(minutes=5)
    ) -> list[Task]:
        """Intents marked unknown, or whose attempt started more than ``stale_after`` ago and
        never resolved (the replica crashed mid-call): for an operator to look at."""
        rows = await self._all(
            "list unknown submissions",
            """
            SELECT * FROM tasks
            WHERE state = 'requested' AND submit_started_at IS NOT NULL
              AND (submit_outcome = 'unknown' OR submit_started_at < now() - $1::interval)
            ORDER BY submit_started_at
            """,
            stale_after,
        )
        return [task_from_row(row) for row in rows]

    # -- what the provider tells ---------------------------------------------------------

    async def record_delivery(
        self,
        task_id: str,
        *,
        body_sha256: str,
        received_at: datetime,
        verified: bool,
        source: DeliverySource,
        request_id: str | None = None,
    ) -> Task:
        """A result body for ``task_id`` arrived (by callback or by poll); idempotent.

        An unknown task id becomes an ``external`` task; a ``request_id`` naming an intent
        that has no task yet (the submitting replica died before writing the provider's
        answer) links the two: the orphan is healed.
        """
        async with self._tx("record a delivery") as conn:
            # Intent first, then task: the order submitted() locks them in, so no deadlock.
            intent = None
            if request_id is not None:
                intent = await conn.fetchrow(
                    "SELECT * FROM tasks WHERE request_id = $1 AND task_id IS NULL"
                    " AND state = 'requested' FOR UPDATE",
                    request_id,
                )
            await _lock_task_id(conn, task_id)
            row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = $1 FOR UPDATE", task_id)
            if intent is not None and (row is None or row["request_id"] is None):
                row = await _link(conn, intent, task_id, None, f"healed by {source}")
            if row is None:
                row = await _external(conn, task_id, source)
            await conn.execute(
                """
                INSERT INTO task_deliveries (task, body_sha256, source, received_at, verified)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (task, body_sha256, source)
                DO UPDATE SET verified = task_deliveries.verified OR EXCLUDED.verified
                """,
                row["id"],
                body_sha256,
                source,
                received_at,
                verified,
            )
        return task_from_row(row)

    async def transition(
        self,
        task_id: str,
        to: TaskState,
        *,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Move the task forward to ``to`` (at ``at``, default now); whether it moved.

        States never go back and a terminal state is final, except ``expired``: a result
        that shows up after all replaces it.
        """
        allowed = {state for state in TaskState if state.rank < to.rank}
        if to in TaskState.TERMINAL and to is not TaskState.EXPIRED:
            allowed.add(TaskState.EXPIRED)
        async with self._tx("move a task") as conn:
            row = await conn.fetchrow(
                "SELECT id, state FROM tasks WHERE task_id = $1 FOR UPDATE", task_id
            )
            if row is None:
                raise UnknownTaskError(f"no task has task id {task_id!r}")
            if TaskState(row["state"]) not in allowed:
                return False
            # The column name comes from the enum, never from input.
            await conn.execute(
                f"""
                UPDATE tasks SET state = $2, {to.value}_at = COALESCE($3, now()),
                    updated_at = now(),
                    next_poll_at = CASE WHEN $4 THEN NULL ELSE next_poll_at END
                WHERE id = $1
                """,
                row["id"],
                to.value,
                at,
                to in TaskState.TERMINAL,
            )
            await conn.execute(_INSERT_TRANSITION, row["id"], row["state"], to.value, at, reason)
        return True

    # -- replays --------------------------------------------------------------------------

    async def record_replay(
        self, task_pk: int, body_sha256: str, mark: ReplayMark, at: datetime
    ) -> None:
        """A replayed callback event of the task was published at ``at``; idempotent."""
        async with registry_errors("record a replay"):
            await self._pool.execute(
                """
                INSERT INTO task_replays
                    (task, replay_id, body_sha256, replayed_at, replayed_by, replayed_via)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (task, replay_id, body_sha256) DO NOTHING
                """,
                task_pk,
                mark.replay_id,
                body_sha256,
                at,
                mark.by,
                mark.via,
            )

    async def replay_rendered(self, task_id: str, rendering: Rendering) -> None:
        """The processor rendered a replayed body of the task; idempotent."""
        async with registry_errors("record a replay's rendering"):
            await self._pool.execute(
                """
                INSERT INTO task_replay_renderings
                    (task, body_sha256, rendered_at, state, note_count, midi_written)
                SELECT id, $2, $3, $4, $5, $6 FROM tasks WHERE task_id = $1
                ON CONFLICT DO NOTHING
                """,
                task_id,
                *rendering,
            )

    async def replays(self, task_pk: int) -> tuple[list[Record], list[Rendering]]:
        """The task's replayed records in the order they were published, and the
        renderings of replayed bodies in the order they were made."""
        replayed = await self._all(
            "read a task's replays",
            "SELECT * FROM task_replays WHERE task = $1 ORDER BY replayed_at, id",
            task_pk,
        )
        renderings = await self._all(
            "read a task's replays",
            "SELECT body_sha256, rendered_at, state, note_count, midi_written"
            " FROM task_replay_renderings WHERE task = $1 ORDER BY rendered_at",
            task_pk,
        )
        return replayed, [Rendering(*row.values()) for row in renderings]

    # -- polling -------------------------------------------------------------------------

    async def lease_due_polls(self, owner: str, *, limit: int, lease_seconds: float) -> list[Task]:
        """Lease up to ``limit`` submitted tasks due for a poll to ``owner``, in one statement:
        rows another replica is leasing are skipped, never waited for nor taken twice."""
        rows = await self._all(
            "lease due polls",
            """
            UPDATE tasks SET lease_owner = $1, lease_until = now() + make_interval(secs => $3),
                updated_at = now()
            FROM (
                SELECT id FROM tasks
                WHERE state = 'submitted' AND next_poll_at <= now()
                  AND (lease_until IS NULL OR lease_until < now())
                ORDER BY next_poll_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            ) AS due
            WHERE tasks.id = due.id
            RETURNING tasks.*
            """,
            owner,
            limit,
            float(lease_seconds),
        )
        return sorted((task_from_row(row) for row in rows), key=lambda t: (t.next_poll_at, t.pk))

    async def poll_done(
        self,
        task_id: str,
        owner: str,
        *,
        outcome: str,
        detail: str | None = None,
        next_poll_at: When | None,
    ) -> bool:
        """Record a poll and, if ``owner`` still holds the lease, release it and schedule the
        next poll (a time, a delay from the database's now, or ``None``: no more).
        Returns whether the lease was still ``owner``'s."""
        async with self._tx("record a poll") as conn:
            row = await conn.fetchrow("SELECT id FROM tasks WHERE task_id = $1", task_id)
            if row is None:
                raise UnknownTaskError(f"no task has task id {task_id!r}")
            await conn.execute(
                "INSERT INTO task_polls (task, owner, outcome, detail) VALUES ($1, $2, $3, $4)",
                row["id"],
                owner,
                outcome,
                detail,
            )
            held = await conn.fetchrow(
                f"""
                UPDATE tasks SET poll_count = poll_count + 1, last_polled_at = now(),
                    next_poll_at = CASE WHEN state = 'submitted' THEN {_at(3)} END,
                    lease_owner = NULL, lease_until = NULL, updated_at = now()
                WHERE id = $1 AND lease_owner = $2
                RETURNING id
                """,
                row["id"],
                owner,
                *_when(next_poll_at),
            )
        return held is not None

    async def expire_due(self, retention: timedelta) -> list[Task]:
        """Expire the submitted tasks older than the provider's ``retention``: their result,
        if any, is gone from the provider. Returns them."""
        rows = await self._all(
            "expire tasks",
            """
            WITH gone AS (
                UPDATE tasks SET state = 'expired', expired_at = now(), next_poll_at = NULL,
                    updated_at = now()
                WHERE state = 'submitted' AND submitted_at < now() - $1::interval
                RETURNING *
            ), logged AS (
                INSERT INTO task_transitions (task, from_state, to_state, reason)
                SELECT id, 'submitted', 'expired', 'no result within the provider''s retention'
                FROM gone
            )
            SELECT * FROM gone ORDER BY id
            """,
            retention,
        )
        return [task_from_row(row) for row in rows]

    # -- for metrics and alerts ----------------------------------------------------------

    async def counts_by_state(self) -> dict[TaskState, int]:
        """Tasks by state, exact, from the slots migration 0008's triggers keep."""
        rows = await self._all(
            "count tasks", "SELECT state, sum(tasks)::bigint AS n FROM task_counts GROUP BY state"
        )
        counts = dict.fromkeys(TaskState, 0)
        counts.update({TaskState(row["state"]): row["n"] for row in rows})
        return counts

    async def oldest_open_age(self) -> float | None:
        """Seconds since the oldest task not yet terminal was created; ``None``: no such task."""
        row = await self._one("measure the oldest open task", OLDEST_OPEN_SQL)
        return None if row is None or row["age"] is None else float(row["age"])

    async def at_risk(self, retention: timedelta, warning: timedelta) -> int:
        """Submitted tasks within ``warning`` of their expiry, with no result yet."""
        row = await self._one(
            "count tasks at risk",
            "SELECT count(*) FROM tasks WHERE state = 'submitted'"
            " AND submitted_at < now() - ($1::interval - $2::interval)",
            retention,
            warning,
        )
        return int(row["count"]) if row is not None else 0

    # -- reading -------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        row = await self._one("read a task", "SELECT * FROM tasks WHERE task_id = $1", task_id)
        return task_from_row(row) if row is not None else None

    async def get_by_request(self, request_id: str) -> Task | None:
        row = await self._one(
            "read a task", "SELECT * FROM tasks WHERE request_id = $1", request_id
        )
        return task_from_row(row) if row is not None else None

    async def _by_request(self, request_id: str) -> Task:
        task = await self.get_by_request(request_id)
        if task is None:
            raise UnknownTaskError(f"no task has request id {request_id!r}")
        return task

    async def history(self, task_pk: int) -> list[Transition]:
        """The task's transitions in the order they were recorded (``at`` may be earlier than
        a previous one's: a result's own time, given to :meth:`transition`)."""
        rows = await self._all(
            "read a task's history",
            "SELECT * FROM task_transitions WHERE task = $1 ORDER BY id",
            task_pk,
        )
        return [_transition(row) for row in rows]

    async def deliveries(self, task_pk: int) -> list[Delivery]:
        rows = await self._all(
            "read a task's deliveries",
            "SELECT task, body_sha256, source, received_at, verified, first_seen_at"
            " FROM task_deliveries WHERE task = $1 ORDER BY received_at, source, body_sha256",
            task_pk,
        )
        return [Delivery(**dict(row.items())) for row in rows]

    async def polls(self, task_pk: int) -> list[Poll]:
        rows = await self._all(
            "read a task's polls",
            "SELECT task, at, owner, outcome, detail FROM task_polls WHERE task = $1 ORDER BY id",
            task_pk,
        )
        return [Poll(**dict(row.items())) for row in rows]

    async def list_tasks(self, state: TaskState | None = None, limit: int = 100) -> list[Task]:
        """The newest tasks first, all or those in ``state``."""
        rows = await self._all(
            "list tasks",
            "SELECT * FROM tasks WHERE $1::text IS NULL OR state = $1"
            " ORDER BY created_at DESC, id DESC LIMIT $2",
            state.value if state is not None else None,
            limit,
        )
        return [task_from_row(row) for row in rows]


async def _lock_task_id(conn: PoolConnectionProxy[Record], task_id: str) -> None:
    """Serialise, until commit, every transaction that may create or link ``task_id``: a
    row lock cannot, for the row does not exist yet (the provider's answer and the task's
    callback race to write it). Always taken after the intent's row lock, never before,
    so two such transactions cannot deadlock."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _TASK_ID_LOCKS, task_id)


async def _external(conn: PoolConnectionProxy[Record], task_id: str, source: str) -> Record:
    """A task requested elsewhere, first seen through a result: tracked from now on."""
    row = await conn.fetchrow(
        """
        INSERT INTO tasks (task_id, origin, state, submitted_at)
        VALUES ($1, 'external', 'submitted', now())
        ON CONFLICT (task_id) DO NOTHING
        RETURNING *
        """,
        task_id,
    )
    if row is not None:
        await conn.execute(
            _INSERT_TRANSITION, row["id"], None, "submitted", None, f"seen by {source}"
        )
        return row
    # Another transaction inserted it meanwhile (we waited for it to commit): use that row.
    row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = $1 FOR UPDATE", task_id)
    assert row is not None
    return row


async def _link(
    conn: PoolConnectionProxy[Record],
    intent: Record,
    task_id: str,
    first_poll_at: When | None,
    reason: str,
) -> Record:
    """Give the intent its provider task. An ``external`` row that already holds the task
    id (its result came before we wrote the provider's answer) is folded into the intent,
    with its history, deliveries, polls and state."""
    await _lock_task_id(conn, task_id)
    other = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = $1 FOR UPDATE", task_id)
    if other is not None and other["request_id"] is not None:
        raise RegistryError(f"task {task_id!r} already belongs to request {other['request_id']!r}")
    if other is not None:
        for table in ("task_transitions", "task_deliveries", "task_polls"):
            await conn.execute(
                f"UPDATE {table} SET task = $1 WHERE task = $2", intent["id"], other["id"]
            )
        await conn.execute("DELETE FROM tasks WHERE id = $1", other["id"])
    state = other["state"] if other is not None else "submitted"
    stamps = [other[f"{s}_at"] if other is not None else None for s in _AFTER_SUBMISSION]
    row = await conn.fetchrow(
        f"""
        UPDATE tasks SET task_id = $2, state = $3, submitted_at = COALESCE($4, now()),
            completed_at = $5, failed_at = $6, empty_at = $7, expired_at = $8,
            next_poll_at = CASE WHEN $3 = 'submitted' THEN {_at(9)} END,
            updated_at = now()
        WHERE id = $1
        RETURNING *
        """,
        intent["id"],
        task_id,
        state,
        other["submitted_at"] if other is not None else None,
        *stamps,
        *_when(first_poll_at),
    )
    await conn.execute(_INSERT_TRANSITION, intent["id"], intent["state"], "submitted", None, reason)
    assert row is not None
    return row


_AFTER_SUBMISSION = ("completed", "failed", "empty", "expired")


REGISTRY = web.AppKey("registry", Registry)


def setup_registry(app: web.Application, url: str) -> None:
    """Open the registry (migrating its schema) when ``app`` starts, close it when it stops."""

    async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
        app[REGISTRY] = await Registry.connect(url)
        try:
            yield
        finally:
            await app[REGISTRY].close()

    app.cleanup_ctx.append(registry_ctx)
