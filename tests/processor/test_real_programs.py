"""Our MIDI files opened by real programs: MuseScore 3 imports them (headless, to MusicXML)
with the bars and tempo the file says; FluidSynth renders them to audio as long as the notes.

The expectations are read from each file (with mido), not assumed: the same checks hold
whatever tempo map the renderer writes. Skipped only where the programs are absent
(``scripts/bootstrap.sh --test`` installs them, so CI runs these).
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction

import mido
import numpy as np
import pytest
import soundfile

from devenv.programs import fluidsynth_missing, musescore_missing, musicxml_of, wav_of
from devenv.songs import SongSpec, make_song
from services.processor.app import Processed, process_callback

MUSESCORE_MISSING = musescore_missing()
FLUIDSYNTH_MISSING = fluidsynth_missing()
needs_musescore = pytest.mark.skipif(MUSESCORE_MISSING is not None, reason=str(MUSESCORE_MISSING))
needs_fluidsynth = pytest.mark.skipif(
    FLUIDSYNTH_MISSING is not None, reason=str(FLUIDSYNTH_MISSING)
)

#: Below this level (dBFS) a sample counts as silence: FluidSynth's noise floor is far
#: lower, and a note at the smallest velocity we write is far louder.
SILENCE_DBFS = -60.0
#: The last sound may outlast the last note-off by the release of its instrument. Measured
#: with Fluid R3 on these songs: 0.07-0.25 s to fall below -60 dBFS. 1.5 s leaves room for
#: slower releases and still catches a tempo map 10 % off on these 30 s songs (3 s).
RELEASE_SECONDS = 1.5
#: FluidSynth starts a note at the next 64-sample block (1.5 ms at 44.1 kHz); a sample's
#: attack takes a few milliseconds to rise above the silence level.
ONSET_SECONDS = 0.05
#: FluidSynth renders until every voice has finished its release (to -96 dB), which for
#: Fluid R3's slowest instruments takes seconds past the last note-off.
RENDER_TAIL_SECONDS = 10.0


#: Known-answer songs (devenv/songs.py) the renderer writes with estimated tempo maps: a
#: steady one, a fast one with jitter and a pickup, a slow swung one after a lead-in, a
#: waltz, drums only, and a tempo change.
SPECS = {
    "90bpm": SongSpec(bpm=90.0, seconds=30.0, seed=1),
    "150bpm-jitter-pickup": SongSpec(
        bpm=150.0, seconds=30.0, seed=2, jitter_ms=10.0, pickup=1, lead_in=0.4
    ),
    "72bpm-swing-lead-in": SongSpec(
        bpm=72.0, seconds=30.0, seed=3, swing=0.5, lead_in=1.3, pickup=3
    ),
    "waltz-132bpm": SongSpec(bpm=132.0, seconds=30.0, seed=4, beats_per_bar=3),
    "drums-only-110bpm": SongSpec(bpm=110.0, seconds=30.0, seed=5, melodic=False),
    "96-then-132bpm": SongSpec(
        bpm=96.0, change_bpm=132.0, change_bar=12, seconds=60.0, seed=101, jitter_ms=8.0
    ),
}
#: (id, body): the songs' callbacks.
SONGS = [(name, make_song(spec).body()) for name, spec in SPECS.items()]


def rendered(body: bytes) -> bytes:
    processed = process_callback(body)
    assert isinstance(processed, Processed) and processed.midi is not None
    return processed.midi


@dataclass(frozen=True)
class Bars:
    """A score's bar grid: how many bars, and at which bar each tempo and meter starts."""

    count: int
    #: (bar index, whole BPM), consecutive repeats left out: MuseScore rounds each tempo
    #: to a whole BPM and leaves out a tempo equal to the one before.
    tempos: list[tuple[int, int]]
    #: (bar index, numerator, denominator), consecutive repeats left out; a pickup bar
    #: counts in the meter that follows it, as in notation.
    meters: list[tuple[int, int, int]]
    #: The length of a pickup bar (shorter than the next bar) in quarters, or None.
    pickup: Fraction | None


def _collapse(items: list[tuple[int, *tuple[float, ...]]]) -> list[tuple[int, *tuple[float, ...]]]:
    out: list[tuple[int, *tuple[float, ...]]] = []
    for item in items:
        if not out or out[-1][1:] != item[1:]:
            out.append(item)
    return out


def whole_bpm(microseconds_per_quarter: int) -> int:
    """A tempo event's BPM rounded half up, as MuseScore's import does."""
    return math.floor(60_000_000 / microseconds_per_quarter + 0.5)


