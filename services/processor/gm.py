"""General MIDI program numbers from the instrument names the provider sends.

The provider names instruments with General MIDI names (``"Electric Bass (finger)"``) plus
``"Drums"``, but spellings of the GM names differ between tables (``"SynthStrings 1"`` /
``"Synth Strings 1"``, ``"Clavi"`` / ``"Clavinet"``, ``"Bag pipe"`` / ``"Bagpipe"``), so
names are compared by a key that ignores case, spaces and punctuation.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_PROGRAM",
    "GM_PROGRAM_NAMES",
    "PERCUSSION_NAMES",
    "InstrumentSound",
    "name_key",
    "sound_for",
]

#: The 128 General MIDI Level 1 programs, index = program number (0-based).
GM_PROGRAM_NAMES: Final[tuple[str, ...]] = (
    # 0-7 piano
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano",
    "Honky-tonk Piano", "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
    # 8-15 chromatic percussion
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone",
    "Tubular Bells", "Dulcimer",
    # 16-23 organ
    "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ",
    "Accordion", "Harmonica", "Tango Accordion",
    # 24-31 guitar
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)",
    "Electric Guitar (clean)", "Electric Guitar (muted)", "Overdriven Guitar",
    "Distortion Guitar", "Guitar Harmonics",
    # 32-39 bass
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass",
    "Slap Bass 1", "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
    # 40-47 strings
    "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings",
    "Orchestral Harp", "Timpani",
    # 48-55 ensemble
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2",
    "Choir Aahs", "Voice Oohs", "Synth Voice", "Orchestra Hit",
    # 56-63 brass
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section",
    "Synth Brass 1", "Synth Brass 2",
    # 64-71 reed
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn",
    "Bassoon", "Clarinet",
    # 72-79 pipe
    "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle",
    "Ocarina",
    # 80-87 synth lead
    "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)",
    "Lead 5 (charang)", "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
    # 88-95 synth pad
    "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)",
    "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    # 96-103 synth effects
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)",
    "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
    # 104-111 ethnic
    "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai",
    # 112-119 percussive
    "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom",
    "Synth Drum", "Reverse Cymbal",
    # 120-127 sound effects
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring",
    "Helicopter", "Applause", "Gunshot",
)  # fmt: skip

#: Other spellings found in published GM tables (the GM 1 spec's own short names among them).
_ALIASES: Final[dict[str, int]] = {
    "Clavi": 7,
    "Synth Choir": 54,
    "Voice Aahs": 52,
    "Contra Bass": 43,
    "Orchestral Harp": 46,
    "Harp": 46,
    "Piano": 0,
    "Grand Piano": 0,
    "Shehnai": 111,
    "Tinkerbell": 112,
    "Wood Block": 115,
    "Steel Drum": 114,
}

#: Names that mean a drum kit: played on channel 10 (index 9), program 0 (standard kit).
PERCUSSION_NAMES: Final[tuple[str, ...]] = (
    "Drums", "Drum", "Drum Kit", "Drum Set", "Drumset", "Drumkit", "Percussion",
    "Standard Kit", "Standard Drum Kit", "Kit", "Drums (percussion)",
)  # fmt: skip

#: Program of a name found nowhere: 0 (Acoustic Grand Piano), what every GM synthesizer
#: plays on a channel that never got a program change.
DEFAULT_PROGRAM: Final = 0


class InstrumentSound(NamedTuple):
    program: int
    is_drum: bool
    #: False when the name matched nothing and :data:`DEFAULT_PROGRAM` was used.
    known: bool


def name_key(name: str) -> str:
    """Case-, space- and punctuation-insensitive form: only letters and digits, folded."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in folded if char.isalnum())


def _strip_parenthesis(name: str) -> str:
    head, _, _ = name.partition("(")
    return head


def _build_table() -> dict[str, InstrumentSound]:
    table: dict[str, InstrumentSound] = {}
    # Short forms without the parenthesised variant ("Lead 1", "Pad 3", "FX 8"), only
    # where they are unambiguous ("Electric Guitar" names three programs: not added).
    short: dict[str, set[int]] = {}
    for program, name in enumerate(GM_PROGRAM_NAMES):
        if "(" in name:
            short.setdefault(name_key(_strip_parenthesis(name)), set()).add(program)
    for key, programs in short.items():
        if len(programs) == 1:
            table[key] = InstrumentSound(programs.pop(), False, True)
    for name, program in _ALIASES.items():
        table[name_key(name)] = InstrumentSound(program, False, True)
    for program, name in enumerate(GM_PROGRAM_NAMES):
        table[name_key(name)] = InstrumentSound(program, False, True)
    for name in PERCUSSION_NAMES:
        table[name_key(name)] = InstrumentSound(0, True, True)
    return table


_TABLE: Final = _build_table()
_UNKNOWN: Final = InstrumentSound(DEFAULT_PROGRAM, False, False)


@functools.lru_cache(maxsize=1024)
def sound_for(name: str) -> InstrumentSound:
    """The GM program (and whether it is a drum kit) for an instrument name (cached: the
    tempo estimate and the renderer both ask, for every callback, about the same few
    names)."""
    return _TABLE.get(name_key(name), _UNKNOWN)
