"""Test songs with known answers: a provider-shaped callback body and the beats it was built on.

The beat estimator, the tests that open our files in real programs, the bench and the
README's before/after image all need songs whose true tempo, beats and bar lines are known.
A song is drums (kick, snare, hats, crashes), a bass line, chords and a melody, with
syncopation and rests, so that an estimator meets what music has (off-beat notes, empty
beats, a backbeat louder than the downbeat) rather than a click on every beat. Everything
is drawn from ``random.Random`` seeded by the spec, so one spec is one body, byte for byte.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = [
    "Song",
    "SongSpec",
    "Truth",
    "known_answer_suite",
    "make_song",
]

#: The provider's time grid: note times are multiples of 1/192 s.
_GRID: Final = 192
_SIXTEENTHS: Final = 4  # per beat

_KICK, _SNARE, _CLOSED_HAT, _OPEN_HAT, _CRASH = 36, 38, 42, 46, 49
# Drum patterns over one 4/4 bar in sixteenths: kick, snare, hat positions.
_PATTERNS: Final = (
    ((0, 8), (4, 12), tuple(range(0, 16, 2))),
    ((0, 6, 8), (4, 12), tuple(range(0, 16, 2))),
    ((0, 7, 10), (4, 12), tuple(range(0, 16, 2))),
    ((0, 8, 11), (4, 12, 15), tuple(range(0, 16, 1))),
)
# Waltzes, 3/4 in sixteenths: the kick on 1, snares on 2 and 3 (or on 3 only).
_WALTZ_PATTERNS: Final = (
    ((0,), (4, 8), tuple(range(0, 12, 2))),
    ((0, 6), (8,), tuple(range(0, 12, 2))),
)
# I-V-vi-IV, vi-IV-I-V, I-vi-IV-V, ii-V-I-I as scale degrees (0-based) of a major key.
_PROGRESSIONS: Final = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0))
_MAJOR: Final = (0, 2, 4, 5, 7, 9, 11)
_PENTATONIC: Final = (0, 2, 4, 7, 9)

#: One note before timing: instrument, pitch, start and length in beats, velocity.
_Event = tuple[str, int, float, float, float]


@dataclass(frozen=True, slots=True)
class SongSpec:
    """What to generate. Times in seconds, tempos in quarter-note beats per minute."""

    bpm: float = 120.0
    seconds: float = 30.0  # length of the music after the lead-in (whole bars, at least)
    seed: int = 0
    jitter_ms: float = 0.0  # standard deviation of each onset's displacement (Gaussian)
    swing: float = 0.0  # 0 straight .. 1 triplet feel: off-beat eighths delayed by swing/6 beat
    missing: float = 0.0  # share of beats whose notes are all left out
    drums: bool = True
    melodic: bool = True  # bass, chords and melody
    change_bpm: float | None = None  # the tempo from ``change_bar`` on
    change_bar: int = 8  # the bar (0-based, counted from the first full bar) where it changes
    lead_in: float = 0.0  # seconds of silence before the first beat
    pickup: int = 0  # beats of melody before the first downbeat (an anacrusis), 0..3
    beats_per_bar: int = 4


@dataclass(frozen=True, slots=True)
class Truth:
    """The answers: every beat from the first played one to the end, the bar starts among
    them, and the tempo sections as (start second, bpm)."""

    beats: tuple[float, ...]
    downbeats: tuple[float, ...]
    sections: tuple[tuple[float, float], ...]
    beats_per_bar: int

    @property
    def bpm(self) -> float:
        """The main tempo: the longest section's."""
        ends = [*(start for start, _ in self.sections[1:]), self.beats[-1]]
        lengths = [end - start for (start, _), end in zip(self.sections, ends, strict=True)]
        return self.sections[lengths.index(max(lengths))][1]


@dataclass(frozen=True, slots=True)
class Song:
    spec: SongSpec
    truth: Truth
    payload: dict[str, Any] = field(repr=False)

    def body(self) -> bytes:
        """The callback body as the provider would send it."""
        return json.dumps(self.payload).encode()

    @property
    def note_count(self) -> int:
        return sum(len(instrument["notes"]) for instrument in self.payload["data"]["instruments"])


class _Clock:
    """Beat positions (beats from the first played beat, swing applied) to seconds."""

    def __init__(self, spec: SongSpec) -> None:
        self.spec = spec
        self.change_beat = spec.pickup + spec.change_bar * spec.beats_per_bar
        self.change_at = spec.lead_in + self.change_beat * 60.0 / spec.bpm

    def _straight(self, beat: float) -> float:
        spec = self.spec
        if spec.change_bpm is None or beat <= self.change_beat:
            return spec.lead_in + beat * 60.0 / spec.bpm
        return self.change_at + (beat - self.change_beat) * 60.0 / spec.change_bpm

    def seconds(self, beat: float) -> float:
        whole = math.floor(beat)
        fraction = beat - whole
        off = 0.5 + self.spec.swing / 6.0  # where the off-beat eighth falls
        if fraction <= 0.5:
            fraction = fraction / 0.5 * off
        else:
            fraction = off + (fraction - 0.5) / 0.5 * (1.0 - off)
        return self._straight(whole + fraction)


