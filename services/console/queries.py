"""The console's reads of the task registry: filtered pages of tasks, counts, one timeline.

Read-only, over the registry's own pool. The list is paged by keyset on
``(created_at DESC, id DESC)``: a page costs the same at the millionth task as at the
first, and a task created while someone pages never shifts the pages after it. Its SQL is
assembled from fixed fragments holding only the filters given, so each combination gets
its own plan on the indexes of migration 0004 (a generic ``$1 IS NULL OR ...`` plan would
not use them).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from services.common.errors import InvalidRequestError
from services.tracker.registry import (
    Registry,
    Rendering,
    Task,
    TaskState,
    registry_errors,
    task_from_row,
)

if TYPE_CHECKING:
    from asyncpg import Record

__all__ = [
    "MAX_LIMIT",
    "MIN_QUERY_LENGTH",
    "Cursor",
    "TaskFilter",
    "TaskPage",
    "counts",
    "dead_letters",
    "find_task",
    "list_sql",
    "list_tasks",
    "replay_events",
    "task_detail",
    "task_summary",
    "timeline",
]

#: The most tasks one page holds.
MAX_LIMIT = 200
#: The shortest ``q`` prefix searched (a shorter one would match a good part of the table).
MIN_QUERY_LENGTH = 3


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last task's creation time and row id."""

    created_at: datetime
    pk: int

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // _MICROSECOND
        return base64.urlsafe_b64encode(f"{micros}.{self.pk}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor :meth:`encode` made; :class:`InvalidRequestError` for any other text."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            micros, pk = (int(part) for part in raw.split("."))
            if not 0 < pk < 2**63:  # a row id is a positive bigint
                raise ValueError(f"row id {pk} out of range")
            return cls(_EPOCH + micros * _MICROSECOND, pk)
        except (ValueError, binascii.Error, OverflowError):
            raise InvalidRequestError(
                "invalid_cursor", f"invalid cursor {text!r}: pass a next_cursor as given"
            ) from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.resolution


@dataclass(frozen=True, slots=True)
class TaskFilter:
    state: TaskState | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: A task id or request id, or a prefix of either.
    q: str | None = None
    #: Only tasks with (``True``) or without (``False``) dead letters.
    has_dead_letters: bool | None = None


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    next_cursor: str | None


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    """``[prefix, upper)``: every text starting with ``prefix``, in byte order
    (``text_pattern_ops``), is in it; ids are ASCII, so the last character's successor is
    one byte more."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def list_sql(where: TaskFilter, cursor: Cursor | None, limit: int) -> tuple[str, list[object]]:
    """The page's query and its arguments (one row more than ``limit``: is there a next?)."""
    conditions: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.state is not None:
        conditions.append(f"state = {arg(where.state.value)}")
    if where.since is not None:
        conditions.append(f"created_at >= {arg(where.since)}")
    if where.until is not None:
        conditions.append(f"created_at < {arg(where.until)}")
    if where.q is not None:
        low, high = (arg(bound) for bound in _prefix_bounds(where.q))
        conditions.append(
            f"((task_id ~>=~ {low} AND task_id ~<~ {high})"
            f" OR (request_id ~>=~ {low} AND request_id ~<~ {high}))"
        )
    if where.has_dead_letters is not None:
        # ``> 0`` is the predicate of migration 0005's partial indexes, as written there.
        conditions.append("dead_letters > 0" if where.has_dead_letters else "dead_letters = 0")
    if cursor is not None:
        conditions.append(f"(created_at, id) < ({arg(cursor.created_at)}, {arg(cursor.pk)})")
    sql = (
        "SELECT t.*, (SELECT count(*) FROM task_deliveries d WHERE d.task = t.id) AS deliveries"
        " FROM tasks t"
        + (" WHERE " + " AND ".join(conditions) if conditions else "")
        + f" ORDER BY created_at DESC, id DESC LIMIT {arg(limit + 1)}"
    )
    return sql, args


async def list_tasks(
    registry: Registry, where: TaskFilter, *, limit: int, cursor: Cursor | None = None
) -> TaskPage:
    """One page of tasks, newest first; ``next_cursor`` is ``None`` on the last page."""
    sql, args = list_sql(where, cursor, limit)
    async with registry_errors("list tasks"):
        rows = await registry.pool.fetch(sql, *args)
    more = len(rows) > limit
    rows = rows[:limit]
    tasks = [
        task_summary(task_from_row(row), int(row["deliveries"]), row["dead_letters"])
        for row in rows
    ]
    last = rows[-1] if more else None
    following = Cursor(last["created_at"], last["id"]).encode() if last is not None else None
    return TaskPage(tasks, following)


async def counts(registry: Registry) -> dict[str, Any]:
    by_state = await registry.counts_by_state()
    return {
        "counts": {state.value: by_state.get(state, 0) for state in TaskState},
        "oldest_open_seconds": await registry.oldest_open_age(),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def task_summary(task: Task, deliveries: int, dead_letters: int) -> dict[str, Any]:
    """The list's view of a task (TaskSummary in the OpenAPI description)."""
    return {
        "task_id": task.task_id,
        "request_id": task.request_id,
        "state": task.state.value,
        "origin": task.origin,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "poll_count": task.poll_count,
        "deliveries": deliveries,
        "dead_letters": dead_letters,
    }


_DETAIL_FIELDS = ("source_task_id", "audio_id", "submit_outcome", "submit_reason")
_DETAIL_TIMES = (
    "next_poll_at",
    "requested_at",
    "submitted_at",
    "completed_at",
    "failed_at",
    "empty_at",
    "expired_at",
    "last_polled_at",
)


async def find_task(registry: Registry, key: str) -> Task | None:
    """The task whose provider task id or request id is ``key``."""
    return await registry.get(key) or await registry.get_by_request(key)


async def task_detail(registry: Registry, task: Task) -> dict[str, Any]:
    """The task with every field an operator reads, and its timeline."""
    deliveries = await registry.deliveries(task.pk)
    events = await timeline(registry, task)
    dead = sum(1 for event in events if event["kind"] == "dead_letter")
    document = task_summary(task, len(deliveries), dead)
    document.update({name: getattr(task, name) for name in _DETAIL_FIELDS})
    document.update({name: _iso(getattr(task, name)) for name in _DETAIL_TIMES})
    return {"task": document, "timeline": events}


async def timeline(registry: Registry, task: Task) -> list[dict[str, Any]]:
    """Transitions, deliveries, polls, dead letters and replays in one list by time; at one instant
    in the order they were recorded, in that order of kinds."""
    events: list[tuple[datetime, int, int, dict[str, Any]]] = []
    for index, move in enumerate(await registry.history(task.pk)):
        old = move.from_state.value if move.from_state is not None else None
        summary = f"{old} -> {move.to_state.value}" if old else move.to_state.value
        if move.reason:
            summary += f" ({move.reason})"
        detail: dict[str, Any] = {"from": old, "to": move.to_state.value, "reason": move.reason}
        events.append((move.at, 0, index, _event(move.at, "transition", summary, detail)))
    for index, body in enumerate(await registry.deliveries(task.pk)):
        verified = "verified" if body.verified else "not verified"
        summary = f"result by {body.source} ({verified})"
        detail = {
            "source": body.source,
            "body_sha256": body.body_sha256,
            "verified": body.verified,
            "first_seen_at": body.first_seen_at.isoformat(),
        }
        events.append(
            (body.received_at, 1, index, _event(body.received_at, "delivery", summary, detail))
        )
    for index, poll in enumerate(await registry.polls(task.pk)):
        detail = {"outcome": poll.outcome, "detail": poll.detail, "owner": poll.owner}
        events.append((poll.at, 2, index, _event(poll.at, "poll", f"poll: {poll.outcome}", detail)))
    for index, letter in enumerate(await dead_letters(registry, task)):
        at = letter["failed_at"] or letter["dlq_timestamp"]
        redriven = " (redriven)" if letter["redriven_at"] is not None else ""
        summary = f"dead letter{redriven}: {letter['reason']} ({letter['consumer_group']})"
        detail = _dead_letter_detail(letter)
        events.append((at, 3, index, _event(at, "dead_letter", summary, detail)))
    replayed, renderings = await registry.replays(task.pk)
    for index, (at, replay) in enumerate(replay_events(replayed, renderings)):
        events.append((at, 4, index, replay))
    events.sort(key=lambda event: event[:3])
    return [event for *_, event in events]


def replay_events(
    replayed: list[Record], renderings: list[Rendering]
) -> list[tuple[datetime, dict[str, Any]]]:
    """One event per replay (its records share a replay id), at its first record, each
    body with what the processor made of it: the body's first rendering made after it was
    replayed and not already paired with an earlier replay of it."""
    paired: set[Rendering] = set()
    replays: dict[str, dict[str, Any]] = {}
    for row in replayed:
        rendering = next(
            (
                found
                for found in renderings
                if found.body_sha256 == row["body_sha256"]
                and found.rendered_at >= row["replayed_at"]
                and found not in paired
            ),
            None,
        )
        if rendering is not None:
            paired.add(rendering)
        detail = replays.setdefault(
            row["replay_id"],
            {
                "replay_id": row["replay_id"],
                "by": row["replayed_by"],
                "via": row["replayed_via"],
                "bodies": [],
                "_at": row["replayed_at"],
            },
        )
        detail["bodies"].append(
            {
                "body_sha256": row["body_sha256"],
                "replayed_at": row["replayed_at"].isoformat(),
                "rendering": None if rendering is None else _rendering(rendering),
            }
        )
    return [(at := detail.pop("_at"), _replay_event(at, detail)) for detail in replays.values()]


def _rendering(rendering: Rendering) -> dict[str, Any]:
    return {
        "rendered_at": rendering.rendered_at.isoformat(),
        "state": rendering.state,
        "note_count": rendering.note_count,
        "midi_written": rendering.midi_written,
    }


def _replay_event(at: datetime, detail: dict[str, Any]) -> dict[str, Any]:
    """``replay (by ops, console): 2 bodies, rendered 2 of 2 (complete, 812 notes)``: the
    last body's rendering is the one the task's MIDI file is made of."""
    bodies = detail["bodies"]
    who = ", ".join(part for part in (detail["by"] and f"by {detail['by']}", detail["via"]) if part)
    summary = "replay" + (f" ({who})" if who else "") + f": {len(bodies)} "
    summary += "body" if len(bodies) == 1 else "bodies"
    rendered = [body["rendering"] for body in bodies if body["rendering"] is not None]
    if rendered:
        last = rendered[-1]
        summary += (
            f", rendered {len(rendered)} of {len(bodies)}"
            f" ({last['state']}, {last['note_count']} notes)"
        )
    return _event(at, "replay", summary, detail)


def _event(at: datetime, kind: str, summary: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"at": at.isoformat(), "kind": kind, "summary": summary, "detail": detail}


async def dead_letters(registry: Registry, task: Task) -> list[Record]:
    """The dead letters keyed by the task's id or its request id, as the indexer wrote
    them, in the order they were dead-lettered."""
    keys = [key for key in (task.task_id, task.request_id) if key is not None]
    async with registry_errors("read dead letters"):
        return await registry.pool.fetch(
            "SELECT * FROM dead_letters WHERE task_id = ANY($1::text[])"
            " ORDER BY dlq_timestamp, dlq_partition, dlq_offset",
            keys,
        )


def _dead_letter_detail(letter: Record) -> dict[str, Any]:
    return {
        "id": letter["id"],
        "reason": letter["reason"],
        "error": letter["error"],
        "consumer_group": letter["consumer_group"],
        "source_topic": letter["source_topic"],
        "source_partition": letter["source_partition"],
        "source_offset": letter["source_offset"],
        "source_timestamp": _iso(letter["source_timestamp"]),
        "failed_at": _iso(letter["failed_at"]),
        "dlq": f"{letter['dlq_topic']}/{letter['dlq_partition']}/{letter['dlq_offset']}",
        "key": letter["task_id"],
        "value_bytes": letter["value_bytes"],
        "value_sha256": letter["value_sha256"],
        "headers": orjson.loads(letter["headers"]),
        "redriven_at": _iso(letter["redriven_at"]),
        "redriven_by": letter["redriven_by"],
    }
