"""Standard MIDI File bytes from normalized notes: a pure, deterministic, fast function.

The file is what users come for, so its rules are fixed and documented (see
``docs/processing.md``): format 1, a conductor track (the tempo map's tempos and time
signatures, :mod:`.tempo_map`), one track per instrument; 960 ticks a quarter, every note
within half a tick (under 1 ms) of its time in seconds; General MIDI programs from the
instrument names; drums on channel 10; same-pitch overlaps on one channel cut so that no
note is stuck or swallowed. The optional quantized variant snaps every note to a grid of
the same map.

The writer is hand-rolled (no MIDI library at run time) on numpy arrays: the notes become
columns, each event one int64 that sorts by track and then in file order, and the delta
times and messages of all tracks are encoded in one buffer (100 000 notes in about 70 ms).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .columns import note_columns
from .gm import sound_for
from .normalize import Instrument, NormalizedCallback
from .tempo_map import MAX_TICK, TICKS_PER_QUARTER, TempoMap, default_map

__all__ = [
    "DRUM_CHANNEL",
    "MAX_INSTRUMENTS",
    "MELODIC_CHANNELS",
    "RENDERER_VERSION",
    "TICKS_PER_QUARTER",
    "RenderStats",
    "TrackLayout",
    "grid_step",
    "layout_tracks",
    "render_midi",
    "render_midi_with_stats",
    "seconds_to_ticks",
]

#: Raise it whenever normalization or rendering would turn the same body into a different
#: result: it is part of the notes event's ``rendering_key``, so replays after the change
#: read as new renderings downstream.
RENDERER_VERSION: Final = 2
_DEFAULT_MAP: Final = default_map("not_estimated")
DRUM_CHANNEL: Final = 9  # "channel 10" in the GM spec's 1-based numbering
MELODIC_CHANNELS: Final = tuple(channel for channel in range(16) if channel != DRUM_CHANNEL)
#: The header's track count is 16 bits, one track being the conductor.
MAX_INSTRUMENTS: Final = 0xFFFF - 1

# Near a tie (x.5 ticks) the float product may be off by an ulp either way, so ties are
# decided on the exact value of the float; 1e-6 tick is many ulps at any accepted time.
_TIE_WINDOW: Final = 1e-6
_US: Final = 1_000_000

# Event kinds, in the order events at the same tick are written.
_OFF: Final = 0
_PROGRAM: Final = 1
_ON: Final = 2


def seconds_to_ticks(seconds: float, tempo: TempoMap = _DEFAULT_MAP) -> int:
    """Nearest tick to ``seconds`` (exact float value) by ``tempo``, ties rounded up."""
    return tempo.to_ticks(seconds)


@dataclass(frozen=True, slots=True)
class TrackLayout:
    """Where one instrument goes in the file: its track's name, program and channel."""

    name: str
    program: int
    channel: int
    is_drum: bool
    #: False when the name is not a known GM or percussion name (default program used).
    known_name: bool
    #: True when the channel also carries a track with another program: the program
    #: change is then repeated before each of this track's note-on ticks.
    shares_channel_with_other_program: bool = False


