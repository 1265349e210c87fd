"""The processor's Prometheus metrics: the consumer's own, plus notes, drops, latency, bytes.

Names are the dashboards' contract (see the briefing's metric list); every label value
comes from a closed set (drop reasons, task states), never from a task id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.callback import CALLBACK_KINDS
from services.common.metrics import DURATION_BUCKETS, ConsumerMetrics

from .normalize import DROP_REASONS, NormalizedCallback

__all__ = ["LATENCY_BUCKETS", "PREVIEW_OUTCOMES", "TASK_STATES", "ProcessorMetrics"]

#: From the request to the file: normally well under a second, minutes when lagging.
LATENCY_BUCKETS = (*DURATION_BUCKETS, 120.0, 300.0, 600.0, 1800.0, 3600.0)
TASK_STATES = ("complete", "failed", "unknown")
PREVIEW_OUTCOMES = ("written", "kept", "superseded", "failed")


class ProcessorMetrics:
    """Everything the processor reports; takes its registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumer = ConsumerMetrics("processor", registry)
        self.notes = Counter(
            "processor_notes_total",
            "Notes kept by normalization and written to MIDI files and notes events.",
            registry=registry,
        )
        self.notes_dropped = Counter(
            "processor_notes_dropped_total",
            "Notes (or malformed structures) left out by normalization, by reason.",
            ["reason"],
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            "processor_end_to_end_latency_seconds",
            "From the ingest receiving the callback to its MIDI file being written "
            "(replayed callbacks are not observed).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.midi_written_bytes = Counter(
            "processor_midi_written_bytes_total",
            "Bytes of MIDI files written to storage.",
            registry=registry,
        )
        self.tasks = Counter(
            "processor_tasks_total",
            "Callbacks processed, by task state (complete, failed, unknown).",
            ["state"],
            registry=registry,
        )
        self.skipped = Counter(
            "processor_callbacks_skipped_total",
            "Callbacks of other operations on the same URL (or of no recognisable kind), "
            "skipped: no MIDI file, no notes event.",
            ["kind"],
            registry=registry,
        )
        self.previews = Counter(
            "processor_previews_total",
            "Audio previews by outcome: written; kept (a newer repeat of the same body had "
            "stored the same bytes); superseded (a newer body's is kept); failed (FluidSynth "
            "or storage: the record completed without one).",
            ["outcome"],
            registry=registry,
        )
        self.preview_seconds = Histogram(
            "processor_preview_seconds",
            "Time to render and store one audio preview, failures included.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        for outcome in PREVIEW_OUTCOMES:
            self.previews.labels(outcome)
        for kind in CALLBACK_KINDS:
            if kind != "midi":
                self.skipped.labels(kind)
        for reason in DROP_REASONS:
            self.notes_dropped.labels(reason)
        for state in TASK_STATES:
            self.tasks.labels(state)

    def observe_callback(self, normalized: NormalizedCallback) -> None:
        """Count one processed callback: its state, kept notes and drops by reason."""
        self.tasks.labels(normalized.state).inc()
        self.notes.inc(normalized.note_count)
        for reason, count in normalized.dropped.items():
            self.notes_dropped.labels(reason).inc(count)
