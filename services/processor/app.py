"""The processor: callback event -> normalized notes -> MIDI file + notes event -> commit."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import structlog
from aiohttp import web
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.common.consumer import DeadLetter, RecordHandler, Transient
from services.common.consumer_app import STORAGE, create_consumer_app
from services.common.errors import PublishError, StorageError
from services.common.events import CallbackEvent, sha256_hex
from services.common.keys import task_key
from services.common.metrics import ConsumerMetrics
from services.common.settings import Settings
from services.common.web import PUBLISHER, SETTINGS

from .normalize import NormalizedCallback, normalize
from .notes_event import MidiLocation, encode_notes_event, notes_record
from .render import render_midi

__all__ = ["create_app", "midi_key", "process_callback"]

log = structlog.get_logger(__name__)


def midi_key(task_id: str) -> str:
    return f"midi/{task_key(task_id)}.mid"


def process_callback(body: bytes) -> tuple[NormalizedCallback, bytes | None]:
    """Parse, normalize and render one callback body (CPU work, run off the event loop)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DeadLetter("invalid_callback", f"callback body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise DeadLetter("invalid_callback", "callback body is not a JSON object")
    normalized = normalize(payload)
    midi = render_midi(normalized) if normalized.state == "complete" else None
    return normalized, midi


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    metrics = ConsumerMetrics("processor", registry or CollectorRegistry())

    def build_handler(app: web.Application) -> RecordHandler:
        async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
            event = CallbackEvent.decode(record.value or b"")
            structlog.contextvars.bind_contextvars(
                task_id=event.task_id, delivery_key=event.delivery_key
            )
            normalized, midi = await asyncio.to_thread(process_callback, event.body)
            location = None
            if midi is not None:
                try:
                    uri = await app[STORAGE].put(midi_key(event.task_id), midi)
                except StorageError as exc:
                    raise Transient(str(exc)) from exc
                location = MidiLocation(uri=uri, sha256=sha256_hex(midi), size_bytes=len(midi))
            value = encode_notes_event(
                notes_record(event, normalized, location, datetime.now(UTC))
            )
            try:
                await app[PUBLISHER].publish(
                    app[SETTINGS].kafka.topics.notes,
                    key=event.task_id.encode(),
                    value=value,
                    timeout=30.0,
                )
            except PublishError as exc:
                raise Transient(str(exc)) from exc
            log.info(
                "callback_processed",
                state=normalized.state,
                notes=normalized.note_count,
                dropped=sum(normalized.dropped.values()),
                replay=event.replay,
            )

        return handle

    return create_consumer_app(
        settings,
        role="processor",
        group_id=settings.processor.group_id,
        metrics=metrics,
        build_handler=build_handler,
        produces=(settings.kafka.topics.notes,),
    )
