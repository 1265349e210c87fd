"""Publishing callback events with a bound: on time, or a clear 503 the sender retries.

At most ``max_in_flight`` events wait for Kafka's acknowledgement at once; past that the
request is refused at once (``overloaded``) instead of queueing in memory. A publish that
Kafka has not acknowledged within ``publish_timeout_seconds`` is answered with 503 well
before the sender's own 15 s timeout. The encoded record and the producer's copies of it
count against the ingest's buffer budget (``budget.py``) for as long as they live.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiokafka.structs import RecordMetadata

from services.common.errors import NotStartedError, PublishError, PublishTimeoutError
from services.common.events import CallbackEvent
from services.common.kafka import Publisher
from services.common.settings import PRODUCER_COPIES, IngestSettings
from services.common.web import PUBLISHER, SETTINGS, publisher_ctx

from .budget import Hold
from .errors import Refusal
from .metrics import INGEST_METRICS, IngestMetrics

__all__ = ["CALLBACK_PUBLISHER", "CallbackPublisher", "setup_publishing"]


class CallbackPublisher:
    """Sends one :class:`CallbackEvent` per accepted callback, keyed by task id."""

    def __init__(
        self,
        publisher: Publisher,
        topic: str,
        settings: IngestSettings,
        metrics: IngestMetrics,
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._timeout = settings.publish_timeout_seconds
        self._max_in_flight = settings.max_in_flight
        self._retry_after = {"Retry-After": str(settings.retry_after_seconds)}
        self._metrics = metrics
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _reserve(self) -> None:
        """Take one in-flight slot, or refuse with 503 ``overloaded``; pair with :meth:`_free`."""
        if self._in_flight >= self._max_in_flight:
            raise Refusal(
                503,
                "overloaded",
                f"{self._max_in_flight} callbacks are already waiting for Kafka; retry later",
                outcome="overloaded",
                headers=self._retry_after,
            )
        self._in_flight += 1
        self._metrics.publishes_in_flight.set(self._in_flight)

    def _free(self) -> None:
        self._in_flight -= 1
        self._metrics.publishes_in_flight.set(self._in_flight)

    async def publish_in_slot(
        self, event: CallbackEvent, *, deadline: float, hold: Hold
    ) -> RecordMetadata:
        """:meth:`publish` holding one in-flight slot: 503 ``overloaded`` when none is free."""
        self._reserve()
        try:
            return await self.publish(event, deadline=deadline, hold=hold)
        finally:
            self._free()

    async def publish(
        self, event: CallbackEvent, *, hold: Hold, deadline: float | None = None
    ) -> RecordMetadata:
        """Return once Kafka acknowledged the event; 503 ``unavailable`` otherwise.

        ``deadline`` (a ``time.monotonic()`` value) is when the request's whole budget ends;
        without one the publish gets ``publish_timeout_seconds`` of its own. The body and
        the encoded record count in ``hold`` (the request's, given back when it ends); the
        producer's copies count until the producer is done with them. Past the budget: 503
        ``overloaded``.
        """
        value = event.encode()
        queued = PRODUCER_COPIES * len(value)
        hold.cover(len(event.body) + len(value) + queued)
        released = hold.hand_over(queued)
        started = time.perf_counter()
        timeout = self._timeout if deadline is None else deadline - time.monotonic()
        try:
            if timeout <= 0:
                released()
                raise PublishTimeoutError("no time left in the request's budget to publish")
            return await self._publisher.publish(
                self._topic,
                key=event.task_id.encode("ascii"),
                value=value,
                timeout=timeout,
                released=released,
            )
        except (PublishError, NotStartedError) as exc:
            raise Refusal(
                503,
                "unavailable",
                "the callback could not be stored durably in time; retry later",
                outcome="unavailable",
                headers=self._retry_after,
            ) from exc
        finally:
            self._metrics.publish_duration.observe(time.perf_counter() - started)


CALLBACK_PUBLISHER = web.AppKey("callback_publisher", CallbackPublisher)


def setup_publishing(app: web.Application) -> None:
    """Start the Kafka producer with the app, and bound what waits on it."""
    settings = app[SETTINGS]
    app.cleanup_ctx.append(
        publisher_ctx(
            "ingest",
            [settings.kafka.topics.callbacks],
            # The producer flushes within the shutdown grace; what it cannot flush was
            # never acknowledged (its sender got a 503 and retries).
            flush_timeout=settings.ingest.shutdown_grace_seconds,
        )
    )
    app.cleanup_ctx.append(_callback_publisher)


async def _callback_publisher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[CALLBACK_PUBLISHER] = CallbackPublisher(
        app[PUBLISHER],
        settings.kafka.topics.callbacks,
        settings.ingest,
        app[INGEST_METRICS],
    )
    yield
