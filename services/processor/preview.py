"""Audio previews: a task's MIDI file rendered by FluidSynth to Ogg Vorbis, for listeners
without a DAW and for the console.

Ogg Vorbis because this FluidSynth writes it itself (``-T oga``, through libsndfile): one
process, no temporary WAV and no second encoder, and Chromium- and Firefox-based browsers
play it in an ``<audio>`` element. (MP3, which every browser plays, would need a WAV piped
into Debian's ``lame``: FluidSynth's own MPEG output is refused by this build.)

The synthesis is deterministic; only the Ogg stream's serial number is random, so it is
replaced by one derived from the MIDI file: the same file renders to the same preview bytes,
as the same body renders to the same MIDI file.
"""

from __future__ import annotations

import io
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mutagen import MutagenError
from mutagen.ogg import OggPage

from services.common.errors import ConfigError, ProgramError
from services.common.events import sha256_hex
from services.common.programs import find_program, run_program
from services.common.settings import ProcessorSettings

__all__ = [
    "EXTENSION",
    "FILE_TYPE",
    "MEDIA_TYPE",
    "SAMPLE_RATE",
    "Preview",
    "PreviewConfig",
    "preview_config",
    "render_audio",
    "render_preview",
]

MEDIA_TYPE: Final = "audio/ogg"
EXTENSION: Final = "ogg"
#: FluidSynth's name of the Ogg file type (libsndfile then encodes Vorbis).
FILE_TYPE: Final = "oga"
#: CD rate: what FluidSynth and the SoundFonts' samples are made for.
SAMPLE_RATE: Final = 44_100
#: A RIFF file whose form type is ``sfbk`` is a SoundFont 2 (or 3) bank.
_SOUNDFONT_MAGIC: Final = (b"RIFF", b"sfbk")


@dataclass(frozen=True, slots=True)
class PreviewConfig:
    """What rendering a preview needs, checked once at start-up."""

    fluidsynth: str
    soundfont: Path
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class Preview:
    """A rendered preview: the Ogg Vorbis bytes and how long they play."""

    audio: bytes
    duration_seconds: float


def preview_config(settings: ProcessorSettings) -> tuple[PreviewConfig | None, str]:
    """The previews' configuration, or ``None`` and why they are off.

    ``PROCESSOR_PREVIEWS=auto`` turns them on when FluidSynth and the SoundFont are found;
    ``on`` with either missing raises :class:`ConfigError`, so a deployment that asked for
    previews does not start without them.
    """
    if settings.previews == "off":
        return None, "PROCESSOR_PREVIEWS=off"
    try:
        config = PreviewConfig(
            fluidsynth=find_program(settings.fluidsynth),
            soundfont=_check_soundfont(settings.soundfont),
            timeout_seconds=settings.preview_timeout_seconds,
        )
    except ProgramError as exc:
        if settings.previews == "on":
            raise ConfigError(
                f"PROCESSOR_PREVIEWS=on but {exc}: install FluidSynth and a General MIDI "
                "SoundFont (scripts/bootstrap.sh --test does), set PROCESSOR_FLUIDSYNTH and "
                "PROCESSOR_SOUNDFONT, or set PROCESSOR_PREVIEWS=auto"
            ) from exc
        return None, str(exc)
    return config, "enabled"


def _check_soundfont(path: Path) -> Path:
    """``path`` if it is a readable SoundFont: FluidSynth given a missing one renders
    silence (or its own default bank) and still exits 0."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
    except OSError as exc:
        raise ProgramError(f"SoundFont {path}: {exc.strerror or exc}") from exc
    if (head[:4], head[8:12]) != _SOUNDFONT_MAGIC:
        raise ProgramError(f"SoundFont {path}: not a SoundFont (no RIFF sfbk header)")
    return path


def render_audio(
    midi: bytes,
    *,
    fluidsynth: str,
    soundfont: Path,
    file_type: str,
    timeout_seconds: float,
    sample_rate: int = SAMPLE_RATE,
) -> bytes:
    """``midi`` rendered by FluidSynth to a file of ``file_type`` (``fluidsynth -T help``
    lists them: ``wav``, ``flac``, ``oga``, ...); :class:`ProgramError` when it fails.

    FluidSynth renders until every voice has finished its release, so the audio runs a
    little past the last note-off (how far depends on the SoundFont's instruments).
    """
    with tempfile.TemporaryDirectory(prefix="fluidsynth-") as folder:
        source, target = Path(folder, "in.mid"), Path(folder, f"out.{file_type}")
        source.write_bytes(midi)
        run_program(
            # -n -i: no MIDI input, no shell; -q: no banner; -F: render to a file, fast.
            [fluidsynth, "-n", "-i", "-q", "-F", target, "-T", file_type, "-r", str(sample_rate),
             soundfont, source],
            timeout=timeout_seconds,
        )  # fmt: skip
        try:
            audio = target.read_bytes()
        except FileNotFoundError:
            audio = b""
    if not audio:
        raise ProgramError("fluidsynth wrote no audio (is the MIDI file valid?)")
    return audio


def render_preview(midi: bytes, config: PreviewConfig) -> Preview:
    """The preview of ``midi``: Ogg Vorbis, the same bytes for the same file."""
    audio = render_audio(
        midi,
        fluidsynth=config.fluidsynth,
        soundfont=config.soundfont,
        file_type=FILE_TYPE,
        timeout_seconds=config.timeout_seconds,
    )
    return _fix_serial(audio, int(sha256_hex(midi)[:8], 16))


def _fix_serial(ogg: bytes, serial: int) -> Preview:
    """``ogg`` with every page's stream serial set to ``serial`` (checksums recomputed),
    and its duration: the last page's granule position counts the samples."""
    source = io.BytesIO(ogg)
    pages = []
    samples = 0
    # mutagen's OggPage is untyped; it parses one page and writes it back, CRC included.
    try:
        while source.tell() < len(ogg):
            page = OggPage(source)  # type: ignore[no-untyped-call]
            page.serial = serial
            samples = max(samples, page.position)
            pages.append(page.write())  # type: ignore[no-untyped-call]
    except (MutagenError, EOFError, struct.error) as exc:
        raise ProgramError(f"fluidsynth wrote an unreadable Ogg file: {exc}") from exc
    return Preview(b"".join(pages), samples / SAMPLE_RATE)
