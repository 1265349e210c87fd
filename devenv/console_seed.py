"""Tasks as the pipeline leaves them, written straight into a registry and a storage: the
console's tests and its benchmark need many, quickly, without running the pipeline.

Each task goes through the real parts' own functions: the registry's calls, the
archiver's :func:`archive_event`, the processor's :func:`process_callback`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.archiver.archive import archive_event
from services.common.events import CallbackEvent
from services.common.storage import Storage
from services.processor.app import Processed, midi_key, process_callback
from services.tracker.registry import Registry, TaskState
from services.tracker.schedule import notes_outcome

from .simulator.results import midi_data

__all__ = [
    "CreatedTask",
    "bulk_tasks_sql",
    "callback_event",
    "seed_completed_task",
    "simulated_body",
    "song_body",
    "unique",
]


def bulk_tasks_sql(rows: int, *, dead_lettered: int = 0) -> str:
    """SQL that adds ``rows`` tasks over 30 days, a sixth in each state, with ids like the
    provider's and ours, one delivery for each ended task, and a dead letter for
    ``dead_lettered`` of them spread evenly: a large registry in seconds (the rows are bare:
    no archived body behind them)."""
    dead = ""
    if dead_lettered:
        dead = f"""
INSERT INTO dead_letters (dlq_topic, dlq_partition, dlq_offset, dlq_timestamp, task_id,
                          headers, value_bytes, value_sha256)
SELECT 'dlq', 0, i, timestamptz '2026-11-01', md5('t' || i), '{{}}', 0, ''
FROM generate_series(1, {int(rows)}, {max(1, rows // dead_lettered)}) AS i;
ANALYZE dead_letters;"""
    return f"""
INSERT INTO tasks (request_id, task_id, origin, state, created_at, updated_at)
SELECT 'req-' || md5('r' || i), CASE WHEN i % 6 = 0 THEN NULL ELSE md5('t' || i) END,
       'tracker',
       (ARRAY['requested', 'submitted', 'completed', 'failed', 'empty', 'expired'])[i % 6 + 1],
       timestamptz '2026-11-01' + (i % 43200) * interval '1 minute',
       timestamptz '2026-11-01'
FROM generate_series(1, {int(rows)}) AS i;
INSERT INTO task_deliveries (task, body_sha256, source, received_at, verified)
SELECT id, encode(sha256(id::text::bytea), 'hex'), 'callback', created_at, true
FROM tasks WHERE state IN ('completed', 'failed', 'empty');{dead}
ANALYZE tasks;
ANALYZE task_deliveries;
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def simulated_body(task_id: str, *, seed: int = 7) -> bytes:
    """A success callback as the provider simulator makes them: one to four instruments,
    often ``Drums``, times as numbers or numeric strings."""
    data = midi_data(seed, task_id, "success")
    payload = {"code": 200, "msg": "success", "data": {"taskId": task_id, **(data or {})}}
    return json.dumps(payload).encode()


def song_body(task_id: str, *, notes: int, instruments: int = 4, seconds: float = 240.0) -> bytes:
    """A success callback with ``notes`` notes over ``seconds``, spread over
    ``instruments`` instruments (the last one ``Drums``): a long, dense song."""
    rng = random.Random(task_id)
    names = ["Acoustic Grand Piano", "Electric Bass (finger)", "String Ensemble 1", "Drums"]
    chosen = [*names[: instruments - 1], "Drums"]
    data = []
    for index, name in enumerate(chosen):
        count = notes // instruments + (1 if index < notes % instruments else 0)
        starts = sorted(rng.uniform(0, seconds - 1) for _ in range(count))
        low, high = (35, 81) if name == "Drums" else (28 + 12 * index, 64 + 12 * index)
        data.append(
            {
                "name": name,
                "notes": [
                    {
                        "pitch": rng.randint(low, high),
                        "start": round(start, 4),
                        "end": round(start + rng.uniform(0.05, 0.8), 4),
                        "velocity": round(rng.uniform(0.2, 1.0), 3),
                    }
                    for start in starts
                ],
            }
        )
    payload = {
        "code": 200,
        "msg": "success",
        "data": {"taskId": task_id, "state": "complete", "instruments": data},
    }
    return json.dumps(payload).encode()


@dataclass(frozen=True)
class CreatedTask:
    """What :func:`seed_completed_task` made: ids, the archived body and the MIDI file
    (``None`` when the body renders none: a failure or no notes)."""

    task_id: str
    request_id: str
    body: bytes
    body_sha256: str
    midi: bytes | None


def callback_event(
    task_id: str, body: bytes, received_at: datetime, request_id: str
) -> CallbackEvent:
    """The event the ingest would have published for ``body`` (signed, verified)."""
    return CallbackEvent(
        task_id=task_id,
        received_at=received_at,
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        code=200,
        msg="success",
        state="complete",
        signature="VERIFIED",
        headers={"Content-Type": "application/json"},
        request_id=request_id,
    )


async def seed_completed_task(
    registry: Registry,
    storage: Storage,
    body: bytes,
    task_id: str,
    received_at: datetime | None = None,
) -> CreatedTask:
    """A task requested, submitted, delivered by callback and ended, as the pipeline would
    leave it (``completed``; ``failed`` or ``empty`` when the body says so)."""
    request_id = unique("req")
    await registry.request(request_id, unique("source"), None, "http://ingest/callback")
    await registry.submitted(request_id, task_id, timedelta(minutes=5))
    event = callback_event(task_id, body, received_at or datetime.now(UTC), request_id)
    await archive_event(storage, event)
    processed = await asyncio.to_thread(process_callback, body)
    midi = processed.midi if isinstance(processed, Processed) else None
    if midi is not None:
        await storage.put(midi_key(task_id), midi)
    await registry.record_delivery(
        task_id,
        body_sha256=event.body_sha256,
        received_at=event.received_at,
        verified=True,
        source="callback",
        request_id=request_id,
    )
    if isinstance(processed, Processed):
        normalized = processed.normalized
        outcome = notes_outcome(normalized.state, normalized.note_count)
        if outcome is not None:
            await registry.transition(task_id, TaskState(outcome), reason="notes event")
    return CreatedTask(task_id, request_id, body, event.body_sha256, midi)
