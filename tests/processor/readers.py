"""Our MIDI files read back by libraries that did not write them: mido and symusic.

mido is pure Python; symusic parses with its own C++ reader (minimidi). Both yield the
same plain tuples so a test can compare them with each other and with what was sent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import mido
import symusic


@dataclass(frozen=True, order=True)
class ReadNote:
    track: int  # 0-based instrument index (the conductor track is not counted)
    pitch: int
    on: int
    off: int
    velocity: int
    program: int
    channel: int | None  # symusic does not expose channels: None there


@dataclass
class MidoFile:
    ticks_per_quarter: int
    file_type: int
    tempos: list[int]
    time_signatures: list[tuple[int, int]]
    names: list[str]
    notes: list[ReadNote]
    #: Problems seen while pairing note-ons and note-offs within a track.
    problems: list[str]


def read_with_mido(data: bytes) -> MidoFile:
    midi = mido.MidiFile(file=io.BytesIO(data), charset="utf-8")
    conductor, *tracks = midi.tracks
    tempos = [m.tempo for m in conductor if m.type == "set_tempo"]
    signatures = [(m.numerator, m.denominator) for m in conductor if m.type == "time_signature"]
    names, notes, problems = [], [], []
    for index, track in enumerate(tracks):
        now, name = 0, ""
        program: dict[int, int] = {}
        sounding: dict[tuple[int, int], tuple[int, int, int]] = {}
        for message in track:
            now += message.time
            if message.type == "track_name":
                name = message.name
            elif message.type == "program_change":
                program[message.channel] = message.program
            elif message.type == "note_on" and message.velocity > 0:
                key = (message.channel, message.note)
                if key in sounding:
                    problems.append(f"track {index}: note {key} on again at {now}")
                sounding[key] = (now, message.velocity, program.get(message.channel, -1))
            elif message.type in ("note_on", "note_off"):
                key = (message.channel, message.note)
                if key not in sounding:
                    problems.append(f"track {index}: note-off {key} at {now} with no note on")
                    continue
                on, velocity, prog = sounding.pop(key)
                notes.append(ReadNote(index, message.note, on, now, velocity, prog, key[0]))
        problems.extend(f"track {index}: {key} never ends" for key in sounding)
        names.append(name)
    return MidoFile(midi.ticks_per_beat, midi.type, tempos, signatures, names, notes, problems)


def merged_playback_problems(data: bytes) -> list[str]:
    """Play every track merged, as a sequencer does: any stuck or swallowed note."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    sounding: set[tuple[int, int]] = set()
    problems = []
    now = 0
    for message in mido.merge_tracks(midi.tracks):
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            key = (message.channel, message.note)
            if key in sounding:
                problems.append(f"{key} struck again at tick {now} while sounding")
            sounding.add(key)
        elif message.type in ("note_on", "note_off"):
            key = (message.channel, message.note)
            if key not in sounding:
                problems.append(f"{key} released at tick {now} while silent")
            sounding.discard(key)
    problems.extend(f"{key} stuck at the end" for key in sorted(sounding))
    return problems


#: (track name, is drum, pitch, on, off, velocity, program): what both readers can tell.
Comparable = tuple[str, bool, int, int, int, int, int]


def comparable_from_mido(read: MidoFile) -> list[Comparable]:
    return sorted(
        (read.names[n.track], n.channel == 9, n.pitch, n.on, n.off, n.velocity, n.program)
        for n in read.notes
    )


def read_with_symusic(data: bytes) -> tuple[int, list[Comparable]]:
    """Ticks per quarter and every note as symusic sees it.

    symusic leaves out tracks without notes and does not expose channels, so its notes are
    compared by track name (and the drum flag it derives from channel 10).
    """
    score = symusic.Score.from_midi(data)
    notes = [
        (track.name, bool(track.is_drum), note.pitch, note.time, note.time + note.duration,
         note.velocity, track.program)
        for track in score.tracks
        for note in track.notes
    ]  # fmt: skip
    return score.ticks_per_quarter, sorted(notes)
