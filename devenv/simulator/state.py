"""The simulated provider's memory: its tasks, scripts, faults, rate window and request log.

This is the provider's state, not ours: it lives in the simulator process like the real
provider's lives in its database, and the control API reads it to say what really happened.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import Faults, Script, SimConfig
from .results import FAILURE_MSG, Fate, decide_fate, midi_data, new_task_id

__all__ = ["Attempt", "RateWindow", "SimState", "SimTask", "busiest_window"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One callback attempt: ``status`` when the receiver answered, else ``error``."""

    delivery: int
    attempt: int
    time: float
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> dict[str, Any]:
        return {
            "delivery": self.delivery,
            "attempt": self.attempt,
            "time": self.time,
            "status": self.status,
            "error": self.error,
        }


@dataclass(slots=True)
class SimTask:
    """One MIDI task as the provider knows it."""

    task_id: str
    source_task_id: str
    audio_id: str | None
    callback_url: str
    created_ms: int
    fate: Fate
    midi_data: dict[str, Any] | None
    completed_ms: int | None = None
    #: The exact bytes its callbacks carry, once the task has ended.
    callback_body: bytes | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return any(attempt.ok for attempt in self.attempts)

    def record_info(self) -> dict[str, Any]:
        """``data`` of the record-info answer (FACTS.md), pending until the task ends."""
        done = self.completed_ms is not None
        failed = done and self.fate.outcome == "failure"
        return {
            "taskId": self.task_id,
            "recordTaskId": -1,
            "audioId": self.audio_id or "",
            "callbackUrl": self.callback_url,
            "completeTime": self.completed_ms,
            "createTime": self.created_ms,
            "midiData": self.midi_data if done else None,
            "successFlag": self.fate.success_flag if done else 0,
            "errorCode": 500 if failed else None,
            "errorMessage": FAILURE_MSG if failed else None,
        }

    def describe(self) -> dict[str, Any]:
        """The task's true fate and every callback attempt, for the control API."""
        return {
            "taskId": self.task_id,
            "sourceTaskId": self.source_task_id,
            "audioId": self.audio_id,
            "callBackUrl": self.callback_url,
            "outcome": self.fate.outcome,
            "successFlag": self.fate.success_flag,
            "shape": self.fate.shape,
            "callback": str(self.fate.callback),
            "completionSeconds": self.fate.completion_seconds,
            "createTime": self.created_ms,
            "completeTime": self.completed_ms,
            "state": "pending" if self.completed_ms is None else "complete",
            "delivered": self.delivered,
            "attempts": [attempt.describe() for attempt in self.attempts],
        }


def busiest_window(times: list[float], window: float) -> int:
    """The most requests sent in any ``window`` seconds: what a client held against a
    limit of N per window (refused requests count: the client sent them)."""
    ordered = sorted(times)
    busiest, first = 0, 0
    for last, time in enumerate(ordered):
        while ordered[first] <= time - window:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


class RateWindow:
    """A sliding window over admitted requests: at most ``limit`` in any ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._admitted: deque[float] = deque()

    def admit(self) -> bool:
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - self._window:
            self._admitted.popleft()
        if len(self._admitted) >= self._limit:
            return False
        self._admitted.append(now)
        return True


#: The request log keeps the latest this many API requests (a long soak sends more).
REQUEST_LOG_LIMIT = 200_000


class SimState:
    """Tasks by id, scripts by source task id, the current faults and the request log."""

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.faults: Faults = config.faults
        self.scripts: dict[str, Script] = dict(config.scripts)
        self.tasks: dict[str, SimTask] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.rate = RateWindow(config.rate_limit_requests, config.rate_limit_window_seconds, clock)
        # One stream of draws for the API faults, in request order.
        self._api_rng = random.Random(f"{config.seed}:api")

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def generate(self, source_task_id: str, callback_url: str, audio_id: str | None) -> SimTask:
        """A new task for ``source_task_id``; the provider has no idempotency key, so every
        call makes one."""
        task_id = new_task_id(self.config.seed, len(self.tasks), source_task_id)
        fate = decide_fate(self.config, self.faults, self.scripts.get(source_task_id), task_id)
        task = SimTask(
            task_id=task_id,
            source_task_id=source_task_id,
            audio_id=audio_id,
            callback_url=callback_url,
            created_ms=self.now_ms(),
            fate=fate,
            midi_data=midi_data(self.config.seed, task_id, fate.outcome),
        )
        self.tasks[task_id] = task
        return task

    def draw_api_fault(self) -> tuple[int | None, bool]:
        """The injected answer code for the next API request (None: serve it) and whether
        it is answered slowly."""
        fault_draw, slow_draw = self._api_rng.random(), self._api_rng.random()
        code = None
        bound = 0.0
        for candidate, ratio in sorted(self.faults.api.items()):
            bound += ratio
            if fault_draw < bound:
                code = candidate
                break
        return code, slow_draw < self.faults.slow