def make_song(spec: SongSpec) -> Song:
    """The song for ``spec``: the same spec always gives the same body and truth."""
    if not 0 <= spec.pickup < spec.beats_per_bar:
        raise ValueError(f"pickup must be 0..{spec.beats_per_bar - 1} beats, got {spec.pickup}")
    rng = random.Random(_seed(spec))
    clock = _Clock(spec)
    bars = _bar_count(spec)
    # Events as (instrument, pitch, start beat, length in beats, velocity).
    events: list[_Event] = []
    if spec.drums:
        events += _drums(rng, spec, bars)
    if spec.melodic:
        events += _harmony(rng, spec, bars)
        events += _melody(rng, spec, bars)
    total_beats = spec.pickup + bars * spec.beats_per_bar
    events = _drop_beats(rng, events, spec.missing, total_beats)
    return Song(spec, _truth(spec, clock, total_beats), _payload(rng, spec, clock, events))


def _seed(spec: SongSpec) -> str:
    """The spec as a string, numbers that may be given as ints (``jitter_ms=15``) written as
    floats, so that equal specs make the same song."""
    fields = asdict(spec)
    for name in ("bpm", "seconds", "jitter_ms", "swing", "missing", "change_bpm", "lead_in"):
        if fields[name] is not None:
            fields[name] = float(fields[name])
    return json.dumps(fields, sort_keys=True)


def _bar_count(spec: SongSpec) -> int:
    beat = 60.0 / spec.bpm
    return max(2, math.ceil(spec.seconds / (beat * spec.beats_per_bar)))


def _drums(rng: random.Random, spec: SongSpec, bars: int) -> list[_Event]:
    kicks, snares, hats = rng.choice(_WALTZ_PATTERNS if spec.beats_per_bar == 3 else _PATTERNS)
    per_bar = spec.beats_per_bar * _SIXTEENTHS
    out: list[_Event] = []
    for bar in range(bars):
        origin = spec.pickup + bar * spec.beats_per_bar
        for step in range(per_bar):
            beat = origin + step / _SIXTEENTHS
            bar_step = step % 16
            if step == 0 and bar % 4 == 0:
                out.append(("Drums", _CRASH, beat, 1.0, 0.9))
            if bar_step in kicks:
                out.append(("Drums", _KICK, beat, 0.25, rng.uniform(0.75, 0.95)))
            if bar_step in snares:
                out.append(("Drums", _SNARE, beat, 0.25, rng.uniform(0.8, 1.0)))
            if bar_step in hats and rng.random() > 0.05:
                pitch = _OPEN_HAT if bar_step == 14 and bar % 2 else _CLOSED_HAT
                accent = 0.7 if bar_step % 4 == 0 else 0.5
                out.append(("Drums", pitch, beat, 0.25, accent * rng.uniform(0.8, 1.0)))
    if spec.pickup:  # a fill on the pickup's last beat
        out += [("Drums", _SNARE, spec.pickup - 1 + i / 4, 0.25, 0.6 + 0.1 * i) for i in range(4)]
    return out


