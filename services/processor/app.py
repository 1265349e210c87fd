"""The processor: callback event -> normalized notes -> MIDI file + notes event -> commit.

Thin wiring around the pure core (:mod:`.normalize`, :mod:`.render`, :mod:`.notes_event`).
The order of effects is what makes at-least-once delivery safe: the MIDI file is written
(atomically, same bytes for the same body), then the notes event is published, and only
when the handler returns does the :class:`~services.common.consumer.ConsumerLoop` commit
the offset. A redelivered record rewrites the same file and republishes the same event.
A callback another Suno operation sent to the same URL (:func:`callback_kind`) is skipped:
no file, no notes event, one log line and a count (the archiver keeps its bytes).
With previews on (:mod:`.preview`), the MIDI file's audio rendering is stored beside it
before the event is published; a preview that fails or runs out of time is logged and
counted, and the record completes without it.

The CPU work runs in a worker thread (``asyncio.to_thread``): measured on a 100 000-note
callback it keeps event-loop stalls under ~0.1 s (Kafka heartbeats every 3 s), while a
process pool costs twice the time in pickling the body and the result (see
``docs/processing.md``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.common.callback import CallbackKind, callback_kind
from services.common.consumer import EventHandler
from services.common.consumer_app import STORAGE, create_consumer_app
from services.common.errors import DeadLetter, ObjectNotFoundError, ProgramError, StorageError
from services.common.events import CallbackEvent, sha256_hex
from services.common.kafka import Publisher
from services.common.keys import task_key
from services.common.settings import Settings
from services.common.storage import Storage
from services.common.web import PUBLISHER

from .fast_decode import decode_well_formed
from .metrics import ProcessorMetrics
from .normalize import NormalizedCallback, normalize
from .notes_event import MidiLocation, PreviewLocation, encode_notes_event, notes_record
from .preview import EXTENSION, MEDIA_TYPE, PreviewConfig, preview_config, render_preview
from .render import RenderStats, render_midi, render_midi_with_stats
from .tempo_map import TempoMap, estimate_map

__all__ = [
    "Processed",
    "Processor",
    "Skipped",
    "create_app",
    "midi_key",
    "midi_version",
    "parse_callback",
    "preview_key",
    "process_callback",
    "quantized_key",
]

log = structlog.get_logger(__name__)

#: How long to wait for Kafka to acknowledge the notes event before retrying the record.
PUBLISH_TIMEOUT_SECONDS = 30.0


def midi_key(task_id: str) -> str:
    """Storage key of a task's MIDI file: ``midi/<percent-encoded task id>.mid``."""
    return f"midi/{task_key(task_id)}.mid"


def preview_key(task_id: str) -> str:
    """Storage key of a task's audio preview: ``previews/<percent-encoded task id>.ogg``."""
    return f"previews/{task_key(task_id)}.{EXTENSION}"


def midi_version(event: CallbackEvent) -> str:
    """Orders the bodies of one task: the later ``received_at`` (the ingest's clock, kept by
    replays) is newer; at the same instant the greater body SHA-256 wins, arbitrary but the
    same everywhere. Fixed-width text, so string order is this order."""
    received = event.received_at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"{received} {event.body_sha256}"


def quantized_key(task_id: str) -> str:
    """Storage key of a task's quantized variant, beside its exact file (``.`` is encoded
    in a task key, so no task's key can end in ``.quantized``)."""
    return f"midi/{task_key(task_id)}.quantized.mid"


