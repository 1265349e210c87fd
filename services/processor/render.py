"""Standard MIDI File bytes from normalized notes: a pure, deterministic, fast function.

The file is what users come for, so its rules are fixed and documented (see
``docs/processing.md``): format 1, a conductor track (the tempo map's tempos and time
signatures, :mod:`.tempo_map`), one track per instrument; 960 ticks a quarter, every note
within half a tick (under 1 ms) of its time in seconds; General MIDI programs from the
instrument names; drums on channel 10; same-pitch overlaps on one channel cut so that no
note is stuck or swallowed. The optional quantized variant snaps every note to a grid of
the same map.

The writer is hand-rolled (no MIDI library at run time): notes become packed integers that
sort in file order, which keeps 100 000 notes well under a second on one core.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

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


def _note_ticks(instrument: Instrument, tempo: TempoMap) -> list[tuple[int, int]]:
    """Each note's (on, off) ticks by the map; a note shorter than half a tick gets one."""
    ticks: list[tuple[int, int]] = []
    append = ticks.append
    if not tempo.steady:
        to_ticks = tempo.to_ticks
        for note in instrument.notes:
            on, off = to_ticks(note.start), to_ticks(note.end)
            append((on, off if off > on else on + 1))
        return ticks
    # One tempo: the same arithmetic inline (this loop is most of the renderer's time).
    tps = TICKS_PER_QUARTER * _US / tempo.changes[0].microseconds_per_quarter
    floor = math.floor
    for note in instrument.notes:
        scaled = note.start * tps
        on = floor(scaled + 0.5)
        if abs(abs(scaled - on) - 0.5) < _TIE_WINDOW:
            on = tempo.to_ticks(note.start)
        scaled = note.end * tps
        off = floor(scaled + 0.5)
        if abs(abs(scaled - off) - 0.5) < _TIE_WINDOW:
            off = tempo.to_ticks(note.end)
        append((on, off if off > on else on + 1))
    return ticks


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


def _snap(ticks: list[tuple[int, int]], step: int) -> list[tuple[int, int]]:
    """Every on and off to the nearest grid line (ties later); a note keeps one step."""
    half = step // 2
    snapped = []
    for on, off in ticks:
        on = (on + half) // step * step
        off = (off + half) // step * step
        snapped.append((on, off if off > on else on + step))
    return snapped


def _note_keys(
    instrument: Instrument, ticks: list[tuple[int, int]], track: int, track_bits: int
) -> list[int]:
    """One int per note that sorts by pitch, start, longest first, track, loudest first.

    Packed ints instead of tuples: they sort faster and the garbage collector ignores them.
    """
    keys: list[int] = []
    append = keys.append
    for note, (on, off) in zip(instrument.notes, ticks, strict=True):
        if off > _TICK_MASK:
            raise ValueError(
                f"a note ending at {note.end} s is beyond what the file can place "
                f"({_TICK_MASK} ticks); normalize() drops such notes"
            )
        append(
            (((((note.pitch << _TICK_BITS | on) << _TICK_BITS) | (_TICK_MASK - off)) << track_bits
              | track) << 7) | (127 - note.midi_velocity)
        )  # fmt: skip
    return keys


