"""Standard MIDI File bytes from normalized notes: a pure, deterministic function."""

from __future__ import annotations

import struct

from .normalize import Instrument, NormalizedCallback

__all__ = ["TEMPO_BPM", "TICKS_PER_QUARTER", "TrackLayout", "layout_tracks", "render_midi"]

TICKS_PER_QUARTER = 960
TEMPO_BPM = 120.0
TICKS_PER_SECOND = TICKS_PER_QUARTER * TEMPO_BPM / 60  # 1920: exact for the 1/192 s grid
DRUM_CHANNEL = 9


class TrackLayout(tuple[str, int, int, bool]):
    """(name, program, channel, is_drum) of one instrument's track."""

    @property
    def name(self) -> str:
        return self[0]

    @property
    def program(self) -> int:
        return self[1]

    @property
    def channel(self) -> int:
        return self[2]

    @property
    def is_drum(self) -> bool:
        return self[3]


def layout_tracks(instruments: tuple[Instrument, ...]) -> list[TrackLayout]:
    layouts = []
    melodic = [c for c in range(16) if c != DRUM_CHANNEL]
    next_melodic = 0
    for instrument in instruments:
        if instrument.name.strip().lower() == "drums":
            layouts.append(TrackLayout((instrument.name, 0, DRUM_CHANNEL, True)))
        else:
            channel = melodic[next_melodic % len(melodic)]
            next_melodic += 1
            layouts.append(TrackLayout((instrument.name, 0, channel, False)))
    return layouts


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, bytes]]) -> bytes:
    body = bytearray()
    last = 0
    for tick, data in events:
        body += _vlq(tick - last) + data
        last = tick
    body += _vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def render_midi(callback: NormalizedCallback) -> bytes:
    tempo = round(60_000_000 / TEMPO_BPM)
    conductor = [
        (0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")),
        (0, b"\xff\x58\x04\x04\x02\x18\x08"),
    ]
    tracks = [_track(conductor)]
    for instrument, layout in zip(callback.instruments, layout_tracks(callback.instruments), strict=True):
        name = instrument.name.encode("utf-8")
        events: list[tuple[int, int, bytes]] = [(0, 0, b"\xff\x03" + _vlq(len(name)) + name)]
        if not layout.is_drum:
            events.append((0, 1, bytes([0xC0 | layout.channel, layout.program])))
        for note in instrument.notes:
            on = round(note.start * TICKS_PER_SECOND)
            off = max(on + 1, round(note.end * TICKS_PER_SECOND))
            events.append((on, 3, bytes([0x90 | layout.channel, note.pitch, note.midi_velocity])))
            events.append((off, 2, bytes([0x80 | layout.channel, note.pitch, 0])))
        events.sort(key=lambda e: (e[0], e[1]))
        tracks.append(_track([(tick, data) for tick, _, data in events]))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), TICKS_PER_QUARTER)
    return header + b"".join(tracks)