def _harmony(rng: random.Random, spec: SongSpec, bars: int) -> list[_Event]:
    """Bass and chords on a four-bar progression: the bass on beat 1 with syncopated
    pushes and rests, the chords held from the bar start or comped off the beat."""
    key = rng.randrange(12)
    progression = rng.choice(_PROGRESSIONS)
    comp = rng.random() < 0.5
    bar_beats = spec.beats_per_bar
    out: list[_Event] = []
    for bar in range(bars):
        origin = spec.pickup + bar * bar_beats
        degree = progression[bar % len(progression)]
        root = key + _MAJOR[degree]
        triad = [
            root + _MAJOR[(degree + i) % 7] - _MAJOR[degree] + 12 * ((degree + i) // 7)
            for i in (0, 2, 4)
        ]
        out.append(("Electric Bass (finger)", 36 + root % 12, origin, 1.5, 0.9))
        if bar_beats >= 4:
            out.append(("Electric Bass (finger)", 36 + root % 12, origin + 1.5, 0.5, 0.7))
            if rng.random() < 0.7:
                out.append(("Electric Bass (finger)", 43 + root % 12, origin + 2, 1.0, 0.8))
            if rng.random() < 0.4:
                out.append(("Electric Bass (finger)", 43 + root % 12, origin + 3.5, 0.5, 0.6))
        starts = (0.0, 1.5, 3.0) if comp and bar_beats >= 4 else (0.0,)
        length = 1.0 if comp else float(bar_beats)
        for offset in starts:
            for pitch in triad:
                out.append(("Acoustic Grand Piano", 60 + pitch % 12, origin + offset, length, 0.6))
    return out


def _melody(rng: random.Random, spec: SongSpec, bars: int) -> list[_Event]:
    """Two-bar phrases on a pentatonic scale in sixteenths: syncopated (notes starting off
    the beat and held across it), with rests, and a silent phrase now and then."""
    out: list[_Event] = []
    step = 0  # sixteenths from the first played beat
    degree = 2
    end = (spec.pickup + bars * spec.beats_per_bar) * _SIXTEENTHS
    if spec.pickup:  # the anacrusis: eighths leading into the first downbeat
        for eighth in range(spec.pickup * 2):
            out.append(("Flute", 72 + _PENTATONIC[eighth % 5], eighth / 2, 0.5, 0.7))
        step = spec.pickup * _SIXTEENTHS
    phrase = 2 * spec.beats_per_bar * _SIXTEENTHS
    while step < end:
        phrase_end = min(end, step + phrase)
        if rng.random() < 0.2:  # a rest of a whole phrase
            step = phrase_end
            continue
        while step < phrase_end - 4:
            length = rng.choice((1, 2, 2, 3, 4, 4, 6, 8))
            if rng.random() < 0.25:  # a rest
                step += rng.choice((2, 4))
                continue
            degree = max(0, min(9, degree + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
            pitch = 72 + _PENTATONIC[degree % 5] + 12 * (degree // 5)
            out.append(
                ("Flute", pitch, step / _SIXTEENTHS, length / _SIXTEENTHS, rng.uniform(0.5, 0.9))
            )
            step += length
        step = phrase_end
    return out


def _drop_beats(rng: random.Random, events: list[_Event], share: float, beats: int) -> list[_Event]:
    if share <= 0:
        return events
    gone = {beat for beat in range(beats) if rng.random() < share}
    return [event for event in events if math.floor(event[2]) not in gone]


def _truth(spec: SongSpec, clock: _Clock, total_beats: int) -> Truth:
    beats = tuple(clock.seconds(beat) for beat in range(total_beats + 1))
    downbeats = beats[spec.pickup :: spec.beats_per_bar]
    sections = [(beats[0], float(spec.bpm))]
    if spec.change_bpm is not None and clock.change_beat < total_beats:
        sections.append((clock.change_at, float(spec.change_bpm)))
    return Truth(beats, downbeats, tuple(sections), spec.beats_per_bar)


def _payload(
    rng: random.Random,
    spec: SongSpec,
    clock: _Clock,
    events: list[_Event],
) -> dict[str, Any]:
    """The callback: times jittered, on the provider's 1/192 s grid, ends after starts."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, pitch, beat, length, velocity in sorted(events, key=lambda e: (e[2], e[0], e[1])):
        start = max(0.0, clock.seconds(beat) + rng.gauss(0.0, spec.jitter_ms / 1000.0))
        end = clock.seconds(beat + length) + rng.gauss(0.0, spec.jitter_ms / 1000.0)
        first = round(start * _GRID)
        last = max(first + 6, round(end * _GRID))  # at least 31 ms long
        by_name.setdefault(name, []).append(
            {
                "pitch": pitch,
                "start": first / _GRID,
                "end": last / _GRID,
                "velocity": round(min(1.0, velocity), 3),
            }
        )
    instruments = [{"name": name, "notes": notes} for name, notes in by_name.items()]
    return {
        "code": 200,
        "msg": "success",
        "data": {"taskId": f"song-{spec.seed}", "state": "complete", "instruments": instruments},
    }


def known_answer_suite(count: int = 40) -> list[SongSpec]:
    """Songs spanning 60-200 BPM evenly, each with its own mix of onset jitter (0-20 ms),
    swing, missing beats, lead-in and pickup; every fifth drums-only, every fifth (another)
    drum-less; two with a tempo change."""
    specs = []
    for index in range(count):
        bpm = round(60.0 + 140.0 * index / (count - 1), 1)
        kind = index % 5
        specs.append(
            SongSpec(
                bpm=bpm,
                seconds=30.0 + 10.0 * (index % 4),
                seed=index,
                jitter_ms=5.0 * ((index // 5) % 5),
                swing=(0.0, 0.0, 0.5, 1.0)[index % 4] if index % 3 else 0.0,
                missing=(0.0, 0.1, 0.2)[index % 3],
                drums=kind != 1,
                melodic=kind != 3,
                lead_in=(0.0, 0.4, 1.3)[index % 3],
                pickup=index % 4 if index % 2 else 0,
            )
        )
    specs.append(
        SongSpec(bpm=96.0, change_bpm=132.0, change_bar=12, seconds=60.0, seed=101, jitter_ms=8.0)
    )
    specs.append(
        SongSpec(
            bpm=150.0,
            change_bpm=120.0,
            change_bar=20,
            seconds=60.0,
            seed=102,
            jitter_ms=8.0,
            swing=0.5,
            pickup=1,
        )
    )
    return specs
