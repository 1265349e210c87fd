"""General MIDI programs from instrument names."""

from __future__ import annotations

import pretty_midi
import pytest

from services.processor.gm import (
    DEFAULT_PROGRAM,
    GM_PROGRAM_NAMES,
    PERCUSSION_NAMES,
    name_key,
    sound_for,
)


class TestTable:
    def test_all_128_programs_distinct(self) -> None:
        """The table has 128 names whose keys are all different."""
        assert len(GM_PROGRAM_NAMES) == 128
        assert len({name_key(name) for name in GM_PROGRAM_NAMES}) == 128

    @pytest.mark.parametrize("program", range(128))
    def test_every_name_maps_to_its_program(self, program: int) -> None:
        """Each GM name gives its program number, melodic."""
        assert sound_for(GM_PROGRAM_NAMES[program]) == (program, False, True)

    @pytest.mark.parametrize("program", range(128))
    def test_agrees_with_pretty_midi_spelling(self, program: int) -> None:
        """An independently written table (pretty_midi's) gives the same programs."""
        assert sound_for(pretty_midi.program_to_instrument_name(program)).program == program


class TestMatching:
    @pytest.mark.parametrize(
        ("name", "program"),
        [
            ("Electric Bass (finger)", 33),
            ("electric bass finger", 33),
            ("ELECTRIC BASS (FINGER)", 33),
            ("ElectricBass(finger)", 33),
            ("  Electric   Bass - finger ", 33),
            ("Honky Tonk Piano", 3),
            ("SynthStrings 1", 50),
            ("Clavi", 7),
            ("Bag pipe", 109),
            ("Gun Shot", 127),
            ("Lead 8 (bass+lead)", 87),
            ("Lead 1", 80),
            ("FX 8 sci fi", 103),
            ("\uff36\uff49\uff4f\uff4c\uff49\uff4e", 40),  # full-width "Violin", NFKC-folded
        ],
    )
    def test_case_space_punctuation_insensitive(self, name: str, program: int) -> None:
        """Case, spaces, punctuation and width do not matter."""
        assert sound_for(name) == (program, False, True)

    @pytest.mark.parametrize("name", [*PERCUSSION_NAMES, "drums", "DRUMS", "drum kit"])
    def test_percussion(self, name: str) -> None:
        """Drums and other kit names are percussion (channel 10), program 0."""
        assert sound_for(name) == (0, True, True)

    @pytest.mark.parametrize("name", ["Steel Drums", "Taiko Drum", "Synth Drum", "Melodic Tom"])
    def test_gm_drum_sounds_stay_melodic(self, name: str) -> None:
        """GM programs named like drums are pitched sounds, not the percussion channel."""
        assert sound_for(name).is_drum is False

    @pytest.mark.parametrize("name", ["", "Theremin", "Electric Guitar", "Acoustic Guitar", "🎸"])
    def test_unknown_or_ambiguous(self, name: str) -> None:
        """Unknown (or ambiguous short) names get DEFAULT_PROGRAM, marked unknown."""
        assert sound_for(name) == (DEFAULT_PROGRAM, False, False)
