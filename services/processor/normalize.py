"""From the provider's raw callback JSON to typed notes: a pure function, every rule counted."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.common.callback import callback_code, callback_msg, callback_state, find_task_id

__all__ = ["Instrument", "NormalizedCallback", "Note", "normalize"]

TaskState = Literal["complete", "failed", "unknown"]

DEFAULT_VELOCITY = 1.0


@dataclass(frozen=True, slots=True)
class Note:
    pitch: int
    start: float
    end: float
    velocity: float
    midi_velocity: int


@dataclass(frozen=True, slots=True)
class Instrument:
    name: str
    notes: tuple[Note, ...]


@dataclass(frozen=True, slots=True)
class NormalizedCallback:
    task_id: str | None
    state: TaskState
    code: int | None
    msg: str | None
    provider_state: str | None
    instruments: tuple[Instrument, ...] = ()
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def note_count(self) -> int:
        return sum(len(instrument.notes) for instrument in self.instruments)


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def normalize(payload: Mapping[str, Any]) -> NormalizedCallback:
    code = callback_code(payload)
    state: TaskState = "unknown" if code is None else ("complete" if code == 200 else "failed")
    dropped: Counter[str] = Counter()
    instruments: list[Instrument] = []
    data = payload.get("data")
    raw_instruments = data.get("instruments") if isinstance(data, Mapping) else None
    if state == "complete" and isinstance(raw_instruments, list):
        for raw in raw_instruments:
            if not isinstance(raw, Mapping):
                dropped["invalid_instrument"] += 1
                continue
            name = raw.get("name") if isinstance(raw.get("name"), str) else "Unknown"
            notes = []
            for raw_note in raw.get("notes") or ():
                if not isinstance(raw_note, Mapping):
                    dropped["invalid_note"] += 1
                    continue
                pitch = raw_note.get("pitch")
                start = _seconds(raw_note.get("start"))
                end = _seconds(raw_note.get("end"))
                if not isinstance(pitch, int) or isinstance(pitch, bool) or not 0 <= pitch <= 127:
                    dropped["invalid_pitch"] += 1
                    continue
                if start is None or end is None:
                    dropped["invalid_time"] += 1
                    continue
                if end <= start:
                    dropped["end_not_after_start"] += 1
                    continue
                velocity = raw_note.get("velocity", DEFAULT_VELOCITY)
                velocity = float(velocity) if isinstance(velocity, int | float) else DEFAULT_VELOCITY
                velocity = min(max(velocity, 0.0), 1.0)
                notes.append(Note(pitch, start, end, velocity, max(1, round(velocity * 127))))
            instruments.append(Instrument(name, tuple(notes)))
    return NormalizedCallback(
        task_id=find_task_id(payload),
        state=state,
        code=code,
        msg=callback_msg(payload),
        provider_state=callback_state(payload),
        instruments=tuple(instruments),
        dropped=dict(dropped),
    )
