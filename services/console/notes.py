"""A task's notes as the console draws them: its newest archived body, normalized by the
processor's own :func:`~services.processor.normalize.normalize`, so the piano roll shows
exactly what the MIDI file was made from (programs and channels as the renderer lays them).

The bodies a task received are the registry's deliveries; their bytes are the archiver's
(``raw/<task key>/<sha256>.json``). The newest is the one the processor's file is made of:
the latest ``received_at``, then the greater SHA-256 (:func:`~services.processor.app.midi_version`).
A delivery whose body is not archived yet is passed over for the next newest.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from services.archiver.archive import raw_key
from services.common.errors import ObjectNotFoundError
from services.common.storage import Storage
from services.processor.normalize import normalize
from services.processor.render import layout_tracks
from services.processor.tempo_map import TempoMap, estimate_map
from services.tracker.registry import Registry, Task

__all__ = ["ArchivedBody", "NotesCache", "newest_body", "notes_document", "tempo_document"]


@dataclass(frozen=True, slots=True)
class ArchivedBody:
    task_id: str
    body_sha256: str
    body: bytes


class NotesCache:
    """Serialized notes documents by archived body, least recently used dropped first once
    their bytes pass ``budget``.

    A body's bytes never change under its SHA-256, and its document is a pure function of
    them (normalize, the tempo estimate): made once, it serves every later view. The first
    view of a 100 000-note song costs a few hundred ms of CPU, mostly the estimate.
    (cachetools' ``LRUCache(getsizeof=len)`` does the same; not worth a dependency.)
    """

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._size = 0
        self._documents: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()  # documents are made in worker threads

    def get(self, archived: ArchivedBody) -> bytes | None:
        with self._lock:
            document = self._documents.get(_key(archived))
            if document is not None:
                self._documents.move_to_end(_key(archived))
            return document

    def put(self, archived: ArchivedBody, document: bytes) -> None:
        if len(document) > self._budget:
            return
        with self._lock:
            previous = self._documents.pop(_key(archived), None)
            self._size += len(document) - (0 if previous is None else len(previous))
            self._documents[_key(archived)] = document
            while self._size > self._budget:
                _, dropped = self._documents.popitem(last=False)
                self._size -= len(dropped)


def _key(archived: ArchivedBody) -> tuple[str, str]:
    return archived.task_id, archived.body_sha256


async def newest_body(registry: Registry, storage: Storage, task: Task) -> ArchivedBody | None:
    """The task's newest archived body, or ``None`` when none of its bodies is archived."""
    if task.task_id is None:
        return None
    deliveries = await registry.deliveries(task.pk)
    for delivery in sorted(deliveries, key=lambda d: (d.received_at, d.body_sha256), reverse=True):
        try:
            body = await storage.get(raw_key(task.task_id, delivery.body_sha256))
        except ObjectNotFoundError:
            continue
        return ArchivedBody(task.task_id, delivery.body_sha256, body)
    return None


def notes_document(archived: ArchivedBody) -> dict[str, Any] | None:
    """The notes document of the API, ``None`` when the body is not a JSON object (the
    ingest accepts no other, so only a damaged archive holds one). CPU work: run it off
    the event loop.

    Notes are ``[pitch, start_seconds, end_seconds, velocity]`` in the provider's order,
    velocity 0..1 as sent (1.0 when absent); ``state`` is the normalizer's (``complete``,
    ``failed``, ``unknown``), ``dropped_notes`` its counts by reason.
    """
    try:
        payload = json.loads(archived.body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    normalized = normalize(payload)
    instruments = []
    duration = 0.0
    for instrument, layout in zip(
        normalized.instruments, layout_tracks(normalized.instruments), strict=True
    ):
        notes = [[note.pitch, note.start, note.end, note.velocity] for note in instrument.notes]
        duration = max([duration, *(note.end for note in instrument.notes)])
        instruments.append(
            {
                "name": instrument.name,
                "program": layout.program,
                "channel": layout.channel,
                "is_drum": layout.is_drum,
                "note_count": len(notes),
                "notes": notes,
            }
        )
    tempo = estimate_map(normalized.instruments) if normalized.state == "complete" else None
    return {
        "task_id": archived.task_id,
        "body_sha256": archived.body_sha256,
        "state": normalized.state,
        "duration_seconds": duration,
        "instruments": instruments,
        "dropped_notes": dict(normalized.dropped),
        "tempo": None if tempo is None else tempo_document(tempo, duration),
    }


def tempo_document(tempo: TempoMap, duration: float) -> dict[str, Any]:
    """The file's tempo map as the ruler draws it: its main tempo, and where each bar
    starts (seconds, beats in it) up to the end of the notes; no bars without an
    estimate, since a default 120 BPM grid would draw bar lines that mean nothing."""
    bars: list[list[float]] = []
    if tempo.estimated:
        signatures = tempo.time_signatures
        for tick in tempo.bar_ticks(tempo.to_ticks(duration)):
            signature = next(s for s in reversed(signatures) if s.tick <= tick)
            bars.append([tempo.to_seconds(tick), signature.numerator])
    return {
        "estimated": tempo.estimated,
        "reason": tempo.reason,
        "bpm": tempo.bpm,
        "bars": bars,
    }
