"""The beat estimator's cost per song against the renderer's on the same notes.

The estimator runs inside the processor for every completed callback, beside
``render_midi``; its budget is a fraction of the rendering it adds a tempo map to. For
1 000, 10 000 and 100 000 notes it prints the median CPU time of ``estimate_beats`` and of
``render_midi`` on the same normalized notes, and their ratio, for two kinds of input:

* ``song``: a generated band song (``devenv.songs``, 128 BPM, drums, bass, chords,
  melody; its length grows with the notes: about 25 notes a second);
* ``random``: the processor bench's synthetic callbacks (random onsets, 8 instruments),
  where the estimator finds no steady beat and says so.

Run: ``.venv/bin/python -m bench.processor.beats`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from devenv.songs import SongSpec, make_song
from services.processor.beats import estimate_beats
from services.processor.normalize import NormalizedCallback, normalize
from services.processor.render import render_midi

from .callbacks import synthetic_callback

SIZES = (1_000, 10_000, 100_000)


def song_of(notes: int) -> NormalizedCallback:
    """A band song cut to its first ``notes`` notes (made a quarter longer than a
    minute's note count says it needs)."""
    minute = make_song(SongSpec(bpm=128.0, seconds=60.0, seed=1)).note_count
    song = make_song(SongSpec(bpm=128.0, seconds=math.ceil(75.0 * notes / minute), seed=1))
    instruments = song.payload["data"]["instruments"]
    starts = sorted(note["start"] for instrument in instruments for note in instrument["notes"])
    cut = starts[min(notes, len(starts)) - 1]
    for instrument in instruments:
        instrument["notes"] = [note for note in instrument["notes"] if note["start"] <= cut]
    return normalize(song.payload)


def cpu_median(fn: Callable[[], object], budget: float) -> float:
    """Median CPU seconds per call, after one warm-up call, over about ``budget`` seconds."""
    started = time.process_time()
    fn()
    once = max(time.process_time() - started, 1e-6)
    samples = []
    for _ in range(max(3, min(200, int(budget / once)))):
        started = time.process_time()
        fn()
        samples.append(time.process_time() - started)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    budget = 0.3 if args.quick else 2.0
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(
        f"{'input':<7} {'notes':>7} {'seconds':>8} {'estimate ms':>12} {'render ms':>10}"
        f" {'ratio':>6}  result"
    )
    for size in SIZES:
        inputs = {"song": song_of(size), "random": normalize(json.loads(synthetic_callback(size)))}
        for kind, callback in inputs.items():
            instruments = callback.instruments
            grid = estimate_beats(instruments)
            estimate = cpu_median(lambda: estimate_beats(instruments), budget)  # noqa: B023
            render = cpu_median(lambda: render_midi(callback), budget)  # noqa: B023
            span = max(note.start for i in instruments for note in i.notes)
            print(
                f"{kind:<7} {callback.note_count:>7} {span:>8.0f} {estimate * 1e3:>12.2f}"
                f" {render * 1e3:>10.2f} {estimate / render:>6.2f}  {grid.bpm:.1f} BPM"
                f" {grid.reason}, {len(grid.sections)} section(s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