def layout_tracks(instruments: Sequence[Instrument]) -> list[TrackLayout]:
    """Programs and channels for the instruments, in their order.

    Percussion names go to channel 9. Up to 15 melodic instruments get one channel each
    (0-8, 10-15 in order). Past 15, instruments with the same program share a channel, the
    distinct programs taking the 15 channels in order of first appearance and, past 15
    programs, round-robin.
    """
    sounds = [sound_for(instrument.name) for instrument in instruments]
    melodic_count = sum(1 for sound in sounds if not sound.is_drum)
    program_slot: dict[int, int] = {}
    channels: list[int] = []
    melodic_index = 0
    for sound in sounds:
        if sound.is_drum:
            channels.append(DRUM_CHANNEL)
            continue
        if melodic_count <= len(MELODIC_CHANNELS):
            slot = melodic_index
        else:
            slot = program_slot.setdefault(sound.program, len(program_slot))
        melodic_index += 1
        channels.append(MELODIC_CHANNELS[slot % len(MELODIC_CHANNELS)])
    programs_on: dict[int, set[int]] = {}
    for sound, channel in zip(sounds, channels, strict=True):
        programs_on.setdefault(channel, set()).add(sound.program)
    return [
        TrackLayout(
            name=instrument.name,
            program=sound.program,
            channel=channel,
            is_drum=sound.is_drum,
            known_name=sound.known,
            shares_channel_with_other_program=len(programs_on[channel]) > 1,
        )
        for instrument, sound, channel in zip(instruments, sounds, channels, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class RenderStats:
    """What the file could not show as sent (the notes event still carries every note)."""

    #: Notes whose end was moved earlier to the start of the next same-pitch note.
    notes_cut: int = 0
    #: Notes not written: a same-pitch note starts on the same tick on the same channel
    #: (the longest is written), or a cut left less than one tick.
    notes_merged: int = 0


def _vlq(value: int) -> bytes:
    out = bytearray((value & 0x7F,))
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.reverse()
    return bytes(out)


def _chunk(kind: bytes, body: bytes | bytearray) -> bytes:
    return kind + struct.pack(">I", len(body)) + body


def _meta(kind: int, data: bytes) -> bytes:
    return b"\xff" + bytes((kind,)) + _vlq(len(data)) + data


def _conductor(tempo: TempoMap) -> bytes:
    """Time signatures before tempos at one tick (the order notation programs expect)."""
    events: list[tuple[int, int, bytes]] = []
    for signature in tempo.time_signatures:
        # a click every quarter (24 MIDI clocks), 8 thirty-seconds per quarter
        denominator_power = signature.denominator.bit_length() - 1
        data = bytes((signature.numerator, denominator_power, 24, 8))
        events.append((signature.tick, 0, _meta(0x58, data)))
    for change in tempo.changes:
        data = change.microseconds_per_quarter.to_bytes(3, "big")
        events.append((change.tick, 1, _meta(0x51, data)))
    events.sort()
    body = bytearray()
    last = 0
    for tick, _, message in events:
        body += _vlq(tick - last) + message
        last = tick
    body += b"\x00" + _meta(0x2F, b"")
    return _chunk(b"MTrk", body)


_TICK_BITS: Final = MAX_TICK.bit_length()
_TICK_MASK: Final = (1 << _TICK_BITS) - 1
#: An event's bits above its tick: ``kind << 14 | pitch << 7 | velocity``.
_EVENT_BITS: Final = 16
#: Where the track goes in a sort key above an event (a tick has 28 bits).
_TRACK_SHIFT: Final = _TICK_BITS + _EVENT_BITS

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def grid_step(grid: str) -> int:
    """Ticks in one step of a grid written as a note value: ``1/16`` is a sixteenth,
    ``1/8t`` an eighth-note triplet. Raises :class:`ValueError` for any other text, or a
    step that is not a whole number of ticks."""
    triplet = grid.endswith("t")
    numerator, _, denominator = grid.removesuffix("t").partition("/")
    if numerator != "1" or not denominator.isdigit() or int(denominator) == 0:
        raise ValueError(f"grid {grid!r} is not a note value such as 1/16 or 1/8t")
    whole = 4 * TICKS_PER_QUARTER * (2 if triplet else 3)
    step, rest = divmod(whole, int(denominator) * 3)
    if rest or step == 0:
        raise ValueError(
            f"grid {grid!r} is not a whole number of ticks at {TICKS_PER_QUARTER} a quarter"
        )
    return step


@dataclass(frozen=True, slots=True)
class _Notes:
    """Every note of the callback as columns, in instrument order, then the provider's."""

    pitch: Ints
    on: Ints
    off: Ints
    velocity: Ints
    track: Ints


def _columns(instruments: Sequence[Instrument], tempo: TempoMap, step: int | None) -> _Notes:
    """The notes' ticks by the map (a note shorter than half a tick gets one), snapped to
    ``step`` when given, from the instruments' columns (:func:`.columns.note_columns`)."""
    columns = [note_columns(instrument) for instrument in instruments]
    track = np.repeat(
        np.arange(len(instruments), dtype=np.int64), [len(part.start) for part in columns]
    )
    end = _joined([part.end for part in columns], np.float64)
    on = _ticks(_joined([part.start for part in columns], np.float64), tempo)
    off = _ticks(end, tempo)
    off = np.where(off > on, off, on + 1)
    if step is not None:
        # Every on and off to the nearest grid line (ties later); a note keeps one step.
        half = step // 2
        on = (on + half) // step * step
        off = (off + half) // step * step
        off = np.where(off > on, off, on + step)
    beyond = np.flatnonzero(off > _TICK_MASK)
    if len(beyond):
        raise ValueError(
            f"a note ending at {float(end[beyond[0]])} s is beyond what the file can place "
            f"({_TICK_MASK} ticks); normalize() drops such notes"
        )
    return _Notes(
        pitch=_joined([part.pitch for part in columns], np.int64),
        on=on,
        off=off,
        velocity=_joined([part.midi_velocity for part in columns], np.int64),
        track=track,
    )


def _joined(parts: list[Any], dtype: type[Any]) -> Any:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _ticks(seconds: Floats, tempo: TempoMap) -> Ints:
    """:meth:`TempoMap.to_ticks` of each time, by the same float operations; the rare
    near-ties (the exact value decides them) go through ``to_ticks`` itself."""
    changes = tempo.changes
    if len(changes) == 1:
        index = np.zeros(len(seconds), dtype=np.intp)
    else:
        starts = np.array([change.seconds for change in changes])
        index = np.maximum(np.searchsorted(starts, seconds, side="right") - 1, 0)
    ticks_at = np.array([float(change.tick) for change in changes])[index]
    seconds_at = np.array([change.seconds for change in changes])[index]
    rate = np.array(
        [TICKS_PER_QUARTER * _US / change.microseconds_per_quarter for change in changes]
    )[index]
    scaled = ticks_at + (seconds - seconds_at) * rate
    ticks = np.floor(scaled + 0.5)
    result: Ints = ticks.astype(np.int64)
    for tie in np.flatnonzero(np.abs(np.abs(scaled - ticks) - 0.5) < _TIE_WINDOW):
        result[tie] = tempo.to_ticks(float(seconds[tie]))
    return result


def _resolve(notes: _Notes, channel_of_track: Ints) -> tuple[Ints, RenderStats]:
    """Resolve same-pitch overlaps per channel; each written note's two events as sort keys
    ``track << 44 | tick << 16 | kind << 14 | pitch << 7 | velocity``, which sort by track,
    then in file order (note-offs, then program changes, then note-ons at equal ticks).

    Sorted by channel, pitch, start, longest first, track, loudest first: a note starting on
    the same tick as the one before is not written (the first, longest, one is); a note
    still sounding when the next one starts ends there. When the next note is in an
    *earlier* track, a player that merges tracks (earlier track first at equal ticks) would
    see its note-on before this note-off, so this note ends one tick earlier; if that
    leaves nothing, it is not written.
    """
    if not len(notes.pitch):
        return np.zeros(0, dtype=np.int64), RenderStats()
    channel = channel_of_track[notes.track]
    # Two packed keys instead of six: (channel, pitch, start), then (longest, track,
    # loudest) first; a track index has at most 16 bits.
    voice_start = (channel << 7 | notes.pitch) << _TICK_BITS | notes.on
    precedence = ((_TICK_MASK - notes.off) << 16 | notes.track) << 7 | (127 - notes.velocity)
    order = np.lexsort((precedence, voice_start))
    pitch, on, off = notes.pitch[order], notes.on[order], notes.off[order]
    track, velocity, channel = notes.track[order], notes.velocity[order], channel[order]
    start = voice_start[order]
    head = np.flatnonzero(np.concatenate(([True], start[1:] != start[:-1])))
    merged = len(pitch) - len(head)
    pitch, on, off, track, velocity = pitch[head], on[head], off[head], track[head], velocity[head]
    voice = (channel[head] << 7) | pitch
    following = np.zeros(len(head), dtype=bool)
    following[:-1] = voice[1:] == voice[:-1]
    limit = np.full(len(head), _TICK_MASK + 1, dtype=np.int64)
    limit[:-1] = np.where(track[1:] < track[:-1], on[1:] - 1, on[1:])
    shortened = following & (off > limit)
    off = np.where(shortened, limit, off)
    gone = shortened & (off <= on)
    merged += int(gone.sum())
    cut = int(shortened.sum()) - int(gone.sum())
    kept = ~gone
    pitch, on, off, track, velocity = pitch[kept], on[kept], off[kept], track[kept], velocity[kept]
    above = track << _TRACK_SHIFT | pitch << 7
    events = np.concatenate(
        (
            above | (on << 2 | _ON) << 14 | velocity,
            above | (off << 2 | _OFF) << 14 | 0x40,
        )
    )
    return events, RenderStats(notes_cut=cut, notes_merged=merged)


def _with_program_changes(events: Ints, layouts: Sequence[TrackLayout]) -> Ints:
    """A track whose channel carries another program restores its own before each tick
    where it starts notes."""
    shared = np.array([layout.shares_channel_with_other_program for layout in layouts])
    if not shared.any():
        return events
    ons = events[((events >> 14) & 3 == _ON) & shared[events >> _TRACK_SHIFT]]
    at = np.unique(ons >> _EVENT_BITS)  # track << 28 | tick
    return np.concatenate((events, (at << 2 | _PROGRAM) << 14))


def _encode(events: Ints, layouts: Sequence[TrackLayout]) -> tuple[npt.NDArray[np.uint8], Ints]:
    """The sorted events' bytes (delta time, then the channel message), all tracks in one
    buffer, and where each track's bytes end in it."""
    track = events >> _TRACK_SHIFT
    tick = (events >> _EVENT_BITS) & _TICK_MASK
    kind = (events >> 14) & 3
    first = np.ones(len(events), dtype=bool)
    first[1:] = track[1:] != track[:-1]
    delta = tick - np.where(first, 0, np.concatenate(([0], tick[:-1])))
    size = 1 + (delta >= 1 << 7) + (delta >= 1 << 14) + (delta >= 1 << 21)
    is_program = kind == _PROGRAM
    length = size + np.where(is_program, 2, 3)
    end = np.cumsum(length)
    begin = end - length
    out = np.zeros(int(end[-1]) if len(end) else 0, dtype=np.uint8)
    at = begin + size  # where the message starts
    # The delta time, 7 bits a byte, the last byte without the continuation bit; most
    # deltas are one byte, so the longer ones are picked out.
    out[at - 1] = delta & 0x7F
    for byte in range(1, 4):
        longer = np.flatnonzero(size > byte)
        out[at[longer] - 1 - byte] = (delta[longer] >> 7 * byte) & 0x7F | 0x80
    channel = np.array([layout.channel for layout in layouts], dtype=np.int64)[track]
    program = np.array([layout.program for layout in layouts], dtype=np.int64)[track]
    status = np.where(is_program, 0xC0, np.where(kind == _ON, 0x90, 0x80)) | channel
    out[at] = status
    out[at + 1] = np.where(is_program, program, (events >> 7) & 0x7F)
    note = ~is_program
    out[at[note] + 2] = events[note] & 0x7F
    track_end = np.searchsorted(track, np.arange(len(layouts)), side="right")
    return out, np.concatenate(([0], end))[track_end]


def _track(layout: TrackLayout, body: bytes) -> bytes:
    head = bytearray(b"\x00")
    head += _meta(0x03, layout.name.encode("utf-8"))
    head.append(0)
    head += bytes((0xC0 | layout.channel, layout.program))
    return _chunk(b"MTrk", bytes(head) + body + b"\x00\xff\x2f\x00")


def render_midi_with_stats(
    callback: NormalizedCallback, tempo: TempoMap = _DEFAULT_MAP, *, grid: str | None = None
) -> tuple[bytes, RenderStats]:
    """The MIDI file of a normalized callback by ``tempo``, and what it could not show as
    sent; ``grid`` (a :data:`QUANTIZE_GRIDS` key) snaps every note to that grid.

    Raises :class:`ValueError` for what no MIDI file can hold: more than
    :data:`MAX_INSTRUMENTS` tracks, or a time past 2**28 ticks (normalization drops those
    at 120 BPM; a faster map can reach it sooner).
    """
    instruments = callback.instruments
    if len(instruments) > MAX_INSTRUMENTS:
        raise ValueError(
            f"a MIDI file holds at most {MAX_INSTRUMENTS} instrument tracks; "
            f"this callback has {len(instruments)}"
        )
    step = None if grid is None else grid_step(grid)
    layouts = layout_tracks(instruments)
    notes = _columns(instruments, tempo, step)
    channels = np.array([layout.channel for layout in layouts], dtype=np.int64)
    events, stats = _resolve(notes, channels)
    events = np.sort(_with_program_changes(events, layouts))
    data, ends = _encode(events, layouts)
    tracks = [_conductor(tempo)]
    begin = 0
    for layout, end in zip(layouts, ends.tolist(), strict=True):
        tracks.append(_track(layout, data[begin:end].tobytes()))
        begin = end
    header = _chunk(b"MThd", struct.pack(">HHH", 1, len(tracks), TICKS_PER_QUARTER))
    return header + b"".join(tracks), stats


def render_midi(
    callback: NormalizedCallback, tempo: TempoMap = _DEFAULT_MAP, *, grid: str | None = None
) -> bytes:
    """Standard MIDI File (format 1) bytes for a normalized callback; same input, same bytes."""
    return render_midi_with_stats(callback, tempo, grid=grid)[0]
