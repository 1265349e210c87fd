"""One bound on the bytes of callbacks the ingest holds at once, so no burst outgrows the pod.

Bodies being read, bodies being handled and events waiting for Kafka are counted against
``INGEST_MAX_BUFFERED_BYTES``. A request is counted before its body is read (by its
``Content-Length``, or chunk by chunk when it has none); past the budget it is answered
503 with ``Retry-After`` instead of being read. The producer's copies of an event are
counted until Kafka is done with it, which can be after its request was answered (a
publish that timed out stays queued in the producer).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .errors import Refusal
from .metrics import IngestMetrics

__all__ = ["BUFFER_BUDGET", "BufferBudget", "Hold"]

#: The producer's copies of a queued record: its batch and the batch compressed.
PRODUCER_COPIES: Final = 2


class BufferBudget:
    """The bytes held against the budget, and the 503 that answers a request past it."""

    def __init__(self, limit: int, metrics: IngestMetrics, retry_after: int) -> None:
        self.limit = limit
        self.held = 0
        self._metrics = metrics
        self._retry_after = {"Retry-After": str(retry_after)}

    def take(self, size: int) -> None:
        """Count ``size`` more bytes, or refuse with 503 ``overloaded`` (nothing counted)."""
        if self.held + size > self.limit:
            raise Refusal(
                503,
                "overloaded",
                f"the ingest already holds {self.held} bytes of callbacks (limit "
                f"{self.limit}); retry later",
                outcome="overloaded",
                headers={**self._retry_after, "Connection": "close"},
            )
        self.held += size
        self._metrics.buffered_bytes.set(self.held)

    def give_back(self, size: int) -> None:
        self.held -= size
        self._metrics.buffered_bytes.set(self.held)


class Hold:
    """What one request holds against the budget; all given back when the request ends."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BufferBudget) -> None:
        self._budget = budget
        self.size = 0

    def add(self, size: int) -> None:
        self._budget.take(size)
        self.size += size

    def release(self) -> None:
        self._budget.give_back(self.size)
        self.size = 0


BUFFER_BUDGET = web.AppKey("buffer_budget", BufferBudget)
