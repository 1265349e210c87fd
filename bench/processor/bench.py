"""The processor's core against symusic and pretty_midi, same bytes, same run: ratios.

Every contender starts from the callback's JSON bytes and ends with a MIDI file written to
the same temporary directory (no fsync: that is storage cost, the same for all):

* **ours**: the processor's own path, ``process_callback`` (parse, normalize, estimate the
  tempo map, render), the file written. The targets are judged on it;
* **ours, 120 BPM**: the same without the tempo estimate (the fixed 120 BPM map), printed
  beside it to show what the estimate costs;
* **symusic** (a C++ core): ``json.loads``, a ``symusic.Score`` at 960 ticks a quarter and
  120 BPM with one ``Track`` per instrument and a ``Note`` per note, ``dump_midi``;
* **pretty_midi** (what basic-pitch and most transcription tools use): ``json.loads``, a
  ``PrettyMIDI`` with one ``Instrument`` per instrument and a ``Note`` per note, ``write``.

The contenders run interleaved, one call each per round, and each figure is the median CPU
time of its calls: the machine is shared, and interleaving spreads a neighbour's load over
all of them alike.

Targets: ours >= 1x symusic and >= 10x pretty_midi at 1 000, 10 000 and 100 000 notes, and
linear cost: 100x the notes in <= 120x the time (100 -> 10 000 and 1 000 -> 100 000).

Run: ``.venv/bin/python -m bench.processor.bench`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pretty_midi
import symusic

from services.processor.app import Processed, parse_callback, process_callback
from services.processor.gm import sound_for
from services.processor.render import render_midi

from .callbacks import synthetic_callback

SIZES = (100, 1_000, 10_000, 100_000)
#: The sizes the throughput targets are judged at.
TARGET_SIZES = (1_000, 10_000, 100_000)
SYMUSIC_TARGET = 1.0
PRETTY_MIDI_TARGET = 10.0
LINEARITY_LIMIT = 120.0
_TICKS_PER_SECOND = 1920  # 960 ticks a quarter at 120 BPM

Contender = Callable[[bytes, Path], None]


def ours(body: bytes, path: Path) -> None:
    processed = process_callback(body)
    assert isinstance(processed, Processed) and processed.midi is not None
    path.write_bytes(processed.midi)


def ours_fixed_tempo(body: bytes, path: Path) -> None:
    path.write_bytes(render_midi(parse_callback(body)))


def with_symusic(body: bytes, path: Path) -> None:
    payload = json.loads(body)
    score = symusic.Score(960)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for raw in payload["data"]["instruments"]:
        sound = sound_for(raw["name"])
        track = symusic.Track(raw["name"], sound.program, sound.is_drum)
        notes = track.notes
        for note in raw["notes"]:
            start = round(float(note["start"]) * _TICKS_PER_SECOND)
            end = round(float(note["end"]) * _TICKS_PER_SECOND)
            velocity = max(1, round(float(note.get("velocity", 1)) * 127))
            notes.append(symusic.Note(start, max(1, end - start), int(note["pitch"]), velocity))
        score.tracks.append(track)
    score.dump_midi(path)


def with_pretty_midi(body: bytes, path: Path) -> None:
    payload = json.loads(body)
    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)
    for raw in payload["data"]["instruments"]:
        sound = sound_for(raw["name"])
        instrument = pretty_midi.Instrument(
            program=sound.program, is_drum=sound.is_drum, name=raw["name"]
        )
        for note in raw["notes"]:
            velocity = max(1, round(float(note.get("velocity", 1)) * 127))
            instrument.notes.append(
                pretty_midi.Note(
                    velocity=velocity,
                    pitch=int(note["pitch"]),
                    start=float(note["start"]),
                    end=float(note["end"]),
                )
            )
        pm.instruments.append(instrument)
    pm.write(str(path))


CONTENDERS: dict[str, Contender] = {
    "ours": ours,
    "ours_120": ours_fixed_tempo,
    "symusic": with_symusic,
    "pretty_midi": with_pretty_midi,
}


def interleaved(body: bytes, directory: Path, rounds: int, slow_rounds: int) -> dict[str, float]:
    """Median CPU seconds per call of each contender, after one warm-up call each; one call
    of each per round (pretty_midi, far slower, only in the first ``slow_rounds``)."""
    samples: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for name, fn in CONTENDERS.items():
        fn(body, directory / f"{name}.mid")
    for index in range(rounds):
        for name, fn in CONTENDERS.items():
            if name == "pretty_midi" and index >= slow_rounds:
                continue
            started = time.process_time()
            fn(body, directory / f"{name}.mid")
            samples[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    args = parser.parse_args(argv)
    budget = 0.5 if args.quick else 6.0  # seconds of sampling per size (all contenders)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"symusic {symusic.__version__}, pretty_midi {pretty_midi.__version__}")
    print("median CPU ms per callback; ratio = the baseline's time / ours")
    print(
        f"{'notes':>8} {'ours':>9} {'ours 120':>9} {'symusic':>9} {'pretty_midi':>12}"
        f" {'vs symusic':>11} {'(120 BPM)':>10} {'vs pretty_midi':>15} {'(120 BPM)':>10}"
    )
    ours_seconds: dict[int, float] = {}
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            body = synthetic_callback(size)
            started = time.process_time()
            for fn in CONTENDERS.values():
                if fn is not with_pretty_midi:
                    fn(body, Path(tmp) / "probe.mid")
            once = max(time.process_time() - started, 1e-6)
            rounds = max(5, min(300, int(budget / once)))
            times = interleaved(body, Path(tmp), rounds, max(3, rounds // 10))
            mine, fixed = times["ours"], times["ours_120"]
            ours_seconds[size] = mine
            versus_symusic, versus_pm = times["symusic"] / mine, times["pretty_midi"] / mine
            print(
                f"{size:>8} {mine * 1e3:>9.2f} {fixed * 1e3:>9.2f} {times['symusic'] * 1e3:>9.2f}"
                f" {times['pretty_midi'] * 1e3:>12.2f} {versus_symusic:>10.2f}x"
                f" {times['symusic'] / fixed:>9.2f}x {versus_pm:>14.1f}x"
                f" {times['pretty_midi'] / fixed:>9.1f}x"
            )
            if size not in TARGET_SIZES:
                continue
            if versus_symusic < SYMUSIC_TARGET:
                failures.append(f"{size} notes: {versus_symusic:.2f}x symusic")
            if versus_pm < PRETTY_MIDI_TARGET:
                failures.append(f"{size} notes: {versus_pm:.1f}x pretty_midi")
    for small, large in ((100, 10_000), (1_000, 100_000)):
        ratio = ours_seconds[large] / ours_seconds[small]
        print(f"linearity {small} -> {large} notes (100x): {ratio:.1f}x the time "
              f"(limit {LINEARITY_LIMIT:.0f}x)")  # fmt: skip
        if ratio > LINEARITY_LIMIT:
            failures.append(f"{small} -> {large}: {ratio:.1f}x > {LINEARITY_LIMIT}x")
    print(
        f"targets (ours >= {SYMUSIC_TARGET:g}x symusic, >= {PRETTY_MIDI_TARGET:g}x pretty_midi,"
        " linear): " + ("met" if not failures else "MISSED: " + "; ".join(failures))
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