@dataclass(frozen=True, slots=True)
class Processed:
    """The pure result of one callback body."""

    normalized: NormalizedCallback
    #: The MIDI file, ``None`` unless the task is complete.
    midi: bytes | None
    render: RenderStats
    #: The file's tempo map, ``None`` unless the task is complete.
    tempo: TempoMap | None = None
    #: The quantized variant, when asked for and the task is complete.
    quantized: bytes | None = None
    #: Its grid, a note value (:func:`~.render.grid_step`).
    grid: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A callback that is not a MIDI callback: it makes no file and no notes event."""

    kind: CallbackKind


def parse_callback(body: bytes) -> NormalizedCallback | Skipped:
    """The normalized content of a MIDI callback body, or why it makes nothing (another
    operation's callback). A completed task's well-formed body takes the typed fast path
    (:func:`~.fast_decode.decode_well_formed`); any other, the general one.

    Raises :class:`DeadLetter` when the body is not a JSON object.
    """
    fast = decode_well_formed(body)
    if fast is not None:
        return fast
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, and
        # int()'s digit limit are all ValueErrors: no retry can make the body JSON.
        raise DeadLetter("invalid_callback", f"callback body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise DeadLetter(
            "invalid_callback", f"callback body is a JSON {type(payload).__name__}, not an object"
        )
    kind = callback_kind(payload)
    if kind != "midi":
        return Skipped(kind)
    return normalize(payload)


def process_callback(body: bytes, *, grid: str | None = None) -> Processed | Skipped:
    """Parse, classify, normalize, find the tempo of and render one callback body (CPU
    work, run off the event loop); with ``grid``, the quantized variant too.

    Raises :class:`DeadLetter` when the body is not a JSON object, or holds more than a MIDI
    file can (over 65 534 instruments): no retry can fix either.
    """
    normalized = parse_callback(body)
    if isinstance(normalized, Skipped):
        return normalized
    if normalized.state != "complete":
        return Processed(normalized, None, RenderStats())
    tempo = estimate_map(normalized.instruments)
    try:
        midi, stats = render_midi_with_stats(normalized, tempo)
        quantized = None if grid is None else render_midi(normalized, tempo, grid=grid)
    except ValueError as exc:
        raise DeadLetter("unrenderable", str(exc)) from exc
    return Processed(normalized, midi, stats, tempo, quantized, grid if quantized else None)


class Processor:
    """One callback event to its MIDI file and its notes event.

    Decoding, the task-id and signature checks, the log context, retries and dead letters
    are the consumer wrapper's (:mod:`services.common.consumer`): a storage or Kafka failure
    raised here is retried there, a :class:`DeadLetter` is dead-lettered there.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        publisher: Publisher,
        metrics: ProcessorMetrics,
        previews: PreviewConfig | None = None,
    ) -> None:
        self._notes_topic = settings.kafka.topics.notes
        self._grid = settings.processor.quantize_grid if settings.processor.quantized_file else None
        self._storage = storage
        self._publisher = publisher
        self._metrics = metrics
        self._previews = previews

    async def handle(self, event: CallbackEvent) -> None:
        processed = await asyncio.to_thread(process_callback, event.body, grid=self._grid)
        if isinstance(processed, Skipped):
            self._metrics.skipped.labels(processed.kind).inc()
            log.info("callback_skipped", kind=processed.kind, replay=event.replay)
            return
        location, written_at = await self._write_midi(event, processed.midi)
        quantized = None
        if location is not None and processed.quantized is not None:
            quantized, _ = await self._write(
                event, quantized_key(event.task_id), processed.quantized
            )
        preview = await self._write_preview(event, processed.midi, location)
        value = await asyncio.to_thread(
            _notes_event, event, processed, location, quantized, preview
        )
        await self._publisher.publish(
            self._notes_topic,
            key=event.task_id.encode(),
            value=value,
            timeout=PUBLISH_TIMEOUT_SECONDS,
        )
        # Counted once the record is done, so a retried record is not counted twice.
        self._metrics.observe_callback(processed.normalized)
        if written_at is not None and not event.replay:
            self._metrics.end_to_end_latency.observe(
                max(0.0, (written_at - event.received_at).total_seconds())
            )
        _log_processed(event, processed, preview)

    async def _write_midi(
        self, event: CallbackEvent, midi: bytes | None
    ) -> tuple[MidiLocation | None, datetime | None]:
        """Where the file went and when, or nothing when the task has no file, or when the
        task's file is already a newer callback's of other content (:func:`midi_version`)."""
        if midi is None:
            return None, None
        location, written = await self._write(event, midi_key(event.task_id), midi)
        if location is None:
            log.info("midi_superseded", received_at=event.received_at.isoformat())
            return None, None
        if not written:
            return location, None
        self._metrics.midi_written_bytes.inc(len(midi))
        return location, datetime.now(UTC)

    async def _write(
        self, event: CallbackEvent, key: str, data: bytes
    ) -> tuple[MidiLocation | None, bool]:
        """Write ``data`` unless a newer body's is there; where it is and whether it was
        written now.

        Two bodies of one task can reach the processor out of order (a replay, a record
        taken over after a rebalance): the older one never replaces the file. The same
        body received twice (a repeat the dedupe did not catch) rendered the same bytes:
        its event points at them like its twin's.
        """
        uri = await self._storage.put_versioned(key, data, midi_version(event))
        location = MidiLocation(
            uri=uri or self._storage.uri(key), sha256=sha256_hex(data), size_bytes=len(data)
        )
        if uri is not None:
            return location, True
        return (location if await self._holds(key, data) else None), False

    async def _write_preview(
        self, event: CallbackEvent, midi: bytes | None, location: MidiLocation | None
    ) -> PreviewLocation | None:
        """The MIDI file's preview, stored beside it under the same version; ``None`` when
        previews are off, the task has no file (or a newer body's), or the preview failed:
        a failure is logged and counted, never retried, so the record still completes."""
        if self._previews is None or midi is None or location is None:
            return None
        metrics = self._metrics
        try:
            with metrics.preview_seconds.time():
                # FluidSynth's timeout bounds the thread: past it the child is killed.
                preview = await asyncio.to_thread(render_preview, midi, self._previews)
            # The same MIDI bytes make the same preview bytes: a repeat of the body with a
            # later version finds them there, and its event points at them, as for the file.
            stored, written = await self._write(event, preview_key(event.task_id), preview.audio)
        except (ProgramError, StorageError) as exc:
            metrics.previews.labels("failed").inc()
            log.warning("preview_failed", error=str(exc))
            return None
        if stored is None:
            metrics.previews.labels("superseded").inc()
            return None
        metrics.previews.labels("written" if written else "kept").inc()
        return PreviewLocation(
            uri=stored.uri,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            media_type=MEDIA_TYPE,
            duration_seconds=preview.duration_seconds,
        )

    async def _holds(self, key: str, midi: bytes) -> bool:
        """Whether the stored file is byte for byte ``midi``."""
        try:
            return await self._storage.get(key) == midi
        except ObjectNotFoundError:
            return False


