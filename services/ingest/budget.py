"""One bound on the bytes of callbacks the ingest holds at once, so no burst outgrows the pod.

Bodies being read, bodies being handled and events waiting for Kafka are counted against
``INGEST_MAX_BUFFERED_BYTES``. A request is counted before its body is read, for every
copy it will make (``COPIES_WHILE_PUBLISHED`` times its ``Content-Length``: a request
admitted can always be published, and readers cannot starve publishers; a body without
``Content-Length`` is counted chunk by chunk, the rest when it is published); past the
budget it is answered 503 with ``Retry-After`` instead of being read. The producer's copies
of an event are counted until Kafka is done with them, which can be after the request was
answered (a publish that timed out stays queued in the producer).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .errors import Refusal
from .metrics import IngestMetrics

__all__ = ["BUFFER_BUDGET", "BufferBudget", "Hold"]


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

    def cover(self, size: int) -> None:
        """Hold at least ``size`` bytes in all (503 when the rest does not fit)."""
        if size > self.size:
            self.add(size - self.size)

    def hand_over(self, size: int) -> Callable[[], None]:
        """Stop counting ``size`` held bytes as this request's: they are counted until the
        returned function is called (once the producer is done with its copies)."""
        self.size -= size
        return lambda: self._budget.give_back(size)

    def release(self) -> None:
        self._budget.give_back(self.size)
        self.size = 0


BUFFER_BUDGET = web.AppKey("buffer_budget", BufferBudget)
