"""The file's tempo map: bar lines on the music's beats, and exact seconds <-> ticks.

A note's time in seconds is what the provider measured, so the map never moves a note: it
only chooses where the beats fall. Each quarter note of the file spans one of the music's
beats; the tempo changes only where the beat spacing does (a MIDI tempo is a whole number
of microseconds per quarter, and a new tempo event is written only when keeping the old
one would let the file's beats drift by more than :data:`MAX_BEAT_DRIFT_US` from the
music's). Converting a time uses the file's own integer tempos, so a reader that follows
the tempo events finds every note within half a tick of its time; with 960 ticks a
quarter and tempos of at least :data:`MIN_BPM`, half a tick is under 1 ms.

Before the first beat: when it comes less than a quarter beat after 0 s, the file's first
quarter stretches to reach it; otherwise the span up to it is a (shorter) quarter of its
own. Beats before the first downbeat make a pickup bar (time signature ``n/4``, then the
song's metre), so bar 2 starts on the music's first downbeat.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from .beats import estimate_beats
from .columns import note_columns
from .normalize import Instrument

__all__ = [
    "DEFAULT_BPM",
    "MAX_BEAT_DRIFT_US",
    "MAX_TICK",
    "MIN_BPM",
    "TICKS_PER_QUARTER",
    "TempoChange",
    "TempoMap",
    "TimeSignature",
    "default_map",
    "estimate_map",
    "from_beats",
]

TICKS_PER_QUARTER: Final = 960
DEFAULT_BPM: Final = 120.0
#: Half a tick is at most 1 ms at this tempo and above (1 920 000 us a quarter / 960 / 2).
MIN_BPM: Final = 31.25
_MAX_US_PER_QUARTER: Final = 1_920_000
#: The fastest tempo a quarter may take (a very short lead-in beat): 20 ms a quarter.
_MIN_US_PER_QUARTER: Final = 20_000
#: A new tempo event is written when the file's beat would otherwise be this far off.
MAX_BEAT_DRIFT_US: Final = 500
#: A first beat closer to 0 s than this share of a beat stretches the file's first quarter.
_STRETCH_SHARE: Final = 0.25
# Near a tie (x.5 ticks) the float product may be off by an ulp either way, so ties are
# decided on the exact value of the float; 1e-6 tick is many ulps at any accepted time.
_TIE_WINDOW: Final = 1e-6
_US: Final = 1_000_000
#: The last tick a file can place: 2**28 - 1 is the largest delta time, and the
#: renderer's packed sort keys hold 28 bits a tick.
MAX_TICK: Final = (1 << 28) - 1


@dataclass(frozen=True, slots=True)
class TempoChange:
    """A tempo event: from ``tick`` on, a quarter lasts ``microseconds_per_quarter``."""

    tick: int
    microseconds_per_quarter: int
    #: Where the tick is, exactly by the tempos before it.
    seconds: float

    @property
    def bpm(self) -> float:
        return 60 * _US / self.microseconds_per_quarter


@dataclass(frozen=True, slots=True)
class TimeSignature:
    """A time signature event: ``numerator``/``denominator`` from ``tick`` on."""

    tick: int
    numerator: int
    denominator: int
    seconds: float


@dataclass(frozen=True, slots=True)
class TempoMap:
    """Where the file's beats and bars are, and how seconds become ticks."""

    changes: tuple[TempoChange, ...]
    time_signatures: tuple[TimeSignature, ...]
    #: The tempo most of the music is in (what a one-number display shows).
    bpm: float
    #: False: the default 120 BPM, 4/4 from 0 s (too little evidence, or not asked for).
    estimated: bool
    #: Why this map: ``estimated``, or why not (``too_few_notes`` ...).
    reason: str

    #: Each change's start in ticks and in seconds, as floats (for the searches) and exactly.
    _ticks: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _exact: tuple[Fraction, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.changes or self.changes[0].tick != 0:
            raise ValueError("a tempo map starts with a tempo at tick 0")
        if not self.time_signatures or self.time_signatures[0].tick != 0:
            raise ValueError("a tempo map starts with a time signature at tick 0")
        exact = [Fraction(0)]
        for previous, change in itertools.pairwise(self.changes):
            if change.tick <= previous.tick:
                raise ValueError("tempo changes must ascend by tick")
            exact.append(exact[-1] + _span(change.tick - previous.tick, previous))
        for change in self.changes:
            if not _MIN_US_PER_QUARTER <= change.microseconds_per_quarter <= _MAX_US_PER_QUARTER:
                raise ValueError(
                    f"tempo {change.microseconds_per_quarter} us a quarter is outside "
                    f"{_MIN_US_PER_QUARTER}..{_MAX_US_PER_QUARTER}"
                )
        object.__setattr__(self, "_ticks", tuple(change.tick for change in self.changes))
        object.__setattr__(self, "_starts", tuple(change.seconds for change in self.changes))
        object.__setattr__(self, "_exact", tuple(exact))

    @property
    def steady(self) -> bool:
        """One tempo for the whole file."""
        return len(self.changes) == 1

    def to_ticks(self, seconds: float) -> int:
        """Nearest tick to ``seconds`` (its exact float value) by this map; ties round up."""
        index = (
            0 if len(self.changes) == 1 else max(bisect.bisect_right(self._starts, seconds) - 1, 0)
        )
        change = self.changes[index]
        scaled = change.tick + (seconds - change.seconds) * (
            TICKS_PER_QUARTER * _US / change.microseconds_per_quarter
        )
        tick = math.floor(scaled + 0.5)
        if abs(abs(scaled - tick) - 0.5) < _TIE_WINDOW:
            exact = change.tick + (Fraction(seconds) - self._exact[index]) / _span(1, change)
            tick = math.floor(exact + Fraction(1, 2))
        return tick

    def exact_seconds(self, tick: int) -> Fraction:
        """Where ``tick`` falls, in seconds, exactly by the integer tempos."""
        index = max(bisect.bisect_right(self._ticks, tick) - 1, 0)
        change = self.changes[index]
        return self._exact[index] + _span(tick - change.tick, change)

    def to_seconds(self, tick: int) -> float:
        """Where ``tick`` falls, in seconds."""
        return float(self.exact_seconds(tick))

    def bar_ticks(self, end_tick: int) -> list[int]:
        """The ticks where bars start, up to ``end_tick``, following the time signatures."""
        bars: list[int] = []
        signatures = self.time_signatures
        for index, signature in enumerate(signatures):
            stop = signatures[index + 1].tick if index + 1 < len(signatures) else end_tick + 1
            length = signature.numerator * TICKS_PER_QUARTER * 4 // signature.denominator
            bars.extend(range(signature.tick, min(stop, end_tick + 1), length))
        return bars


def _span(ticks: int, change: TempoChange) -> Fraction:
    """Seconds ``ticks`` last at ``change``'s tempo, exactly."""
    return Fraction(ticks * change.microseconds_per_quarter, TICKS_PER_QUARTER * _US)


def default_map(reason: str) -> TempoMap:
    """120 BPM, 4/4 from 0 s: the map of a file whose tempo could not be told."""
    us = round(60 * _US / DEFAULT_BPM)
    return TempoMap(
        changes=(TempoChange(0, us, 0.0),),
        time_signatures=(TimeSignature(0, 4, 4, 0.0),),
        bpm=DEFAULT_BPM,
        estimated=False,
        reason=reason,
    )


def from_beats(
    beats: Sequence[float],
    *,
    downbeat: int,
    beats_per_bar: int,
    bpm: float,
    reason: str = "estimated",
) -> TempoMap:
    """The map whose quarters fall on ``beats`` (seconds, ascending) and whose bars start on
    ``beats[downbeat]``, every ``beats_per_bar`` beats.

    Raises :class:`ValueError` for beats no file can follow (not ascending, too few, a
    beat slower than :data:`MIN_BPM`).
    """
    quarters, downbeat_quarter = _quarters(beats, downbeat)
    tempos = _tempo_events(quarters)
    changes = _with_seconds(tempos)
    pickup = downbeat_quarter % beats_per_bar
    signatures = [(0, pickup)] if pickup else []
    signatures.append((pickup * TICKS_PER_QUARTER, beats_per_bar))
    partial = TempoMap(changes, (TimeSignature(0, 4, 4, 0.0),), bpm, True, reason)
    return TempoMap(
        changes=changes,
        time_signatures=tuple(
            TimeSignature(tick, numerator, 4, partial.to_seconds(tick))
            for tick, numerator in signatures
        ),
        bpm=bpm,
        estimated=True,
        reason=reason,
    )


def _quarters(beats: Sequence[float], downbeat: int) -> tuple[list[float], int]:
    """The file's quarter boundaries in seconds (the first at 0 s), and which one is the
    downbeat's."""
    if len(beats) < 2:
        raise ValueError("a tempo map needs at least two beats")
    if beats[0] < 0 or any(b <= a for a, b in itertools.pairwise(beats)):
        raise ValueError("beats must start at or after 0 s and ascend")
    if not 0 <= downbeat < len(beats):
        raise ValueError(f"downbeat {downbeat} is not one of the {len(beats)} beats")
    first, period = beats[0], beats[1] - beats[0]
    if first == 0.0:
        return list(beats), downbeat
    if first < _STRETCH_SHARE * period:
        # The first beat is too close to 0 s to be a quarter of its own: the file's first
        # quarter stretches from 0 s to the second beat (and a downbeat there is tick 0).
        return [0.0, *beats[1:]], downbeat
    return [0.0, *beats], downbeat + 1


def _tempo_events(quarters: Sequence[float]) -> list[tuple[int, int]]:
    """``(tick, us per quarter)`` pairs: a new event only when the current tempo would put
    a beat more than :data:`MAX_BEAT_DRIFT_US` from the music's.

    An event's tempo is the mean spacing of the evenly spaced beats that follow it (equal
    to the microsecond), measured from where the file is: a long steady stretch stays one
    event, however a single beat's length rounds.
    """
    us = [round(quarter * _US) for quarter in quarters]
    events: list[tuple[int, int]] = []
    anchor_us = anchor_index = current = 0  # the file's time (us, exact) at the event's quarter
    for index in range(len(us) - 1):
        if events:
            if (
                abs(anchor_us + (index + 1 - anchor_index) * current - us[index + 1])
                <= MAX_BEAT_DRIFT_US
            ):
                continue
            anchor_us += (index - anchor_index) * current
            anchor_index = index
        end = index + 1
        spacing = us[end] - us[index]
        while end + 1 < len(us) and abs(us[end + 1] - us[end] - spacing) <= 1:
            end += 1
        duration = round((us[end] - anchor_us) / (end - index))
        if duration > _MAX_US_PER_QUARTER:
            raise ValueError(
                f"a beat of {duration / _US:.3f} s is slower than {MIN_BPM} BPM; "
                "no file can place notes within 1 ms at that tempo"
            )
        current = max(duration, _MIN_US_PER_QUARTER)
        events.append((index * TICKS_PER_QUARTER, current))
    return events


def _with_seconds(tempos: Sequence[tuple[int, int]]) -> tuple[TempoChange, ...]:
    changes: list[TempoChange] = []
    elapsed = Fraction(0)
    for index, (tick, us) in enumerate(tempos):
        if index:
            previous_tick, previous_us = tempos[index - 1]
            elapsed += Fraction((tick - previous_tick) * previous_us, TICKS_PER_QUARTER * _US)
        changes.append(TempoChange(tick, us, float(elapsed)))
    return tuple(changes)


def estimate_map(instruments: Sequence[Instrument]) -> TempoMap:
    """The map of a song: its estimated beats (:func:`.beats.estimate_beats`) when the
    notes tell them, else the default map saying why not."""
    grid = estimate_beats(instruments)
    if not grid.estimated:
        return default_map(grid.reason)
    try:
        tempo = from_beats(
            grid.beats, downbeat=grid.downbeat, beats_per_bar=grid.beats_per_bar, bpm=grid.bpm
        )
    except ValueError:
        return default_map("unusable_beats")
    ends = [note_columns(instrument).end for instrument in instruments if instrument.notes]
    last = max((float(end.max()) for end in ends), default=0.0)
    if tempo.to_ticks(last) > MAX_TICK:
        return default_map("too_long")
    return tempo