def _notes_event(
    event: CallbackEvent,
    processed: Processed,
    location: MidiLocation | None,
    quantized: MidiLocation | None,
    preview: PreviewLocation | None,
) -> bytes:
    record = notes_record(
        event,
        processed.normalized,
        location,
        datetime.now(UTC),
        rendered=processed.midi,
        tempo=processed.tempo,
        quantized=None
        if quantized is None or processed.grid is None
        else (quantized, processed.grid),
        preview=preview,
    )
    return encode_notes_event(record)


def _log_processed(
    event: CallbackEvent, processed: Processed, preview: PreviewLocation | None
) -> None:
    normalized, midi = processed.normalized, processed.midi
    log.info(
        "callback_processed",
        state=normalized.state,
        code=normalized.code,
        notes=normalized.note_count,
        dropped=normalized.dropped_count,
        dropped_by_reason=dict(normalized.dropped),
        notes_cut=processed.render.notes_cut,
        notes_merged=processed.render.notes_merged,
        midi_bytes=None if midi is None else len(midi),
        preview_bytes=None if preview is None else preview.size_bytes,
        replay=event.replay,
    )


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The processor's app; :class:`~services.common.errors.ConfigError` when previews are
    required (``PROCESSOR_PREVIEWS=on``) but FluidSynth or the SoundFont is missing."""
    metrics = ProcessorMetrics(registry or CollectorRegistry())
    previews, reason = preview_config(settings.processor)
    log.info("previews", enabled=previews is not None, reason=reason)

    def build_handler(app: web.Application) -> EventHandler:
        processor = Processor(
            settings=settings,
            storage=app[STORAGE],
            publisher=app[PUBLISHER],
            metrics=metrics,
            previews=previews,
        )
        return processor.handle

    return create_consumer_app(
        settings,
        role="processor",
        group_id=settings.processor.group_id,
        metrics=metrics.consumer,
        build_handler=build_handler,
        # Nothing is lost: the archiver keeps the raw body, and a replay brings it back.
        unknown_schema="dead_letter",
        produces=(settings.kafka.topics.notes,),
        require_verified=settings.processor.require_verified,
    )
