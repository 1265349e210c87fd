"""Synthetic callbacks shaped like the provider's: 1/192 s grid, mixed number/string times."""

from __future__ import annotations

import json
import random

INSTRUMENTS = (
    "Drums", "Electric Bass (finger)", "Acoustic Grand Piano", "Electric Guitar (clean)",
    "String Ensemble 1", "Choir Aahs", "Flute", "Synth Bass 1",
)  # fmt: skip


def synthetic_callback(notes: int, *, seed: int = 0, instruments: int = 8) -> bytes:
    """A success callback (shape A) with ``notes`` notes spread over ``instruments``."""
    rng = random.Random(seed)
    per = [notes // instruments + (1 if i < notes % instruments else 0) for i in range(instruments)]
    out = []
    for index, count in enumerate(per):
        step = 0
        raw_notes = []
        for _ in range(count):
            step += rng.randint(0, 48)
            start = step / 192
            end = (step + rng.randint(1, 96)) / 192
            raw_notes.append(
                {
                    "pitch": rng.randint(21, 108),
                    "start": start if rng.random() < 0.5 else repr(start),
                    "end": repr(end) if rng.random() < 0.5 else end,
                    "velocity": rng.choice((1, round(rng.random(), 6))),
                }
            )
        out.append({"name": INSTRUMENTS[index % len(INSTRUMENTS)], "notes": raw_notes})
    payload = {
        "task_id": f"bench-{notes}-{seed}",
        "code": 200,
        "msg": "success",
        "data": {"state": "complete", "instruments": out},
    }
    return json.dumps(payload).encode()