def file_bars(midi: bytes) -> Bars:
    """What the file says: its meters cut it into bars up to the last note-off."""
    read = mido.MidiFile(file=io.BytesIO(midi))
    merged = list(mido.merge_tracks(read.tracks))
    now, end = 0, 0
    tempos: list[tuple[int, int]] = []
    meters: list[tuple[int, int, int]] = []
    for message in merged:
        now += message.time
        if message.type == "set_tempo":
            tempos.append((now, message.tempo))
        elif message.type == "time_signature":
            meters.append((now, message.numerator, message.denominator))
        elif message.type in ("note_on", "note_off"):
            end = max(end, now)
    assert meters and meters[0][0] == 0, "a file without a meter at tick 0"
    starts: list[int] = []  # bar start ticks
    meter_at: list[tuple[int, int]] = []
    tick, index = 0, 0
    while tick < end or not starts:
        while index + 1 < len(meters) and meters[index + 1][0] <= tick:
            index += 1
        _, numerator, denominator = meters[index]
        starts.append(tick)
        meter_at.append((numerator, denominator))
        tick += numerator * read.ticks_per_beat * 4 // denominator

    def bar_of(at: int) -> int:
        return max(i for i, start in enumerate(starts) if start <= at)

    pickup = None
    if len(meter_at) > 1 and Fraction(*meter_at[0]) < Fraction(*meter_at[1]):
        pickup = Fraction(4 * meter_at[0][0], meter_at[0][1])
        meter_at[0] = meter_at[1]
    return Bars(
        count=len(starts),
        tempos=_collapse([(bar_of(at), whole_bpm(tempo)) for at, tempo in tempos]),
        meters=_collapse([(i, *meter) for i, meter in enumerate(meter_at)]),
        pickup=pickup,
    )


def score_bars(musicxml: bytes) -> Bars:
    """What MuseScore made of it: the first part's measures, and every tempo mark."""
    root = ET.fromstring(musicxml)
    parts = root.findall("part")
    assert parts, "MusicXML without parts"
    measures = parts[0].findall("measure")
    meters = []
    for index, measure in enumerate(measures):
        time = measure.find("attributes/time")
        if time is not None:
            beats, beat_type = time.findtext("beats", ""), time.findtext("beat-type", "")
            meters.append((index, int(beats), int(beat_type)))
    tempos = sorted(  # stable: a measure's tempos stay in their order
        (
            (index, round(float(sound.attrib["tempo"])))
            for part in parts
            for index, measure in enumerate(part.findall("measure"))
            for sound in measure.iter("sound")
            if "tempo" in sound.attrib
        ),
        key=lambda item: item[0],
    )
    pickup = None
    if measures and measures[0].get("implicit") == "yes":  # MusicXML's pickup measure
        pickup = _quarters(measures[0])
    return Bars(
        count=len(measures), tempos=_collapse(tempos), meters=_collapse(meters), pickup=pickup
    )


def _quarters(measure: ET.Element) -> Fraction:
    """How long a MusicXML measure is, in quarters: the furthest its cursor moves."""
    divisions = int(measure.findtext("attributes/divisions", "1"))
    cursor = furthest = 0
    for element in measure:
        duration = int(element.findtext("duration", "0"))
        if element.tag == "backup":
            cursor -= duration
        elif element.tag == "forward" or (element.tag == "note" and element.find("chord") is None):
            cursor += duration
        furthest = max(furthest, cursor)
    return Fraction(furthest, divisions)


@needs_musescore
class TestMuseScore:
    @pytest.mark.parametrize("body", [body for _, body in SONGS], ids=[name for name, _ in SONGS])
    def test_bars_meter_and_tempo_as_the_file_says(self, body: bytes) -> None:
        """MuseScore's import has the file's bar count, meters, pickup and tempos (to its
        whole-BPM rounding) at the bars where the file puts them."""
        midi = rendered(body)
        assert score_bars(musicxml_of(midi)) == file_bars(midi)

    @pytest.mark.parametrize(
        ("name", "tempos"), [("90bpm", [(0, 90)]), ("96-then-132bpm", [(0, 96), (12, 132)])]
    )
    def test_a_song_opens_at_its_own_tempo(self, name: str, tempos: list[tuple[int, int]]) -> None:
        """A user opening a 90 BPM song sees 90 BPM, and a change where the music changes
        (bar 12 of the song), not the 120 BPM every file said before."""
        score = score_bars(musicxml_of(rendered(dict(SONGS)[name])))
        assert score.tempos == tempos


@dataclass(frozen=True)
class Sound:
    """When a rendering is audible, in seconds."""

    first: float
    last: float
    duration: float


def audible(wav: bytes) -> Sound:
    samples, rate = soundfile.read(io.BytesIO(wav), always_2d=True)
    loud = np.flatnonzero(np.abs(samples).max(axis=1) > 10 ** (SILENCE_DBFS / 20))
    assert loud.size, "the rendering is silent"
    return Sound(loud[0] / rate, loud[-1] / rate, len(samples) / rate)


def note_times(body: bytes) -> tuple[float, float, float]:
    """First start, last start and last end of the callback's notes, in seconds: what the
    audio must match, whatever tempo map the file uses to place them."""
    processed = process_callback(body)
    assert isinstance(processed, Processed)
    notes = [note for instrument in processed.normalized.instruments for note in instrument.notes]
    return min(n.start for n in notes), max(n.start for n in notes), max(n.end for n in notes)


@needs_fluidsynth
class TestFluidSynth:
    @pytest.mark.parametrize("body", [body for _, body in SONGS], ids=[name for name, _ in SONGS])
    def test_audio_spans_the_notes(self, body: bytes) -> None:
        """Sound starts with the callback's first note, ends within a release of its last
        note's end, and the audio runs through that end (plus FluidSynth's release tail)."""
        first_on, last_on, last_off = note_times(body)
        sound = audible(wav_of(rendered(body)))
        assert first_on <= sound.first + 0.002 <= first_on + ONSET_SECONDS
        assert last_on <= sound.last <= last_off + RELEASE_SECONDS
        assert last_off <= sound.duration <= last_off + RENDER_TAIL_SECONDS
