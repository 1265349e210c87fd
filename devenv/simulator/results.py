"""What a simulated task produces, as pure functions of (seed, task id) and its script.

The provider's pages fix the shapes (FACTS.md): notes on a 1/192 s grid with times as
numbers or numeric strings, velocities 0-1, General MIDI names plus ``"Drums"``, sometimes
no instruments at all, failure bodies with ``data`` null or ``{"taskId"}``. The callback and
``record-info`` are built from one :class:`Fate` and one ``midi_data``, so both carry the
very same notes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Final, Literal

from services.processor.gm import GM_PROGRAM_NAMES

from .config import REALISTIC_DELAY, CallbackPlan, Faults, Outcome, Script, SimConfig

__all__ = [
    "FAILURE_MSG",
    "Fate",
    "callback_payload",
    "decide_fate",
    "midi_data",
    "new_task_id",
]

FAILURE_MSG: Final = "MIDI generation failed"

#: The provider's time grid: every note time is a multiple of 1/192 s.
TICKS_PER_SECOND: Final = 192

_DRUM_PITCHES: Final = (35, 36, 38, 40, 42, 44, 46, 49, 51, 73)


@dataclass(frozen=True, slots=True)
class Fate:
    """Everything decided about one task when it is generated."""

    outcome: Outcome
    callback: CallbackPlan
    shape: Literal["task_id", "data"]
    #: record-info's ``successFlag`` once the task ended: 1, or 2/3 for the two failures.
    success_flag: int
    completion_seconds: float


def new_task_id(seed: int, serial: int, source_task_id: str) -> str:
    """The provider's 32 hex digit task id, the same for the same seed and submissions."""
    return hashlib.sha256(f"{seed}:{serial}:{source_task_id}".encode()).hexdigest()[:32]


def _rng(seed: int, purpose: str, task_id: str) -> random.Random:
    # A string seed is hashed with SHA-512 by ``random``: stable across runs and machines.
    return random.Random(f"{seed}:{purpose}:{task_id}")


def decide_fate(config: SimConfig, faults: Faults, script: Script | None, task_id: str) -> Fate:
    """The task's outcome and delivery: its script's where set, else drawn from the seed."""
    rng = _rng(config.seed, "fate", task_id)
    # Every draw happens whatever the script says, so a script changes only what it sets.
    draws = [rng.random() for _ in range(4)]
    shape: Literal["task_id", "data"] = "task_id" if rng.random() < 0.5 else "data"
    flag = rng.choice((2, 3))
    if config.realistic:
        completion = round(rng.uniform(*REALISTIC_DELAY), 3)
    else:
        completion = config.completion_seconds
    if script is not None:
        return Fate(
            script.outcome,
            script.callback,
            script.shape or shape,
            flag if script.outcome == "failure" else 1,
            completion if script.completion_seconds is None else script.completion_seconds,
        )
    outcome: Outcome = "success"
    if draws[0] < faults.failure:
        outcome = "failure"
    elif draws[0] < faults.failure + faults.empty:
        outcome = "empty"
    plan = CallbackPlan()
    if draws[1] < faults.drop:
        plan = CallbackPlan("drop")
    elif draws[2] < faults.duplicate:
        plan = CallbackPlan("twice")
    elif draws[3] < faults.delay:
        plan = CallbackPlan("delay", faults.delay_seconds)
    return Fate(outcome, plan, shape, flag if outcome == "failure" else 1, completion)


def midi_data(seed: int, task_id: str, outcome: Outcome) -> dict[str, Any] | None:
    """``midiData`` of record-info, which is also the ``data`` of a success callback (less
    its task id): None for a failure; for ``empty``, ``instruments`` empty or missing."""
    if outcome == "failure":
        return None
    rng = _rng(seed, "notes", task_id)
    if outcome == "empty":
        return (
            {"state": "complete", "instruments": []}
            if rng.random() < 0.5
            else {"state": "complete"}
        )
    names = rng.sample(GM_PROGRAM_NAMES, rng.randint(0, 3))
    if rng.random() < 0.7:
        names.insert(rng.randint(0, len(names)), "Drums")
    if not names:
        names = ["Acoustic Grand Piano"]
    instruments = [
        {"name": name, "notes": [] if rng.random() < 0.1 else _notes(rng, name == "Drums")}
        for name in names
    ]
    if not any(instrument["notes"] for instrument in instruments):
        # A success has notes somewhere: a result without any is the ``empty`` outcome.
        first = instruments[0]
        first["notes"] = _notes(rng, first["name"] == "Drums")
    return {"state": "complete", "instruments": instruments}


def _notes(rng: random.Random, drums: bool) -> list[dict[str, Any]]:
    """A few notes on the 1/192 s grid, each time a number or a numeric string at random."""
    starts = sorted(rng.randrange(0, 20 * TICKS_PER_SECOND) for _ in range(rng.randint(1, 24)))
    notes = []
    for start in starts:
        end = start + rng.randint(6, TICKS_PER_SECOND)
        pitch = rng.choice(_DRUM_PITCHES) if drums else rng.randint(28, 96)
        velocity = 1 if rng.random() < 0.5 else round(rng.uniform(0.05, 1.0), 3)
        notes.append(
            {
                "pitch": pitch,
                "start": _time(rng, start),
                "end": _time(rng, end),
                "velocity": velocity,
            }
        )
    return notes


def _time(rng: random.Random, ticks: int) -> float | str:
    seconds = ticks / TICKS_PER_SECOND
    return str(seconds) if rng.random() < 0.5 else seconds


def callback_payload(task_id: str, fate: Fate, data: dict[str, Any] | None) -> dict[str, Any]:
    """The callback body in the fate's shape: task id at top level or inside ``data``."""
    if fate.outcome == "failure":
        if fate.shape == "task_id":
            return {"task_id": task_id, "code": 500, "msg": FAILURE_MSG, "data": None}
        return {"code": 500, "msg": FAILURE_MSG, "data": {"taskId": task_id}}
    assert data is not None, "a task that did not fail has MIDI data"
    if fate.shape == "task_id":
        return {"task_id": task_id, "code": 200, "msg": "success", "data": data}
    return {"code": 200, "msg": "success", "data": {"taskId": task_id, **data}}
