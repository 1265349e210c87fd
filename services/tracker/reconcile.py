"""The reconciler: polls ``record-info`` for tasks whose result never came, expires the rest.

Each round leases the tasks that are due (``FOR UPDATE SKIP LOCKED`` in the registry: two
replicas never poll one task at once), asks the provider about each one within the shared
rate limit, and acts on the answer (:func:`~.schedule.poll_action`): a finished task's
answer goes down the pipeline as a ``source=POLL`` callback event, byte for byte, so the
processor and the archiver treat it like any callback; its poll is recorded only once
Kafka has the event, so a crash in between polls it again rather than losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from services.common.errors import ProviderError, ProviderNotFoundError
from services.common.events import CallbackEvent, sha256_hex
from services.common.kafka import Publisher

from .metrics import PollOutcome, TrackerMetrics
from .provider import ProviderClient, RecordInfo
from .registry import Registry, Task, TaskState
from .schedule import next_poll_delay, poll_action

__all__ = ["Reconciler", "poll_event"]

log = structlog.get_logger(__name__)


def poll_event(task: Task, info: RecordInfo, received_at: datetime) -> CallbackEvent:
    """The ``record-info`` answer as a callback event: its exact bytes, ``source=POLL``.

    It is marked VERIFIED: we fetched it ourselves over the provider's API with our key,
    which is stronger evidence than a webhook signature.
    """
    return CallbackEvent(
        task_id=info.task_id,
        received_at=received_at,
        body=info.body,
        body_sha256=sha256_hex(info.body),
        code=_code(info),
        msg=info.error_message,
        state=info.midi_state,
        signature="VERIFIED",
        headers={"Content-Type": "application/json"},
        source="POLL",
        request_id=task.request_id,
    )


def _code(info: RecordInfo) -> int | None:
    if info.outcome == "pending":
        return None
    if info.outcome == "failed":
        return info.error_code if info.error_code not in (None, 200) else 500
    return 200


@dataclass(frozen=True, slots=True)
class PollSettings:
    interval_seconds: int
    max_interval_seconds: int
    retention: timedelta
    lease_seconds: int
    batch: int = 20


class Reconciler:
    """One replica's share of the polling; many run side by side on one registry."""

    def __init__(
        self,
        registry: Registry,
        client: ProviderClient,
        publisher: Publisher,
        topic: str,
        settings: PollSettings,
        *,
        owner: str,
        metrics: TrackerMetrics,
    ) -> None:
        self._registry = registry
        self._client = client
        self._publisher = publisher
        self._topic = topic
        self._settings = settings
        self._owner = owner
        self._metrics = metrics

    async def run_round(self) -> int:
        """Expire what is past retention, then poll every due task once; how many polled."""
        expired = await self._registry.expire_due(self._settings.retention)
        for task in expired:
            log.warning("task_expired", task_id=task.task_id, request_id=task.request_id)
        due = await self._registry.lease_due_polls(
            self._owner, limit=self._settings.batch, lease_seconds=self._settings.lease_seconds
        )
        for task in due:
            try:
                await self._poll(task)
            except Exception as exc:  # Kafka or the registry away: the others still go
                # Its lease lapses and a later round polls it again; nothing was recorded.
                log.error("poll_failed", task_id=task.task_id, error=repr(exc))
        self._metrics.last_round.set_to_current_time()
        return len(due)

    async def _poll(self, task: Task) -> None:
        assert task.task_id is not None  # only submitted tasks are leased
        structlog.contextvars.bind_contextvars(task_id=task.task_id)
        try:
            info = await self._client.record_info(task.task_id)
        except ProviderNotFoundError as exc:
            await self._done(task, "not_found", str(exc), retry=True)
            return
        except ProviderError as exc:
            await self._done(task, "error", str(exc), retry=True)
            return
        finally:
            structlog.contextvars.unbind_contextvars("task_id")
        action = poll_action(info.outcome)
        if action.publish:
            self._metrics.recovered.inc()
            event = poll_event(task, info, datetime.now(UTC))
            await self._publisher.publish(
                self._topic, key=event.task_id.encode(), value=event.encode()
            )
            await self._registry.record_delivery(
                event.task_id,
                body_sha256=event.body_sha256,
                received_at=event.received_at,
                verified=True,
                source="poll",
                request_id=task.request_id,
            )
        if action.terminal is not None:
            await self._registry.transition(
                task.task_id, TaskState(action.terminal), reason="record-info"
            )
        # A completed answer waits for its notes event; if that never comes (the pipeline
        # lost it), the task is polled again at the longest interval.
        await self._done(task, info.outcome, None, retry=action.terminal is None)

    async def _done(
        self, task: Task, outcome: PollOutcome, detail: str | None, *, retry: bool
    ) -> None:
        """Record the poll and when the next one is due (a delay from the database's clock)."""
        settings = self._settings
        next_in = None
        if retry:
            seconds = next_poll_delay(
                task.poll_count, settings.interval_seconds, settings.max_interval_seconds
            )
            if outcome == "completed":
                seconds = float(settings.max_interval_seconds)
            next_in = timedelta(seconds=seconds)
        await self._registry.poll_done(
            task.task_id or "", self._owner, outcome=outcome, detail=detail, next_poll_at=next_in
        )
        self._metrics.polls.labels(outcome).inc()
        log.info("task_polled", task_id=task.task_id, outcome=outcome, next_in=str(next_in))

    async def run_forever(self, every: float, stopping: asyncio.Event) -> None:
        """Rounds every ``every`` seconds until ``stopping``; a failed round is logged and
        the next one tries again (the registry or the provider may be briefly away)."""
        while not stopping.is_set():
            try:
                await self.run_round()
            except Exception as exc:  # a round must never end the loop
                log.error("reconcile_round_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), every)
