"""The README's before/after: one song's MIDI files as a DAW lays them on its bar grid.

``python -m devenv.bar_grid [--check]`` writes (or checks) ``docs/images/bar-grid.svg``.
Both panels are drawn from the files' bytes as read back by mido, in ticks (what a DAW's
grid counts), not from the notes in seconds: the top file is what the processor wrote
before tempo maps (120 BPM from 0 s), the bottom one what it writes now.
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import mido

from services.processor.app import Processed, process_callback
from services.processor.render import render_midi

from .songs import SongSpec, make_song

__all__ = ["IMAGE", "main", "render_svg"]

IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "bar-grid.svg"
#: The song: a band at 97 BPM, a lead-in of 0.41 s and a one-beat pickup before the first
#: downbeat, with human timing; eight bars are drawn.
SONG = SongSpec(bpm=97.0, seconds=24.0, seed=4, jitter_ms=10.0, lead_in=0.41, pickup=1)
BARS_SHOWN = 8
WIDTH, LANE, TOP = 960, 150, 34
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")


@dataclass(frozen=True)
class Panel:
    title: str
    ticks_per_quarter: int
    bars: list[int]  # ticks where bars start
    notes: list[tuple[int, int, int, int]]  # (track, pitch, on, off) in ticks


def read_panel(title: str, midi: bytes) -> Panel:
    """Bars and notes in ticks, as mido reads the file."""
    parsed = mido.MidiFile(file=io.BytesIO(midi))
    conductor, *tracks = parsed.tracks
    signatures, now = [], 0
    for message in conductor:
        now += message.time
        if message.type == "time_signature":
            signatures.append(
                (now, message.numerator * parsed.ticks_per_beat * 4 // message.denominator)
            )
    notes: list[tuple[int, int, int, int]] = []
    for index, track in enumerate(tracks):
        now, sounding = 0, {}
        for message in track:
            now += message.time
            if message.type == "note_on" and message.velocity:
                sounding[message.note] = now
            elif message.type in ("note_on", "note_off") and message.note in sounding:
                notes.append((index, message.note, sounding.pop(message.note), now))
    bars, tick = [], 0
    end = max((off for *_, off in notes), default=0)
    while tick <= end:
        bars.append(tick)
        tick += [length for at, length in signatures if at <= tick][-1]
    return Panel(title, parsed.ticks_per_beat, bars, notes)


def _panel_svg(panel: Panel, top: int) -> list[str]:
    last = panel.bars[min(BARS_SHOWN, len(panel.bars) - 1)]
    scale = (WIDTH - 20) / last
    pitches = [pitch for _, pitch, *_ in panel.notes] or [60]
    low, high = min(pitches), max(pitches)
    row = (LANE - 10) / (high - low + 1)
    out = [
        f'<text x="10" y="{top - 8}" font-size="13" fill="#1f2328">{escape(panel.title)}</text>',
        f'<rect x="10" y="{top}" width="{WIDTH - 20}" height="{LANE}" fill="#f6f8fa"/>',
    ]
    for beat in range(0, last, panel.ticks_per_quarter):
        x = 10 + beat * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + LANE}" stroke="#e1e4e8"/>'
        )
    for number, tick in enumerate(panel.bars[: BARS_SHOWN + 1], start=1):
        x = 10 + tick * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + LANE}" stroke="#8c959f"/>'
        )
        if number <= BARS_SHOWN:
            label = f'x="{x + 3:.1f}" y="{top + 11}" font-size="10" fill="#57606a"'
            out.append(f"<text {label}>{number}</text>")
    for track, pitch, on, off in panel.notes:
        if on >= last:
            continue
        x, width = 10 + on * scale, max(2.0, (min(off, last) - on) * scale)
        y = top + 5 + (high - pitch) * row
        colour = COLOURS[track % len(COLOURS)]
        box = f'x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{max(row - 1, 1.5):.1f}"'
        out.append(f'<rect {box} fill="{colour}"/>')
    return out


def render_svg(body: bytes) -> str:
    """The two panels of one callback body's files, as an SVG document."""
    processed = process_callback(body)
    if not isinstance(processed, Processed) or processed.midi is None or processed.tempo is None:
        raise ValueError("the song did not render to a MIDI file")
    before = read_panel(
        "Before: every file at 120 BPM, bars from 0 s", render_midi(processed.normalized)
    )
    tempo = processed.tempo
    title = f"After: the estimated tempo map ({tempo.bpm:.1f} BPM, bar 2 on the first downbeat)"
    after = read_panel(title, processed.midi)
    height = 2 * (LANE + TOP) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="system-ui, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        *_panel_svg(before, TOP),
        *_panel_svg(after, 2 * TOP + LANE),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.bar_grid", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the image is out of date")
    args = parser.parse_args(argv)
    svg = render_svg(make_song(SONG).body())
    if args.check:
        if not IMAGE.exists() or IMAGE.read_text() != svg:
            print(f"{IMAGE.name} is out of date: run python -m devenv.bar_grid", file=sys.stderr)
            return 1
        print(f"{IMAGE.name} is up to date")
        return 0
    IMAGE.write_text(svg)
    print(f"wrote {IMAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