def _resolve_channel(keys: list[int], track_bits: int, per_track: list[list[int]]) -> RenderStats:
    """Resolve same-pitch overlaps on one channel; append each track's events to its list.

    Sorted by pitch, start, longest first: a note starting on the same tick as the one
    before is not written (the first, longest, one is); a note still sounding when the next
    one starts ends there. When the next note is in an *earlier* track, a player that merges
    tracks (earlier track first at equal ticks) would see its note-on before this note-off,
    so this note ends one tick earlier; if that leaves nothing, it is not written.

    Events are ints ``tick << 16 | kind << 14 | pitch << 7 | velocity``: sorted, they are in
    file order (note-offs, then program changes, then note-ons at equal ticks).
    """
    keys.sort()
    track_mask = (1 << track_bits) - 1
    start_shift = 7 + track_bits + _TICK_BITS  # key >> start_shift == pitch << 28 | on
    cut = merged = 0
    count = len(keys)
    i = 0
    while i < count:
        key = keys[i]
        start_key = key >> start_shift
        j = i + 1
        while j < count and keys[j] >> start_shift == start_key:
            j += 1
        merged += j - i - 1
        track = (key >> 7) & track_mask
        off = _TICK_MASK - ((key >> (7 + track_bits)) & _TICK_MASK)
        on = start_key & _TICK_MASK
        pitch = start_key >> _TICK_BITS
        if j < count:
            following = keys[j]
            following_start = following >> start_shift
            if following_start >> _TICK_BITS == pitch:
                next_on = following_start & _TICK_MASK
                limit = next_on - 1 if (following >> 7) & track_mask < track else next_on
                if off > limit:
                    off = limit
                    if off <= on:
                        merged += 1
                        i = j
                        continue
                    cut += 1
        events = per_track[track]
        events.append((on << 2 | _ON) << 14 | pitch << 7 | (127 - (key & 0x7F)))
        events.append((off << 2 | _OFF) << 14 | pitch << 7 | 0x40)
        i = j
    return RenderStats(notes_cut=cut, notes_merged=merged)


def _message(low: int, channel: int, program: int) -> bytes:
    """The channel message of an event's low 16 bits (kind, pitch, velocity)."""
    kind = low >> 14
    if kind == _ON:
        return bytes((0x90 | channel, (low >> 7) & 0x7F, low & 0x7F))
    if kind == _OFF:
        return bytes((0x80 | channel, (low >> 7) & 0x7F, low & 0x7F))
    return bytes((0xC0 | channel, program))


def _track(name: str, layout: TrackLayout, events: list[int]) -> bytes:
    channel, program = layout.channel, layout.program
    if layout.shares_channel_with_other_program:
        # Another program plays on this channel: restore ours before each note-on tick.
        on_ticks = {event >> 16 for event in events if (event >> 14) & 3 == _ON}
        events.extend((tick << 2 | _PROGRAM) << 14 for tick in on_ticks)
    events.sort()
    body = bytearray(b"\x00")
    body += _meta(0x03, name.encode("utf-8"))
    body.append(0)
    body += bytes((0xC0 | channel, program))
    messages: dict[int, bytes] = {}
    last = 0
    for event in events:
        delta = (event >> 16) - last
        if delta < 0x80:
            body.append(delta)
        elif delta < 0x4000:
            body.append(0x80 | delta >> 7)
            body.append(delta & 0x7F)
        else:
            body += _vlq(delta)
        last += delta
        low = event & 0xFFFF
        message = messages.get(low)
        if message is None:
            message = messages[low] = _message(low, channel, program)
        body += message
    body += b"\x00\xff\x2f\x00"
    return _chunk(b"MTrk", body)


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
    track_bits = max(1, len(instruments).bit_length())
    by_channel: dict[int, list[int]] = {}
    for track, (instrument, layout) in enumerate(zip(instruments, layouts, strict=True)):
        ticks = _note_ticks(instrument, tempo)
        if step is not None:
            ticks = _snap(ticks, step)
        keys = _note_keys(instrument, ticks, track, track_bits)
        by_channel.setdefault(layout.channel, []).extend(keys)
    per_track: list[list[int]] = [[] for _ in instruments]
    cut = merged = 0
    for channel in sorted(by_channel):
        stats = _resolve_channel(by_channel[channel], track_bits, per_track)
        cut += stats.notes_cut
        merged += stats.notes_merged
    tracks = [_conductor(tempo)]
    for instrument, layout, events in zip(instruments, layouts, per_track, strict=True):
        tracks.append(_track(instrument.name, layout, events))
    header = _chunk(b"MThd", struct.pack(">HHH", 1, len(tracks), TICKS_PER_QUARTER))
    return header + b"".join(tracks), RenderStats(notes_cut=cut, notes_merged=merged)


def render_midi(
    callback: NormalizedCallback, tempo: TempoMap = _DEFAULT_MAP, *, grid: str | None = None
) -> bytes:
    """Standard MIDI File (format 1) bytes for a normalized callback; same input, same bytes."""
    return render_midi_with_stats(callback, tempo, grid=grid)[0]
