"""MuseScore and FluidSynth as the tests and the bench open our MIDI files with: Debian's
``musescore3`` converting headless to MusicXML, and FluidSynth rendering with the
processor's own launcher (:func:`services.processor.preview.render_audio`).

Both run through :func:`services.common.programs.run_program`: found first, bounded in time,
failures as one-line :class:`~services.common.errors.ProgramError` messages.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

from services.common.errors import ProgramError
from services.common.programs import find_program, run_program
from services.common.settings import ProcessorSettings
from services.processor.preview import preview_config, render_audio

__all__ = [
    "MUSESCORE",
    "TIMEOUT_SECONDS",
    "fluidsynth_missing",
    "musescore_missing",
    "musicxml_of",
    "wav_of",
]

#: Debian's MuseScore 3 (package musescore3).
MUSESCORE: Final = "mscore3"
#: A first start of MuseScore builds its font cache: seconds, not minutes.
TIMEOUT_SECONDS: Final = 120.0
#: MuseScore's MIDI import options left at their defaults (what a user gets), except that
#: nothing is read from or written to the user's own configuration.
_HEADLESS_ENV: Final = {"QT_QPA_PLATFORM": "offscreen"}


def musescore_missing() -> str | None:
    """Why MuseScore cannot run here, or ``None`` when it can."""
    try:
        find_program(MUSESCORE)
    except ProgramError as exc:
        return f"{exc} (Debian package musescore3; scripts/bootstrap.sh --test installs it)"
    return None


def fluidsynth_missing() -> str | None:
    """Why FluidSynth with the configured SoundFont cannot run here, or ``None``."""
    config, reason = preview_config(ProcessorSettings(previews="auto"))
    if config is None:
        return (
            f"{reason} (Debian packages fluidsynth and fluid-soundfont-gm; "
            "scripts/bootstrap.sh --test installs them)"
        )
    return None


def musicxml_of(midi: bytes, *, timeout_seconds: float = TIMEOUT_SECONDS) -> bytes:
    """``midi`` imported by MuseScore 3 and exported as MusicXML (uncompressed).

    Headless: Qt's ``offscreen`` platform needs no display; a fresh home and runtime folder
    keep MuseScore's settings, workspaces and font cache out of the user's.
    """
    find_program(MUSESCORE)
    with tempfile.TemporaryDirectory(prefix="musescore-") as folder:
        home = Path(folder)
        source, target = home / "in.mid", home / "out.musicxml"
        source.write_bytes(midi)
        runtime = home / "runtime"
        runtime.mkdir(mode=0o700)
        env = {**_HEADLESS_ENV, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
        run_program([MUSESCORE, "-o", target, source], timeout=timeout_seconds, env=env, cwd=home)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise ProgramError(f"{MUSESCORE} exported nothing (exit status 0)") from None


def wav_of(midi: bytes, *, timeout_seconds: float = TIMEOUT_SECONDS) -> bytes:
    """``midi`` rendered by FluidSynth with the processor's default SoundFont, as WAV."""
    settings = ProcessorSettings()
    return render_audio(
        midi,
        fluidsynth=find_program(settings.fluidsynth),
        soundfont=settings.soundfont,
        file_type="wav",
        timeout_seconds=timeout_seconds,
    )
