"""What the tracker's consumer does with each record: requests become intents, callbacks
become deliveries (and replays, when replayed), notes events end tasks.

One consumer reads three topics (requests, callbacks, notes), so one record policy (the
consumer wrapper's retry and dead-letter rules) covers them all; this module only says
what each record means for the registry. Every step is idempotent, so a redelivered
record changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiokafka.structs import ConsumerRecord

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.callback import callback_kind
from services.common.consumer import RecordHandler, callback_handler
from services.common.errors import DeadLetter, UnknownTaskError
from services.common.events import CallbackEvent, MidiRequest
from services.common.keys import (
    REQUEST_ID_RULE,
    TASK_ID_RULE,
    is_valid_request_id,
    is_valid_task_id,
)
from services.common.replays import ReplayMark
from services.common.settings import TopicNames

from .registry import Registry, Rendering, TaskState
from .schedule import notes_outcome, terminal_of_callback

__all__ = ["Tracking", "tracking_handler"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Tracking:
    """What the handler needs: the registry, the topic names, and whom to wake when a
    request is recorded (the submitter)."""

    registry: Registry
    topics: TopicNames
    callback_url: str
    on_request: Callable[[], None]


def tracking_handler(tracking: Tracking) -> RecordHandler:
    """A record handler for the tracker's three topics, dispatched by topic."""

    async def on_request(record: ConsumerRecord[bytes, bytes]) -> None:
        await _on_request(tracking, record.value or b"")

    async def on_notes(record: ConsumerRecord[bytes, bytes]) -> None:
        await _on_notes(tracking, record.value or b"")

    async def on_callback(record: ConsumerRecord[bytes, bytes]) -> None:
        async def with_record(event: CallbackEvent) -> None:
            await _on_callback(tracking, event, record)

        # The consumer's own wrapper decodes, binds the log context, refuses bad task ids.
        await callback_handler(with_record)(record)

    by_topic: dict[str, RecordHandler] = {
        tracking.topics.requests: on_request,
        tracking.topics.callbacks: on_callback,
        tracking.topics.notes: on_notes,
    }

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        act = by_topic.get(record.topic)
        if act is None:  # pragma: no cover - the consumer subscribes to these topics only
            raise DeadLetter("unexpected_topic", f"the tracker does not read {record.topic}")
        await act(record)

    return handle


async def _on_request(tracking: Tracking, value: bytes) -> None:
    request = MidiRequest.decode(value)  # CodecError: dead-lettered as undecodable
    if not is_valid_request_id(request.request_id):
        raise DeadLetter("invalid_request_id", REQUEST_ID_RULE)
    if not request.source_task_id.strip():
        raise DeadLetter("invalid_request", "the request names no source_task_id")
    task, created = await tracking.registry.request(
        request.request_id, request.source_task_id, request.audio_id, tracking.callback_url
    )
    log.info("request_recorded", request_id=request.request_id, created=created, state=task.state)
    if created:
        tracking.on_request()


async def _on_callback(
    tracking: Tracking, event: CallbackEvent, record: ConsumerRecord[bytes, bytes]
) -> None:
    payload = _payload(event.body)
    if payload is None or callback_kind(payload) != "midi":
        return  # another operation's callback, or not JSON: not a MIDI task of ours
    task = await tracking.registry.record_delivery(
        event.task_id,
        body_sha256=event.body_sha256,
        received_at=event.received_at,
        verified=event.signature == "VERIFIED",
        source="poll" if event.source == "POLL" else "callback",
        request_id=event.request_id,
    )
    if event.replay:
        place = f"{record.topic}/{record.partition}/{record.offset}"
        mark = ReplayMark.from_headers(record.headers or (), place)
        published = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        await tracking.registry.record_replay(task.pk, event.body_sha256, mark, published)
    if terminal_of_callback(payload) == "failed":
        await tracking.registry.transition(event.task_id, TaskState.FAILED, reason="callback")


async def _on_notes(tracking: Tracking, value: bytes) -> None:
    record = await asyncio.to_thread(load_codec(NOTES_SCHEMA).decode, value)
    task_id = record["task_id"]
    if not is_valid_task_id(task_id):
        raise DeadLetter("invalid_task_id", TASK_ID_RULE)
    outcome = notes_outcome(str(record["state"]), int(record["note_count"]))
    if outcome is not None:
        await _end(tracking.registry, record, outcome)
    if record["replay"]:
        await _replay_rendered(tracking.registry, record)


async def _end(registry: Registry, record: dict[str, Any], outcome: str) -> None:
    task_id = record["task_id"]
    try:
        moved = await registry.transition(task_id, TaskState(outcome), reason="notes event")
    except UnknownTaskError:
        # Its callback event is on another topic, not read yet (or from before the tracker
        # existed): the task is a callback's (a poll's task is known), tracked from here on.
        # Its signature status comes with that callback event (verified only ever rises).
        await registry.record_delivery(
            task_id,
            body_sha256=record["body_sha256"],
            received_at=record["received_at"],
            verified=False,
            source="callback",
        )
        moved = await registry.transition(task_id, TaskState(outcome), reason="notes event")
    log.info("task_ended", task_id=task_id, state=outcome, moved=moved)


async def _replay_rendered(registry: Registry, record: dict[str, Any]) -> None:
    """What a replay led to, for the console to pair with the replay (the notes event may
    be read before the replayed callback: they come on two topics)."""
    rendered_at = record["processed_at"]
    if rendered_at.tzinfo is None:
        rendered_at = rendered_at.replace(tzinfo=UTC)
    rendering = Rendering(
        record["body_sha256"],
        rendered_at,
        str(record["state"]),
        int(record["note_count"]),
        record["midi"] is not None,
    )
    await registry.replay_rendered(record["task_id"], rendering)


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None
