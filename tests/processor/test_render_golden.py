"""The renderer's bytes do not change with its implementation.

The digest below was recorded with the packed-int renderer that the array renderer
replaced (``RENDERER_VERSION`` 2): varied callbacks (1 to 30 instruments, random GM names,
so channels shared by several programs, same-pitch overlaps cut and merged, notes shorter
than a tick), a fixed and a changing tempo map, exact and quantized. A change to any byte
or count must come with a new ``RENDERER_VERSION`` and a new digest.
"""

from __future__ import annotations

import hashlib
import random

from services.processor.gm import GM_PROGRAM_NAMES
from services.processor.normalize import Instrument, NormalizedCallback, Note
from services.processor.render import RENDERER_VERSION, render_midi_with_stats
from services.processor.tempo_map import TempoMap, default_map, from_beats

GOLDEN = "e9c3d7199b93f25f857536b9f598a9213964959032ca0197c45875f644e47cee"


def case(seed: int) -> NormalizedCallback:
    rng = random.Random(seed)
    names = [*GM_PROGRAM_NAMES, "Drums", "Unknown"]
    instruments = []
    for _ in range(rng.choice((1, 3, 17, 30))):
        notes = []
        for _ in range(rng.randint(0, 80)):
            start = rng.randint(0, 4000) / rng.choice((192, 1000, 7))
            end = start + rng.choice((0.0001, 0.2, 1.0, rng.random() * 3))
            velocity = rng.random()
            notes.append(
                Note(rng.randint(55, 65), start, end, velocity, max(1, round(velocity * 127)))
            )
        instruments.append(Instrument(rng.choice(names), tuple(notes)))
    return NormalizedCallback("complete", 200, None, None, tuple(instruments), {})


def maps() -> dict[str, TempoMap]:
    beats = [0.3 + i * 0.5 + (0.004 * (i - 40) if i > 40 else 0.0) for i in range(1200)]
    return {
        "120": default_map("not_estimated"),
        "changing": from_beats(beats, downbeat=1, beats_per_bar=3, bpm=100.0),
    }


class TestSameBytes:
    def test_digest_of_varied_files(self) -> None:
        """48 files and their cut and merged counts hash to the recorded digest."""
        results = {}
        for seed in range(12):
            callback = case(seed)
            for name, tempo in maps().items():
                for grid in (None, "1/16t"):
                    data, stats = render_midi_with_stats(callback, tempo, grid=grid)
                    results[(seed, name, grid)] = (
                        hashlib.sha256(data).hexdigest()[:16],
                        stats.notes_cut,
                        stats.notes_merged,
                    )
        record = repr(sorted(results.items(), key=str)).encode()
        assert RENDERER_VERSION == 2
        assert hashlib.sha256(record).hexdigest() == GOLDEN

    def test_delta_times_of_every_length(self) -> None:
        """Gaps that take one to four bytes of delta time (up to 24 h) are written as the
        packed-int renderer wrote them."""
        starts = (0.0, 0.07, 9.0, 1100.0, 86399.9)
        notes = tuple(Note(60 + i, t, t + 0.001, 0.5, 64) for i, t in enumerate(starts))
        callback = NormalizedCallback(
            "complete", 200, None, None, (Instrument("Flute", notes),), {}
        )
        data, _ = render_midi_with_stats(callback)
        assert hashlib.sha256(data).hexdigest() == (
            "6bc672bbada987068af4b5ba3c0d3b2da2115bf55b7b06038ca5abb0986bbe07"
        )
